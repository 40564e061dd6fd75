"""``dnas show``: a genotype as text, and its cells drawn as DAGs (matplotlib)."""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from dnas.errors import DnasError
from dnas.genotype import Genotype, load_genotype

_EDGE = re.compile(r"^(?P<cell>.+)\.node(?P<node>\d+)\.edge(?P<src>\d+)$")


def _target_genotype(target: str) -> tuple[Genotype, Path | None]:
    p = Path(target)
    if p.is_dir():
        g = p / "genotype.yaml"
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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def show(target: str, plot: str | None = None) -> str:
    g, run_dir = _target_genotype(target)
    text = describe(g)
    if run_dir is not None:
        from dnas.run import read_history

        hist = read_history(run_dir)
        if hist:
            last = hist[-1]
            text += f"\nrun: {len(hist)} epochs; last " + ", ".join(
                f"{k} {last[k]:.4f}" for k in ("train_loss", "train_acc", "val_loss", "val_acc") if k in last
            )
    if plot:
        text += f"\nplot written to {plot_cells(g, plot)}"
    return text
