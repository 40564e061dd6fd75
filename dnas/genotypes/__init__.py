"""Genotypes shipped with dnas (baselines, hand-made nets): ``dnas show resnet18``."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def builtin_genotype_path(name: str) -> Path | None:
    from dnas._io import is_file  # a name that cannot be a file (too long, a NUL) is no shipped genotype either

    p = HERE / f"{name}.yaml"
    return p if is_file(p) else None


def builtin_genotypes() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.yaml"))
