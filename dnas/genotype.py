"""Genotype: the discrete architecture as plain, frozen data (YAML/JSON, never ``eval``-ed).

A genotype file looks like::

    space: darts
    version: 1
    config: {C: 16, layers: 8, nodes: 4, ops: darts}
    choices:
      normal.node0.edge0: [sep_conv_3x3]
      normal.node0.edge1: []          # edge not kept
      ...
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

from dnas._io import load_yaml
from dnas.errors import DnasError, first_line

GENOTYPE_VERSION = 1


@dataclass(frozen=True)
class Genotype:
    """A discrete architecture of space ``space``: ``choices[decision] = tuple of chosen options``.

    Immutable plain data: it compares and hashes by value and round-trips through YAML and JSON.

    Attributes:
        space: the registered name of its space.
        choices: decision name -> the options kept (an empty tuple: the decision keeps none).
        config: the space options it was searched with (they rebuild the same space).
        version: the file format version.
    """

    space: str
    choices: Mapping[str, tuple[str, ...]]
    config: Mapping[str, Any] = field(default_factory=dict)
    version: int = GENOTYPE_VERSION

    def __post_init__(self):
        object.__setattr__(self, "choices", MappingProxyType({k: tuple(v) for k, v in self.choices.items()}))
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))

    def __getitem__(self, decision: str) -> tuple[str, ...]:
        return self.choices[decision]

    def __eq__(self, other) -> bool:
        return isinstance(other, Genotype) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def replace(self, **kw) -> "Genotype":
        """A copy with some fields replaced, e.g. ``g.replace(config={**g.config, "C": 36})``."""
        d = dict(space=self.space, choices=dict(self.choices), config=dict(self.config), version=self.version)
        d.update(kw)
        return Genotype(**d)

    # -- plain data -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``{"space", "version", "config", "choices"}`` with lists for the choices."""
        return {
            "space": self.space,
            "version": self.version,
            "config": dict(self.config),
            "choices": {k: list(v) for k, v in self.choices.items()},
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "genotype") -> "Genotype":
        """Build from plain data, checking the shape (not the space: see :func:`load_genotype`).

        Args:
            d: the mapping read from a file (``space``, ``version``, ``choices``, optional ``config``).
            source: named in error messages (a file path).

        Returns:
            The genotype.

        Raises:
            DnasError: not a mapping, missing or unknown keys, another version, or malformed choices.
        """
        if not isinstance(d, dict):
            raise DnasError(f"{source}: expected a mapping with keys space, version, choices; got {type(d).__name__}")
        missing = [k for k in ("space", "version", "choices") if k not in d]
        if missing:
            raise DnasError(f"{source}: missing key(s) {', '.join(missing)}; is this a dnas genotype file?")
        extra = set(d) - {"space", "version", "config", "choices"}
        if extra:
            raise DnasError(f"{source}: unknown key(s) {', '.join(map(repr, sorted(map(str, extra))))}; allowed: space, version, config, choices")
        if d["version"] != GENOTYPE_VERSION:
            raise DnasError(
                f"{source}: genotype version {d['version']!r} is not supported (this dnas reads version "
                f"{GENOTYPE_VERSION}); upgrade dnas or re-derive the genotype"
            )
        if not isinstance(d["space"], str):
            raise DnasError(f"{source}: 'space' must be a space name, got {d['space']!r}")
        config = d.get("config") or {}
        if not isinstance(config, dict):
            raise DnasError(f"{source}: 'config' must be a mapping of the space's options")
        choices = d["choices"]
        if not isinstance(choices, dict):
            raise DnasError(f"{source}: 'choices' must map decision names to lists of options")
        clean = {}
        for name, opts in choices.items():
            if isinstance(opts, str):
                opts = [opts]
            if opts is None:
                opts = []
            if not isinstance(opts, list) or not all(isinstance(o, str) for o in opts):
                raise DnasError(f"{source}: decision {name!r} must list option names, got {opts!r}")
            clean[str(name)] = tuple(opts)
        return cls(space=d["space"], choices=clean, config=config, version=d["version"])

    def to_yaml(self) -> str:
        """The genotype as YAML text (the format of ``genotype.yaml``)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def to_json(self) -> str:
        """The genotype as JSON text."""
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | Path) -> Path:
        """Write as YAML (or JSON if the suffix is ``.json``), atomically.

        Args:
            path: the file to write.

        Returns:
            The path written.
        """
        from dnas._io import atomic_write_text

        path = Path(path)
        atomic_write_text(path, self.to_json() if path.suffix == ".json" else self.to_yaml())
        return path


def parse_genotype_text(text: str, source: str) -> Genotype:
    try:
        data = json.loads(text) if source.endswith(".json") else load_yaml(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        first = first_line(e)
        raise DnasError(f"{source}: not valid {'JSON' if source.endswith('.json') else 'YAML'} ({first})") from None
    return Genotype.from_dict(data, source)


def _is_dnas_genotype(text: str) -> bool:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and "choices" in data


def _selected(path: str | Path) -> tuple[Path, str] | None:
    """``(FILE, NAME)`` where ``path`` is ``FILE:NAME`` naming one genotype of an existing file
    (``genotypes.py:DARTS_V2``, ``search.log:last``); None otherwise."""
    from dnas._io import is_file

    head, sep, tail = str(path).rpartition(":")
    return (Path(head), tail) if sep and head and tail and not is_file(path) and is_file(head) else None


def genotype_label(path: str | Path) -> str:
    """A short name for a genotype argument, for a run folder: the file's stem, NAME of FILE:NAME,
    ``darts-genotype`` for a Genotype(...) text."""
    from dnas._io import is_file
    from dnas.darts_format import looks_like_darts

    text = str(path)
    if is_file(text):
        return Path(text).stem
    if looks_like_darts(text):
        return "darts-genotype"
    picked = _selected(text)
    return picked[1] if picked else Path(text).stem


def load_genotype(path: str | Path, validate: bool = True) -> Genotype:
    """Read a genotype file (YAML or JSON), a genotype shipped with dnas by name (``resnet18``), or
    a cell genotype as the DARTS code writes it (:mod:`dnas.darts_format`).

    Args:
        path: a ``.yaml``/``.yml``/``.json`` file; a run folder holding one (``genotype.yaml``);
            the name of a shipped genotype (``dnas list``);
            a file holding ``Genotype(normal=..., ...)`` (a ``genotypes.py``, a search log), with
            ``FILE:NAME``, ``FILE:N`` or ``FILE:last`` to pick one of several; or that text itself.
        validate: check it against its space: the space must be registered and every decision
            present with options the space has.

    Returns:
        The genotype.

    Raises:
        DnasError: no such file or shipped genotype, unreadable or malformed content, another
            format version, or (with ``validate``) a genotype that does not fit its space.
    """
    from dnas._io import is_dir, is_file
    from dnas.darts_format import looks_like_darts, read_darts_text
    from dnas.genotypes import builtin_genotype_path

    if is_dir(path):  # a run folder (dnas search, train or prune --out): the genotype it wrote
        if not (Path(path) / "genotype.yaml").is_file():
            raise DnasError(f"run folder '{path}' has no genotype.yaml yet (search still running or interrupted?)")
        path = Path(path) / "genotype.yaml"
    p, select = Path(path), None
    if looks_like_darts(str(path)) and not is_file(p):  # the text itself, pasted from a DARTS log
        g = read_darts_text(str(path), "the Genotype(...) given")
        if validate:
            validate_genotype(g, source="the Genotype(...) given")
        return g
    if not is_file(p):
        builtin, picked = builtin_genotype_path(str(path)), _selected(path)
        if picked:  # FILE:NAME, one of the genotypes in a DARTS-style file
            p, select = picked
        elif builtin is None:
            from dnas.genotypes import builtin_genotypes
            from dnas.registry import did_you_mean

            hint = did_you_mean(str(path), builtin_genotypes()) if len(str(path)) < 100 else ""
            raise DnasError(f"genotype file '{path}' not found, and no built-in genotype has that name{hint}")
        else:
            p = builtin
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DnasError(f"cannot read genotype file '{p}': {e}") from None
    if select is not None or (looks_like_darts(text) and not _is_dnas_genotype(text)):
        g = read_darts_text(text, str(p), select)
    else:
        g = parse_genotype_text(text, str(p))
    if validate:
        validate_genotype(g, source=str(p))
    return g


def validate_genotype(g: Genotype, source: str = "genotype") -> None:
    """Check ``g`` against its registered space (built with ``g.config``).

    Args:
        g: the genotype.
        source: named in the error message.

    Raises:
        DnasError: unknown space or options, or a genotype that does not fit the space.
    """
    from dnas.registry import create_space

    try:
        space = create_space(g.space, **dict(g.config))
        space.validate(g)
    except DnasError as e:
        raise DnasError(f"{source}: {e}") from None
