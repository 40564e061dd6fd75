"""Supernet: an ``nn.Module`` holding every candidate at once, with architecture parameters α.

α are registered ``nn.Parameter``s in ``self.alphas`` (a ``ParameterDict``, insertion-ordered), so they
are saved, moved and counted like any weight and always come back in the same order.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from dnas.errors import DnasError
from dnas.registry import PARSERS, did_you_mean

if TYPE_CHECKING:
    from dnas.genotype import Genotype
    from dnas.space import Decision, SearchSpace, Task


def _gumbel(alpha: torch.Tensor, tau: float, training: bool) -> torch.Tensor:
    return F.gumbel_softmax(alpha, tau=tau, dim=-1) if training else F.softmax(alpha, dim=-1)


#: relaxation name -> f(alpha, tau, training) -> mixing weights. A new relaxation is one line here.
RELAXATIONS: dict[str, Callable[[torch.Tensor, float, bool], torch.Tensor]] = {
    "softmax": lambda a, tau, training: F.softmax(a, dim=-1),  # DARTS eq. (2.7)
    "sigmoid": lambda a, tau, training: torch.sigmoid(a),  # FairDARTS: independent σ(α_k)
    "gumbel": _gumbel,  # GDAS/SNAS-style Gumbel-softmax
}


class _DataFree(nn.Module):
    """``net.data_free_forward`` as a module's forward, for ``torch.func.functional_call``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Any) -> torch.Tensor:
        return self.net.data_free_forward(x)


