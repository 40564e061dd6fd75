"""``dnas show``: a genotype as text, and its cells drawn as DAGs (matplotlib)."""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from dnas.errors import DnasError
from dnas.genotype import Genotype, load_genotype
from dnas.tools.report import save_figure

_EDGE = re.compile(r"^(?P<cell>.+)\.node(?P<node>\d+)\.edge(?P<src>\d+)$")


def _target_genotype(target: str) -> tuple[Genotype, Path | None]:
    from dnas._io import is_dir

    p = Path(target)
    if is_dir(target):
        g = p / "genotype.yaml"
        if not g.is_file() and not (p / "config.yaml").is_file():
            raise DnasError(f"'{p}' is not a dnas run folder (no genotype.yaml, no config.yaml); give a run folder or a genotype file")
        if not g.is_file():
            raise DnasError(f"run folder '{p}' has no genotype.yaml yet (search still running or interrupted?)")
        return load_genotype(g), p
    return load_genotype(target), None


def describe(g: Genotype) -> str:
    """One line per node (cell spaces) or per decision."""
    from dnas.registry import create_space

    lines = [f"space: {g.space}  (version {g.version})", "config: " + ", ".join(f"{k}={v}" for k, v in g.config.items())]
    cells: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    flat = []
    for name, ops in g.choices.items():
        m = _EDGE.match(name)
        if m:
            node = cells[m["cell"]][int(m["node"])]
            node.extend(f"{op} <- {_state_name(int(m['src']))}" for op in ops)
        else:
            flat.append(f"  {name}: {', '.join(ops) if ops else '(removed)'}")
    for cell, nodes in cells.items():
        lines.append(f"{cell}:")
        lines += [f"  node{i}: {', '.join(ins)}" for i, ins in sorted(nodes.items())]
    lines += flat
    try:
        space = create_space(g.space, **dict(g.config))
        lines.append(f"space size: {space.space_size():.3g} architectures")
        summary = space.describe(g)
        if summary:
            lines.append(summary)
    except DnasError:
        pass
    return "\n".join(lines)


