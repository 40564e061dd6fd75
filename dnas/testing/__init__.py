"""The conformance suites every registered space, strategy and space × strategy pair passes, and
users run on their own.

Example:
    >>> from dnas.testing import check_pair, check_space, check_strategy
    >>> check_space("darts")          # builds the space's tiny config and checks the contract
    >>> check_strategy("fairdarts")   # declares known capabilities, refuses in one line, runs a tiny search
    >>> check_pair("darts", "shapley", "runs/check")   # ("refused", "strategy 'shapley' needs one α per cell ...")
"""
from __future__ import annotations

import random
from typing import Any

import torch

from dnas.genotype import Genotype, parse_genotype_text
from dnas.registry import SPACES, create_space
from dnas.space import SearchSpace, Task


def _fail(msg: str) -> None:
    raise AssertionError(msg)


def check_space(space: str | SearchSpace, task: Task | None = None, parsers: list[str] | None = None, **config: Any) -> Genotype:
    """Check the space contract on a tiny supernet; returns the derived genotype.

    1. the supernet builds; α are registered parameters in a stable order;
    2. one forward/backward of ``loss`` gives a finite gradient to every trainable weight and every α;
    3. a genotype derives with each parser, is valid, round-trips through YAML and JSON;
    4. the discrete network of that genotype and of a random genotype builds and runs.

    Args:
        space: a registered space name (built with its ``tiny_config``) or a space object.
        task: the data shape to build for; default the space's ``tiny_task``.
        parsers: the parsers to derive with; default the space's default parser.
        **config: space options overriding ``tiny_config`` (with a name).

    Returns:
        The genotype derived from the tiny supernet.

    Raises:
        AssertionError: a part of the contract is broken; the message says which.
    """
    if isinstance(space, str):
        space = create_space(space, **{**SPACES.get(space).tiny_config, **config})
    task = task or space.tiny_task
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = space.supernet(task)
    names = [n for n, _ in net.named_arch_parameters()]
    if names != [n for n, _ in net.named_arch_parameters()]:
        _fail("arch_parameters() order is not stable")
    registered = {id(p) for p in net.parameters()}
    if not all(id(a) in registered for a in net.arch_parameters()):
        _fail("every α must be a registered nn.Parameter of the supernet")
    if "alpha" in space.capabilities() and not net.arch_parameters():
        _fail("the space offers 'alpha' but its supernet has no arch_parameters()")
    weights = {id(p) for p in net.weight_parameters()}
    if weights & {id(a) for a in net.arch_parameters()}:
        _fail("weight_parameters() must not include α")
    grouped = [id(p) for ps in net.arch_groups().values() for p in ps]
    if sorted(grouped) != sorted(id(a) for a in net.arch_parameters()):
        _fail("arch_groups() must partition arch_parameters()")

    net.train()
    batch = space.example_batch(task, 4, generator=gen)
    out = net.loss(batch)
    loss = out["loss"]
    if loss.dim() != 0 or not torch.isfinite(loss):
        _fail(f"loss(batch) must be a finite scalar, got {loss}")
    loss.backward()
    for name, p in net.named_parameters():
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all()):
            _fail(f"parameter '{name}' received no (finite) gradient from loss(batch)")
    if net.arch_parameters() and all(float(a.grad.abs().sum()) == 0 for a in net.arch_parameters()):
        _fail("every α gradient is exactly zero")

    derived = None
    for parser in parsers or [space.default_parser]:
        g = net.genotype(parser)
        space.validate(g)
        for text, src in ((g.to_yaml(), "g.yaml"), (g.to_json(), "g.json")):
            back = parse_genotype_text(text, src)
            if back != g:
                _fail(f"genotype does not round-trip through {src[-4:]}")
        derived = derived or g
    x = batch[0][0] if task.two_views else batch[0]
    for g in (derived, space.random_genotype(random.Random(0))):
        space.validate(g)
        model = space.build_network(g, task)
        model.eval()
        with torch.no_grad():
            y = model(x)
        y = y[0] if isinstance(y, tuple) else y
        if y.shape[0] != x.shape[0] or not torch.isfinite(y).all():
            _fail(f"the network of a genotype returned shape {tuple(y.shape)} or non-finite values")
    return derived


# -- strategies and space × strategy pairs ------------------------------------------------------

#: option values that make any strategy's search tiny (set where the strategy's Config has the field)
TINY_STRATEGY: dict[str, Any] = {"epochs": 1, "trials": 2, "max_steps": 2, "subset": 0.5, "iters": 2, "warm_start": 1}
#: a tiny data section: the bundled synthetic images, few and small batches
TINY_DATA: dict[str, Any] = {"batch_size": 16, "subset": 0.125, "augment": False}


