"""Config dataclasses: checked against their fields before any work, with "did you mean"."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from dnas.errors import DnasError
from dnas.registry import did_you_mean

_NUMBER = (int, float)


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin is typing.Union or str(origin) == "types.UnionType":
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (tuple, list):
        return isinstance(value, (tuple, list))
    if origin is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is float:
        return isinstance(value, _NUMBER) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list", dict: "a mapping",
          tuple: "a list", type(None): "null"}


def _describe(tp) -> str:
    """A type as the message says it: ``int | None`` -> "an integer or null"."""
    args = [a for a in typing.get_args(tp)] if typing.get_origin(tp) in (typing.Union, types.UnionType) else [tp]
    return " or ".join(_NAMES.get(typing.get_origin(a) or a, f"a {getattr(a, '__name__', a)}") for a in args)


def make_config(cls: type, values: dict[str, Any], where: str):
    """Instantiate dataclass ``cls`` from ``values``; unknown keys and wrong types fail in one line.

    ``where`` names the component in the message, e.g. ``"space 'darts'"``.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in fields:
            raise DnasError(
                f"unknown option {key!r} for {where}{did_you_mean(key, fields)}; "
                f"valid options: {', '.join(fields)}"
            )
        if not _type_ok(value, hints[key]):
            allowed = typing.get_args(hints[key]) if typing.get_origin(hints[key]) is typing.Literal else None
            what = f"one of {', '.join(map(repr, allowed))}" if allowed else _describe(hints[key])
            raise DnasError(f"option {key!r} of {where} must be {what}, got {value!r}")
        if any(isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, (list, tuple)) else [value])):
            raise DnasError(f"option {key!r} of {where} must be a finite number, got {value!r}")
    cfg = cls(**{k: (float(v) if hints[k] is float and isinstance(v, int) else v) for k, v in values.items()})
    check = getattr(cfg, "check", None)
    if check is not None:
        problem = check()
        if problem:
            raise DnasError(f"{where}: {problem}")
    return cfg


def config_dict(cfg) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config dataclass (tuples become lists)."""
    def plain(v):
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def type_name(tp: Any) -> str:
    """A short reading of a field's type: ``int``, ``float | None``, ``darts|darts-o``, ``list[int]``."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp))


def describe_options(cls: type) -> list[dict[str, Any]]:
    """One row per option of config dataclass ``cls``: ``name``, ``type``, ``default``, and where the
    field's metadata has them, the ``paper`` default and the authors' ``code`` default.

    A field records them as ``dataclasses.field(default=..., metadata={"paper": X, "code": Y})``.
    """
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        row = {"name": f.name, "type": type_name(hints[f.name]), "default": default}
        for key in ("paper", "code"):
            if key in f.metadata:
                row[key] = f.metadata[key]
        rows.append(row)
    return rows