def _state_name(src: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(src, f"node{src - 2}")


def plot_cells(g: Genotype, path: str | Path) -> Path:
    """Draw every cell of a cell-based genotype as a DAG; other spaces as a table of choices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for name, ops in g.choices.items():
        m = _EDGE.match(name)
        if m:
            cells[m["cell"]].extend((int(m["node"]), int(m["src"]), op) for op in ops)
    if not cells:
        rows = [(k, ", ".join(v) or "-") for k, v in g.choices.items()]
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(rows) + 1))
        ax.axis("off")
        ax.table(cellText=rows, colLabels=["decision", "choice"], loc="center")
    else:
        fig, axes = plt.subplots(len(cells), 1, figsize=(9, 3.2 * len(cells)), squeeze=False)
        for ax, (cell, edges) in zip(axes[:, 0], cells.items()):
            n_nodes = max(i for i, _, _ in edges) + 1
            pos = {0: (0, 1.0), 1: (0, -1.0)}
            for i in range(n_nodes):
                pos[i + 2] = (1 + i, 0.6 * (1 if i % 2 else -1))
            pos["out"] = (n_nodes + 1.2, 0)
            for i, j, op in edges:
                (x0, y0), (x1, y1) = pos[j], pos[i + 2]
                ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color="0.4", connectionstyle="arc3,rad=0.15"))
                ax.text((x0 + x1) / 2, (y0 + y1) / 2, op, fontsize=7, ha="center", color="tab:blue")
            for i in range(n_nodes):
                (x0, y0), (x1, y1) = pos[i + 2], pos["out"]
                ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color="0.8"))
            for k, (x, y) in pos.items():
                label = "c_{k}" if k == "out" else (_state_name(k) if k in (0, 1) else str(k - 2))
                ax.text(x, y, label, ha="center", va="center", bbox=dict(boxstyle="round", fc="lightyellow" if k in (0, 1, "out") else "lightblue"))
            ax.set_title(cell)
            ax.set_xlim(-0.5, n_nodes + 1.7)
            ax.set_ylim(-1.5, 1.5)
            ax.axis("off")
    return save_figure(fig, path)


def alpha_matrices(record: dict, g: Genotype) -> dict[str, tuple[list[str], list[str], list[list[float]]]]:
    """The relaxed α of a history record per cell: ``{cell: (decision names, op names, rows)}``.

    Rows are the record's ``alphas`` (softmax or σ of α, as the search relaxed them), one per
    decision of the cell; op names come from the space of ``g`` (indices if it cannot be built).
    """
    from dnas.registry import create_space

    alphas = record.get("alphas") or {}
    try:
        decisions = {d.name: d for d in create_space(g.space, **dict(g.config)).decisions()}
    except DnasError:
        decisions = {}
    out: dict[str, tuple[list[str], list[str], list[list[float]]]] = {}
    for name, row in alphas.items():
        d = decisions.get(name)
        m = _EDGE.match(name)
        cell = (d.cell if d is not None else None) or (m["cell"] if m else "all")
        ops = list(d.options) if d is not None else [str(i) for i in range(len(row))]
        names, op_names, rows = out.setdefault(cell, ([], ops, []))
        if op_names != ops:  # other options than the group's (activation: binary vs unary): a plot of its own
            names, op_names, rows = out.setdefault(name, ([], ops, []))
        names.append(name[len(cell) + 1 :] if name.startswith(cell + ".") else name)
        rows.append([float(x) for x in row])
    return out


def plot_run(run_dir: str | Path, g: Genotype, history: list[dict]) -> list[Path]:
    """PNGs of a search in ``run_dir/plots``: an α heatmap per cell (decisions × ops, last epoch),
    the evolution of the distance M (D-DARTS eq. 4.8), of dominant ops and of the parameter-free
    ops in the derived genotype (DARTS+) when logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(run_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig, name):
        written.append(save_figure(fig, out_dir / name))

    last = history[-1]
    for cell, (names, ops, rows) in alpha_matrices(last, g).items():
        fig, ax = plt.subplots(figsize=(1.2 + 0.55 * len(ops), 1.4 + 0.3 * len(names)))
        im = ax.imshow(rows, aspect="auto", cmap="viridis", vmin=0.0, vmax=max(1e-9, max(map(max, rows))))
        ax.set_xticks(range(len(ops)), ops, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_title(f"{cell}: relaxed α, epoch {last.get('epoch', len(history))}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        if len(names) * len(ops) <= 400:  # small enough to print every weight
            hi = max(map(max, rows))
            for r, row in enumerate(rows):
                for c, v in enumerate(row):
                    ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=5.5, color="k" if v > 0.6 * hi else "w")
        save(fig, f"alpha_{cell}.png")
    from matplotlib.ticker import MaxNLocator

    epochs = [r.get("epoch", i + 1) for i, r in enumerate(history)]
    series = {k: [r.get(k) for r in history] for k in ("distance_prev", "distance_start")}
    if any(v is not None for vs in series.values() for v in vs):
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for k, label in (("distance_prev", "M to the previous epoch"), ("distance_start", "M to the start (epoch 0)")):
            pts = [(e, v) for e, v in zip(epochs, series[k]) if v is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("distance M")
        ax.set_title("architecture distance M (D-DARTS eq. 4.8)", fontsize=9)
        ax.legend(fontsize=8)
        save(fig, "distance.png")
    def count_plot(key: str, ylabel: str, title: str, marker: str | None = None) -> None:
        """``key`` (a count over all cells) and ``key_by_cell`` over the epochs, one line per cell."""
        fig, ax = plt.subplots(figsize=(6, 3.2))
        pts = [(e, r[key]) for e, r in zip(epochs, history) if key in r]
        ax.plot(*zip(*pts), color="k", lw=2, marker=marker, ms=3, label="all cells")
        for c in dict.fromkeys(c for r in history for c in (r.get(f"{key}_by_cell") or {})):
            cp = [(e, r[f"{key}_by_cell"][c]) for e, r in zip(epochs, history) if c in (r.get(f"{key}_by_cell") or {})]
            ax.plot(*zip(*cp), lw=1, label=c)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, ncol=2)
        save(fig, f"{key}.png")

    if any("dominant_ops" in r for r in history):
        count_plot("dominant_ops", "ops with σ(α) > 0.9", "dominant ops (FairDARTS)")
    if any("param_free_ops" in r for r in history):  # DARTS' collapse: skip connections and pools taking over
        count_plot("param_free_ops", "parameter-free ops", "skip connections and pools in the derived genotype", marker="o")
    return written


def show(target: str, plot: str | None = None) -> str:
    g, run_dir = _target_genotype(target)
    text = describe(g)
    if run_dir is not None:
        from dnas.engine.run import read_history

        hist = [r for r in read_history(run_dir) if "epoch" in r]  # trial records (tpe/random) are in the trial table
        if hist:
            last = hist[-1]
            unit = "proxy evaluations" if "phase" in last else "epochs"  # a proxy search (dnas prune) records evaluations
            trained = "alphas" not in last  # dnas train's records: no α
            shown = [f"{k} {last[k]:.4g}" for k in ("train_loss", "train_acc", "val_loss", "val_acc", "distance_prev", "distance_start",
                                                    "proxy", "test_top1", "test_mse", "loss", "std", "knn_top1")
                     if isinstance(last.get(k), (int, float))]
            text += f"\n{'training' if trained else 'run'}: {len(hist)} {unit}" + (f"; last {', '.join(shown)}" if shown else "")
            if "param_free_ops" in last:  # DARTS' collapse monitor (skip connections and pools kept)
                text += f", param_free_ops {last['param_free_ops']}"
            metrics = run_dir / "metrics.json"
            if trained and metrics.is_file():
                final = json.loads(metrics.read_text())
                text += "; finished: " + ", ".join(f"{k} {final[k]:.4g}" for k in ("top1", "top5", "mse", "knn_top1")
                                                   if isinstance(final.get(k), (int, float)))
            elif trained:
                text += f"; unfinished (dnas train --resume {run_dir})"
            plots = plot_run(run_dir, g, hist)
            if plots:
                text += "\nplots: " + ", ".join(str(p) for p in plots)
        from dnas.tools.report import plot_trials, read_trials, trials_summary

        trials = read_trials(run_dir)
        if trials:  # tpe / random: the trial table and fitness over trials
            text += "\n" + trials_summary(trials) + f"\nplots: {plot_trials({run_dir.name: run_dir}, run_dir / 'plots' / 'fitness.png')}"
    if plot:
        text += f"\nplot written to {plot_cells(g, plot)}"
    return text