class Supernet(nn.Module):
    """Base of every space's supernet. Subclasses build their modules and call :meth:`add_alpha`."""

    def __init__(self, space: SearchSpace, task: Task):
        super().__init__()
        self.space = space
        self.task = task
        self.alphas = nn.ParameterDict()
        self._rows: dict[str, tuple[str, int]] = {}  # decision name -> (alpha key, row)
        self._relaxation = "softmax"
        self.tau = 1.0

    # -- α ------------------------------------------------------------------------------------
    def add_alpha(self, key: str, decisions: Sequence["Decision"], init_std: float = 1e-3, init: float = 0.0):
        """Register one α tensor of shape (len(decisions), n_options); row i belongs to decisions[i].

        Args:
            key: the α tensor's name (e.g. ``normal``, ``cell3``, ``layers``).
            decisions: the decisions sharing it; they must have the same number of options.
            init_std: standard deviation of the random part of the initial value (DARTS: 1e-3).
            init: the constant part of the initial value.

        Returns:
            The registered parameter.

        Raises:
            ValueError: the decisions have different numbers of options.
        """
        n_opts = {len(d.options) for d in decisions}
        if len(n_opts) != 1:
            raise ValueError(f"decisions sharing alpha '{key}' must have the same number of options")
        alpha = torch.full((len(decisions), n_opts.pop()), float(init))
        if init_std:
            alpha += init_std * torch.randn(alpha.shape)
        self.alphas[key] = nn.Parameter(alpha)
        for row, d in enumerate(decisions):
            self._rows[d.name] = (key, row)
        return self.alphas[key]

    @property
    def relaxation(self) -> str:
        """How α become mixing weights: ``softmax`` (DARTS), ``sigmoid`` (FairDARTS) or ``gumbel``.
        Set by the strategy; an unknown name raises DnasError."""
        return self._relaxation

    @relaxation.setter
    def relaxation(self, name: str) -> None:
        if name not in RELAXATIONS:
            raise DnasError(f"unknown relaxation '{name}'{did_you_mean(name, RELAXATIONS)}; choose one of: {', '.join(RELAXATIONS)}")
        self._relaxation = name

    def mixing_weights(self, key: str) -> torch.Tensor:
        """The relaxed weights of α[key] (softmax, sigmoid or gumbel), differentiable w.r.t. α.

        Args:
            key: the α tensor's name (see :meth:`add_alpha`).

        Returns:
            A tensor of the α tensor's shape.
        """
        return RELAXATIONS[self._relaxation](self.alphas[key], self.tau, self.training)

    def arch_parameters(self) -> list[nn.Parameter]:
        """Every α tensor, in registration order."""
        return list(self.alphas.values())

    def named_arch_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(key, α)`` pairs, in registration order (what ``alphas.pt`` holds)."""
        return list(self.alphas.items())

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not an α (what the weight optimiser trains)."""
        arch = {id(p) for p in self.alphas.values()}
        return [p for p in self.parameters() if id(p) not in arch]

    @contextmanager
    def grad_only(self, params: Sequence[torch.Tensor]) -> Iterator[None]:
        """Within the block autograd records gradients for ``params`` alone: every other parameter
        that requires grad is frozen, and unfrozen when the block exits (also on an error).

        The gradients of ``params`` are unchanged; the graph saves less. A mixed op keeps o_k(x)
        (for ∇α) only when α needs a gradient, a convolution its input (for ∇W) only when W does:
        about a fifth of what a DARTS supernet saves, in the α step and in the weight step alike.
        Run the forward AND the backward inside (checkpointed cells recompute during backward).
        """
        keep = {id(p) for p in params}
        frozen = [p for p in self.parameters() if p.requires_grad and id(p) not in keep]
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def arch_groups(self) -> dict[str, list[nn.Parameter]]:
        """Sets of α with their own optimizer. One group by default; per cell in D-DARTS."""
        return {"all": self.arch_parameters()}

    def decision_alpha(self, name: str) -> torch.Tensor:
        """The α row of decision ``name`` (a view: writing to it changes α)."""
        key, row = self._rows[name]
        return self.alphas[key][row]

    @torch.no_grad()
    def decision_weights(self) -> dict[str, torch.Tensor]:
        """Relaxed weights per decision (deterministic: no Gumbel noise).

        Returns:
            Decision name -> its weights over its options, detached, on the CPU.
        """
        was = self.training
        self.train(False)
        try:
            w = {key: self.mixing_weights(key).detach().cpu() for key in self.alphas}
        finally:
            self.train(was)
        return {name: w[key][row] for name, (key, row) in self._rows.items()}

    @torch.no_grad()
    def set_alpha_from_genotype(self, genotype: "Genotype", high: float = 1.0, low: float = -1.0) -> None:
        """Initialise α from a genotype: chosen options get ``high``, others ``low`` (DARTOpti).

        Args:
            genotype: a genotype of this supernet's space.
            high: α of the kept options.
            low: α of the others.
        """
        decisions = {d.name: d for d in self.space.decisions()}
        for name, chosen in genotype.choices.items():
            d = decisions[name]
            row = torch.tensor([high if o in chosen else low for o in d.options])
            self.decision_alpha(name).copy_(row)

    # -- data-free input and functional forward (capabilities "data_free", "functional") -------
    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The trainable weights (α excluded) by name, as :meth:`functional_forward` takes them."""
        arch = {id(p) for p in self.alphas.values()}
        return [(n, p) for n, p in self.named_parameters() if id(p) not in arch and p.requires_grad]

    def data_free_input(self, batch_size: int = 1) -> torch.Tensor:
        """A constant input (all ones, shaped like the task's samples): the data-free proxies' input."""
        ref = next(iter(self.parameters()), None)
        kw = {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}
        return torch.ones(batch_size, *self.task.input_shape, **kw)

    def data_free_forward(self, x: Any) -> torch.Tensor:
        """The output the data-free proxies sum (``R_SF = Σ H``): ``self(x)``. A space whose
        ``forward`` does not pass through its α (a representation before the searched heads)
        overrides it, so that the gates reach the output."""
        return self(x)

    def functional_forward(self, x: Any, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """:meth:`data_free_forward` with the weights in ``params`` (names of
        :meth:`named_weight_parameters`) substituted for the module's own, which stay untouched
        (``torch.func.functional_call``); α and absent names keep the module's tensors."""
        if params is None:
            return self.data_free_forward(x)
        return torch.func.functional_call(_DataFree(self), {f"net.{k}": v for k, v in params.items()}, (x,), strict=False)

    # -- task ---------------------------------------------------------------------------------
    def loss(self, batch: Any) -> dict[str, torch.Tensor]:
        """The task's loss on a batch; every strategy calls only this.

        Args:
            batch: what the space's data loader yields, ``(x, y)`` by default.

        Returns:
            ``{"loss": scalar, ...}``: the loss to minimise plus detached metrics (here the
            cross-entropy and the accuracy ``acc``), each logged as ``train_<name>``/``val_<name>``.
        """
        x, y = batch
        logits = self(x)
        return {"loss": F.cross_entropy(logits, y), "acc": (logits.argmax(1) == y).float().mean().detach()}

    @contextmanager
    def ablated(self, cell: int) -> Iterator[None]:
        """Context in which cell ``cell`` is switched off (D-DARTS). Spaces with cells override."""
        raise DnasError(f"space '{self.space.name}' has no cells to ablate")
        yield  # pragma: no cover

    def num_cells(self) -> int:
        """The number of cells (0 for a space without cells)."""
        return 0

    def genotype(self, parser: str | None = None, **parser_kw: Any) -> "Genotype":
        """Derive the discrete architecture with a registered parser.

        Args:
            parser: a registered parser name (``dnas list``); ``None`` for the space's default.
            **parser_kw: the parser's options, e.g. ``threshold=0.85``.

        Returns:
            The genotype of the current α.

        Raises:
            DnasError: an unknown parser.
        """
        fn = PARSERS.get(parser or self.space.default_parser)
        choices = fn(self.space.decisions(), self.decision_weights(), **parser_kw)
        return self.space.genotype(choices)
