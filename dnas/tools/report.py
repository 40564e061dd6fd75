"""Reading and drawing finished runs: the trial table of TPE/random searches, and one figure saver."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    if not path.suffix:  # matplotlib adds .png itself: the path returned (and printed) is the file written
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def read_trials(run_dir: str | Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "trials.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.is_file() else []


def best_curve(records: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """(completed-trial count, best fitness so far) over the completed trials in trial order."""
    xs, ys, best = [], [], math.inf
    for r in records:
        if r["state"] == "COMPLETE" and r["fitness"] is not None:
            best = min(best, r["fitness"])
            xs.append(len(xs) + 1)
            ys.append(best)
    return xs, ys


def trials_summary(records: list[dict[str, Any]]) -> str:
    """One line: how many trials in which state, and the best completed one."""
    states: dict[str, int] = {}
    for r in records:
        states[r["state"]] = states.get(r["state"], 0) + 1
    done = [r for r in records if r["state"] == "COMPLETE" and r["fitness"] is not None]
    text = "trials: " + ", ".join(f"{n} {s.lower()}" for s, n in states.items())
    if done:
        b = min(done, key=lambda r: r["fitness"])
        text += f"; best trial {b['trial']}: fitness {b['fitness']:.4f}" + (f", accuracy {b['accuracy']:.4f}" if "accuracy" in b else "")
    return text


def plot_trials(runs: dict[str, str | Path], path: str | Path) -> Path:
    """Fitness of every completed trial (dots) and the best so far (line), one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, run_dir in runs.items():
        recs = [r for r in read_trials(run_dir) if r["state"] == "COMPLETE" and r["fitness"] is not None]
        xs, ys = best_curve(recs)
        line, = ax.plot(xs, ys, label=f"{label} (best so far)")
        ax.scatter(xs, [r["fitness"] for r in recs], s=10, alpha=0.4, color=line.get_color())
    ax.set_xlabel("completed trials")
    ax.set_ylabel("fitness (lower is better)")
    ax.legend()
    return save_figure(fig, path)
