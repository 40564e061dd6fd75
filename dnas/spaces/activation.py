"""Space ``activation``: search one global activation function for an MLP (thesis §6.2).

``A(x) = B(U1(x), U2(x))`` with B among 6 binary and U1, U2 among 10 unary primitives. The supernet
mixes each of the three choices with softmax(α) (|B| + 2|U| = 26 α in all):
``A(x) = Σ_b p_b · b(Σ_u p1_u · u(x), Σ_u p2_u · u(x))``, and the same cell follows every linear
layer of the MLP (all but the output layer). The derived genotype reads as a formula, e.g.
``exp(x) + max(x, 0)``.

Numerical safety: ``exp`` and ``x²`` overflow for large inputs; a NaN/inf in the activation raises
:class:`NonFinite` (a :class:`DnasError`) naming the primitive that produced it, instead of propagating
silently; inside a search it counts as a divergence (the epoch is rolled back with lower learning rates).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from dnas.engine.loop import Diverged
from dnas.errors import DnasError
from dnas.registry import register_parser, register_space
from dnas.space import Decision, SearchSpace, Task
from dnas.spaces.mlp_depth import output_dim, task_loss
from dnas.supernet import Supernet

#: unary primitives U (thesis §6.2): option name -> (formula, function)
UNARY: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "max0": ("max(x, 0)", lambda x: x.clamp_min(0)),
    "min0": ("min(x, 0)", lambda x: x.clamp_max(0)),
    "exp": ("exp(x)", torch.exp),
    "tanh": ("tanh(x)", torch.tanh),
    "x": ("x", lambda x: x),
    "abs": ("|x|", torch.abs),
    "sin": ("sin(x)", torch.sin),
    "cos": ("cos(x)", torch.cos),
    "one": ("1", torch.ones_like),
    "square": ("x^2", torch.square),
}
#: binary primitives B (thesis §6.2): option name -> (formula template, function)
BINARY: dict[str, tuple[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = {
    "add": ("{a} + {b}", torch.add),
    "prod": ("{a} * {b}", torch.mul),
    "sub": ("{a} - {b}", torch.sub),
    "max": ("max({a}, {b})", torch.maximum),
    "min": ("min({a}, {b})", torch.minimum),
    "mask": ("{a}", lambda a, b: a),  # mask(x, y) = x
}
#: binaries with B(a, b) = B(b, a): the parser merges both orders of their arguments
COMMUTATIVE = frozenset({"add", "prod", "max", "min"})


def formula(binary: str, unary1: str, unary2: str) -> str:
    """The activation ``B(U1(x), U2(x))`` as text, e.g. ``formula("add", "exp", "max0") == "exp(x) + max(x, 0)"``."""
    return BINARY[binary][0].format(a=UNARY[unary1][0], b=UNARY[unary2][0])


def _nonfinite(t: torch.Tensor) -> bool:
    return not bool(torch.isfinite(t).all())


class NonFinite(Diverged, DnasError):
    """A NaN/inf in the activation. The search loop treats it as a divergence (roll back the epoch, lower
    the learning rates, then stop with this message); anywhere else it is a one-line DnasError."""


def _blame(x: torch.Tensor, U: Sequence[torch.Tensor], Bv: Sequence[torch.Tensor], where: str) -> NonFinite:
    """The one-line error naming the primitive that first produced a NaN/inf."""
    fix = "lower the learning rates, normalise the data, or drop the primitive"
    if _nonfinite(x):
        return NonFinite(f"{where}: the input to the activation is already NaN/inf (the preceding linear layer diverged); {fix}")
    big = f"|x| up to {float(x.detach().abs().max()):.3g}"
    for name, u in zip(UNARY, U):
        if _nonfinite(u):
            return NonFinite(f"{where}: unary primitive '{name}' ({UNARY[name][0]}) produced NaN/inf ({big}); {fix}")
    for name, b in zip(BINARY, Bv):
        if _nonfinite(b):
            return NonFinite(f"{where}: binary primitive '{name}' ({BINARY[name][0].format(a='a', b='b')}) produced NaN/inf ({big}); {fix}")
    return NonFinite(f"{where}: the softmax mixture of the primitives overflowed ({big}); {fix}")


class MixedActivation(nn.Module):
    """``Σ_b p_b · b(Σ_u p1_u · u(x), Σ_u p2_u · u(x))``: the relaxed cell (thesis §6.2), no weights."""

    def __init__(self, where: str = "activation", check: bool = True):
        super().__init__()
        self.where, self.check = where, check

    def forward(self, x, pb, p1, p2):
        U = [f(x) for _, f in UNARY.values()]
        Us = torch.stack(U, -1)
        u1, u2 = Us @ p1, Us @ p2  # softmax-mixed U1(x), U2(x), DARTS eq. (2.7)
        Bv = [f(u1, u2) for _, f in BINARY.values()]
        out = torch.stack(Bv, -1) @ pb  # softmax-mixed B(U1, U2)
        if self.check and _nonfinite(out):
            raise _blame(x, U, Bv, self.where)
        return out


class Activation(nn.Module):
    """The discrete cell ``B(U1(x), U2(x))`` of a genotype, with the same NaN/inf check."""

    def __init__(self, binary: str, unary1: str, unary2: str, where: str = "activation"):
        super().__init__()
        self.binary, self.unary1, self.unary2, self.where = binary, unary1, unary2, where

    def forward(self, x):
        u1, u2 = UNARY[self.unary1][1](x), UNARY[self.unary2][1](x)
        out = BINARY[self.binary][1](u1, u2)
        if _nonfinite(out):
            U = [u1 if n == self.unary1 else u2 if n == self.unary2 else torch.zeros(()) for n in UNARY]
            Bv = [out if n == self.binary else torch.zeros(()) for n in BINARY]
            raise _blame(x, U, Bv, self.where)
        return out

    def extra_repr(self) -> str:
        return formula(self.binary, self.unary1, self.unary2)


@dataclass
class ActivationConfig:
    widths: list[int] = field(default_factory=lambda: [64, 64])  # hidden widths of the MLP
    check_finite: bool = True  # NaN/inf check after each activation of the supernet (one device sync per layer)

    def check(self):
        if not self.widths or any(int(w) < 1 for w in self.widths):
            return "widths must be a non-empty list of positive hidden widths, e.g. [64, 64]"
        return None


class ActivationSupernet(Supernet):
    def __init__(self, space: "ActivationSpace", task: Task):
        super().__init__(space, task)
        dims = [math.prod(task.input_shape), *space.config.widths]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        check = space.config.check_finite
        self.acts = nn.ModuleList(MixedActivation(f"activation after linear layer {i}", check) for i in range(len(self.linears)))
        self.out = nn.Linear(dims[-1], output_dim(task))
        for d in space.decisions():  # three α rows of different lengths: one key each
            self.add_alpha(d.name, [d])

    def forward(self, x):
        pb, p1, p2 = (self.mixing_weights(k)[0] for k in ("binary", "unary1", "unary2"))
        h = x.flatten(1)
        for lin, act in zip(self.linears, self.acts):
            h = act(lin(h), pb, p1, p2)  # one global cell after every linear layer
        return self.out(h)

    def loss(self, batch: Any) -> dict[str, torch.Tensor]:
        x, y = batch
        return task_loss(self(x), y, self.task)


@register_parser("formula")
def formula_parser(decisions: Sequence[Decision], weights: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """The most probable formula under the relaxation: argmax over (b, u1, u2) of p_b · P(u1, u2 | b),
    where for a commutative b the two orders of (u1, u2) are one formula (their probabilities add).
    Plain per-decision argmax would split e.g. ``exp + relu`` learnt as u1 = u2 = ½exp + ½relu."""
    opts = {d.name: d.options for d in decisions}
    pb, p1, p2 = weights["binary"], weights["unary1"], weights["unary2"]
    pair = torch.outer(p1, p2)  # P(u1 = i, u2 = j) of the product relaxation
    best, choice = -1.0, None
    for k, b in enumerate(opts["binary"]):
        if b == "mask":  # mask ignores U2: its U2 is the most probable one, P(u1 = i) alone counts
            score, flat = p1.max(), int(p1.argmax()) * len(p2) + int(p2.argmax())
        else:
            joint = pair + pair.T - torch.diag(torch.diagonal(pair)) if b in COMMUTATIVE else pair  # i = j once
            score, flat = joint.max(), int(joint.argmax())
        score = float(pb[k] * score)
        if score > best:
            best, choice = score, (b, opts["unary1"][flat // len(p2)], opts["unary2"][flat % len(p2)])
    b, u1, u2 = choice
    if b in COMMUTATIVE and list(UNARY).index(u2) < list(UNARY).index(u1):
        u1, u2 = u2, u1  # canonical order: one genotype per formula
    return {"binary": [b], "unary1": [u1], "unary2": [u2]}


@register_space("activation")
class ActivationSpace(SearchSpace):
    """One global activation ``B(U1(x), U2(x))`` after every linear layer of an MLP."""

    Config = ActivationConfig
    default_parser = "formula"
    # no data_free: every primitive is mixed in (softmax), so exp sees the all-ones input's values grown
    # through random layers and overflows whatever α is; a data-free proxy cannot score this space
    offers = SearchSpace.offers - {"data_free"}
    tiny_config = {"widths": [6, 6]}
    tiny_task = Task((3,), 0, out_dim=1)

    def decisions(self) -> list[Decision]:
        return [Decision("binary", tuple(BINARY)), Decision("unary1", tuple(UNARY)), Decision("unary2", tuple(UNARY))]

    def supernet(self, task: Task) -> ActivationSupernet:
        return ActivationSupernet(self, task)

    def build_network(self, genotype, task: Task) -> nn.Module:
        self.validate(genotype)
        c = {k: v[0] for k, v in genotype.choices.items()}
        dims = [math.prod(task.input_shape), *self.config.widths]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            layers += [nn.Linear(a, b), Activation(c["binary"], c["unary1"], c["unary2"], f"activation after linear layer {i}")]
        return nn.Sequential(*layers, nn.Linear(dims[-1], output_dim(task)))

    def describe(self, genotype) -> str:
        c = {k: v[0] for k, v in genotype.choices.items()}
        return f"activation: A(x) = {formula(c['binary'], c['unary1'], c['unary2'])}"
