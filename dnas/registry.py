"""Registries: register by decorator, look up by string (as timm's ``register_model``).

Example:
    >>> from dnas import register_space, SearchSpace
    >>> @register_space("my-space")
    ... class MySpace(SearchSpace): ...
"""
from __future__ import annotations

import difflib
import importlib
import warnings
from typing import Any, Callable, Generic, TypeVar

from dnas.errors import DnasError

T = TypeVar("T")


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


#: modules whose import registers the built-in parsers, spaces and strategies (loaded on first lookup)
BUILTINS = ("dnas.parsers", "dnas.spaces", "dnas.strategies", "dnas.engine.callbacks", "dnas.engine.darts_plus")
_loaded = [False]


def load_builtins() -> None:
    """Import the built-in spaces, strategies and parsers once. Lookups call it, so importing a noun
    module (``dnas.space``, ``dnas.registry``) stays free of the layers above it."""
    if not _loaded[0]:
        _loaded[0] = True
        for module in BUILTINS:
            importlib.import_module(module)


class Registry(Generic[T]):
    """A name -> object table with a clear error for unknown names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                warnings.warn(f"{self.kind} '{name}' was registered twice; the later one wins", stacklevel=2)
            self._items[name] = obj
            if isinstance(obj, type):
                obj.name = name
            return obj

        return deco

    def get(self, name: str) -> T:
        load_builtins()
        try:
            return self._items[name]
        except KeyError:
            raise DnasError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._items)}; "
                f"choose one of: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        load_builtins()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        load_builtins()
        return sorted(self._items.items())

    def __contains__(self, name: str) -> bool:
        load_builtins()
        return name in self._items


SPACES: Registry[type] = Registry("space")
STRATEGIES: Registry[type] = Registry("strategy")
PARSERS: Registry[Callable] = Registry("parser")
CALLBACKS: Registry[type] = Registry("callback")


def register_space(name: str):
    """Class decorator: make a :class:`~dnas.space.SearchSpace` available as ``create_space(name)``.

    Args:
        name: the name used by ``--space`` and ``create_space``; registering it twice warns.

    Returns:
        The decorator; it sets the class's ``name`` and returns the class.
    """
    return SPACES.register(name)


def register_strategy(name: str):
    """Class decorator: make a :class:`~dnas.strategy.Strategy` available as ``create_strategy(name)``.

    Args:
        name: the name used by ``--strategy`` and ``create_strategy``; registering it twice warns.

    Returns:
        The decorator; it sets the class's ``name`` and returns the class.
    """
    return STRATEGIES.register(name)


def register_parser(name: str):
    """Function decorator: a parser maps (decisions, relaxed weights) to discrete choices.

    Args:
        name: the name used by ``strategy.parser`` and ``Supernet.genotype(parser)``.

    Returns:
        The decorator. The parser is called as ``fn(decisions, weights, **options)`` and returns
        ``{decision name: [kept options]}``.
    """
    return PARSERS.register(name)


def register_callback(name: str):
    """Class decorator: make a :class:`~dnas.engine.callbacks.Callback` available by name in a search
    config's ``callbacks`` section."""
    return CALLBACKS.register(name)


def create_callback(name: str, **config: Any):
    """Build a registered callback; ``None`` values keep its defaults."""
    return CALLBACKS.get(name)(**{k: v for k, v in config.items() if v is not None})


def create_space(name: str, **config: Any):
    """Build a registered space; ``None`` values keep the space's defaults.

    Args:
        name: a registered space name (``dnas list``).
        **config: options of the space's ``Config`` dataclass.

    Returns:
        The space.

    Raises:
        DnasError: an unknown name (with "did you mean"), or an unknown or invalid option.
    """
    return SPACES.get(name)(**{k: v for k, v in config.items() if v is not None})


def create_strategy(name: str, **config: Any):
    """Build a registered strategy; ``None`` values keep the strategy's defaults.

    Args:
        name: a registered strategy name (``dnas list``).
        **config: options of the strategy's ``Config`` dataclass.

    Returns:
        The strategy.

    Raises:
        DnasError: an unknown name (with "did you mean"), or an unknown or invalid option.
    """
    return STRATEGIES.get(name)(**{k: v for k, v in config.items() if v is not None})


def list_spaces() -> list[str]:
    """The registered space names, sorted (built-ins and plugins)."""
    return SPACES.names()


def list_strategies() -> list[str]:
    """The registered strategy names, sorted (built-ins and plugins)."""
    return STRATEGIES.names()


def list_parsers() -> list[str]:
    """The registered parser names, sorted."""
    return PARSERS.names()


def load_plugin(module: str) -> None:
    """Import a user module whose import registers spaces or strategies (``dnas --plugin mymod``).

    Args:
        module: a module name importable from ``sys.path`` (e.g. with ``PYTHONPATH=.``).

    Raises:
        DnasError: the module cannot be imported.
    """
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise DnasError(f"cannot import plugin module '{module}': {e}; is it on PYTHONPATH?") from None
