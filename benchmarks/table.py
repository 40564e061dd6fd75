"""Markdown tables of saved benchmark results, for the README: ``python -m benchmarks.table [FILE ...]``
(default: every ``benchmarks/results/*.json``)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

#: benchmark -> (column title, record key) pairs; a key missing from a record prints as "–"
COLUMNS = {
    "darts": [("order", "order"), ("case", "case"), ("wall s/step (min)", "wall"), ("CPU s/step", "cpu_s_per_step"),
              ("speed-up", "speedup_vs_reference"), ("step peak MB", "step_peak_mb"),
              ("memory ratio", "memory_ratio_vs_reference"), ("α grads identical", "alpha_grads_match")],
    "shapley": [("case", "case"), ("step s", "step_s"), ("step peak MB", "step_peak_mb"),
                ("memory ratio", "memory_ratio_vs_fairdarts"), ("time ratio", "time_ratio_vs_fairdarts")],
    "nasiam": [("case", "case"), ("dnas ms/step", "dnas_step_ms"), ("plain torch ms/step", "plain_step_ms"),
               ("ratio", "ratio"), ("control ratio", "control_ratio"), ("target", "target_ratio")],
    "dario": [("case", "case"), ("before", "images_per_s_before"), ("after (images/s)", "images_per_s_after"),
              ("speed-up", "speedup"), ("iteration s", "iter_s"), ("iteration / forward (batch 1)", "iter_over_forward")],
}


def _cell(rec: dict, key: str) -> str:
    if key == "wall":
        return f"{rec['median_s']} ({rec['min_s']})"
    v = rec.get(key)
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    return f"{v:g}" if isinstance(v, float) else str(v)


def tables(records: list[dict]) -> str:
    out = []
    for bench, cols in COLUMNS.items():
        rows = [r for r in records if r.get("benchmark") == bench]
        if not rows:
            continue
        cfg = rows[0].get("config")
        out.append(f"**{bench}**" + (f" ({', '.join(f'{k}={v}' for k, v in cfg.items())})" if cfg else "") + "\n")
        out.append("| " + " | ".join(t for t, _ in cols) + " |")
        out.append("|" + " --- |" * len(cols))
        out += ["| " + " | ".join(_cell(r, k) for _, k in cols) + " |" for r in rows]
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    files = [Path(a) for a in argv] or sorted((Path(__file__).parent / "results").glob("*.json"))
    for f in files:
        print(f"### {f.name}\n\n{tables(json.loads(f.read_text()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