def tiny_strategy_config(strategy: str, **config: Any) -> dict[str, Any]:
    """The options that make ``strategy`` search briefly: :data:`TINY_STRATEGY` where its Config has
    the field, then the class's own ``tiny_config`` (if any), then ``config``."""
    import dataclasses

    from dnas.registry import STRATEGIES

    cls = STRATEGIES.get(strategy)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    return {**{k: v for k, v in TINY_STRATEGY.items() if k in fields}, **getattr(cls, "tiny_config", {}), **config}


def check_pair(space: str, strategy: str, out, data: str = "synthetic", space_config: dict[str, Any] | None = None,
               strategy_config: dict[str, Any] | None = None) -> tuple[str, Any]:
    """One tiny search of ``space`` × ``strategy``: it runs end to end and writes a loadable genotype,
    or it is refused with a :class:`~dnas.errors.DnasError` before any work (no run folder).

    Returns:
        ``("ran", genotype)`` or ``("refused", message)``.

    Raises:
        AssertionError: when the pair breaks the contract: it is accepted but does not finish, a
            refusal comes after the run folder was made, or the genotype does not load and validate.
            Any exception other than DnasError propagates (that is a bug).
    """
    from pathlib import Path

    from dnas.api import search
    from dnas.errors import DnasError
    from dnas.genotype import load_genotype
    from dnas.strategy import missing_capabilities

    out = Path(out)
    sp = create_space(space, **{**SPACES.get(space).tiny_config, **(space_config or {})})
    st_cfg = tiny_strategy_config(strategy, **(strategy_config or {}))
    from dnas.registry import create_strategy

    accepted = not missing_capabilities(create_strategy(strategy, **st_cfg), sp)
    try:
        result = search(sp, strategy, data, strategy_config=st_cfg, data_config=dict(TINY_DATA), out=out, progress=False)
    except DnasError as e:
        if accepted:
            _fail(f"{space} × {strategy}: check_compatible accepts the pair, but the search failed: {e}")
        if out.exists():
            _fail(f"{space} × {strategy}: refused only after the run folder was made: {e}")
        return "refused", str(e)
    if not accepted:
        _fail(f"{space} × {strategy}: check_compatible refuses the pair, yet the search ran")
    g = load_genotype(out / "genotype.yaml")
    if g != result.genotype:
        _fail(f"{space} × {strategy}: genotype.yaml does not load back as the search's genotype")
    create_space(g.space, **dict(g.config)).validate(g)
    return "ran", g


def check_strategy(strategy: str, space: str | None = None, out=None, data: str = "synthetic") -> Genotype:
    """The strategy contract; returns the genotype of its tiny search.

    1. it builds from its defaults and its tiny options; it declares only known capabilities;
    2. ``check_compatible`` refuses, in one DnasError line naming the capability, a space that offers
       none of what the strategy needs;
    3. one tiny search (:func:`check_pair`) on ``space`` (default: the first registered space the
       strategy accepts) runs end to end and writes a loadable, valid genotype.
    """
    import tempfile

    from dnas.errors import DnasError
    from dnas.registry import create_strategy
    from dnas.space import CAPABILITIES
    from dnas.strategy import missing_capabilities

    st = create_strategy(strategy, **tiny_strategy_config(strategy))
    unknown = sorted(set(st.requirements()) - set(CAPABILITIES))
    if unknown:
        _fail(f"strategy '{strategy}' needs unknown capabilities {unknown}; use names from dnas.space.CAPABILITIES")
    if st.requirements():
        bare = type("Bare", (SearchSpace,), {"offers": frozenset(), "name": "bare", "Config": type(None)})
        bare_space = object.__new__(bare)
        try:
            st.check_compatible(bare_space)
            _fail(f"strategy '{strategy}' accepted a space that offers nothing it needs")
        except DnasError as e:
            if "\n" in str(e) or not any(c in str(e) for c in st.requirements()):
                _fail(f"the refusal must be one line naming what is missing, got: {e}")
    if space is None:
        fits = [n for n in SPACES.names() if not missing_capabilities(st, create_space(n, **SPACES.get(n).tiny_config))]
        if not fits:
            _fail(f"no registered space offers what strategy '{strategy}' needs")
        space = fits[0]
    with tempfile.TemporaryDirectory() as tmp:
        status, g = check_pair(space, strategy, out or f"{tmp}/run", data)
    if status != "ran":
        _fail(f"strategy '{strategy}' on space '{space}' was refused: {g}")
    return g
