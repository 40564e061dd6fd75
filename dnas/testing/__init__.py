"""The conformance suite every registered space passes, and users run on their own spaces.

Example:
    >>> from dnas.testing import check_space
    >>> check_space("darts")          # builds the space's tiny config and checks the contract
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
    if "alpha" in space.offers and not net.arch_parameters():
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
