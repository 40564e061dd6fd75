"""Genotypes shipped with dnas (baselines, hand-made nets): ``dnas show resnet18``."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def builtin_genotype_path(name: str) -> Path | None:
    p = HERE / f"{name}.yaml"
    return p if p.is_file() else None


def builtin_genotypes() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.yaml"))
