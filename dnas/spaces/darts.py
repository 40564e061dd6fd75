"""The DARTS CIFAR cell space (Liu et al., ICLR 2019), shared normal/reduce cells or one α per cell.

A cell has 2 input nodes and ``nodes`` intermediate nodes; node i receives one edge from each of
the 2 + i earlier states; the output concatenates the intermediate nodes. Reductions sit at 1/3
and 2/3 of the depth. With ``individual=True`` every cell has its own α (the D-DARTS layout).
"""
from __future__ import annotations

import random
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from dnas.errors import DnasError, first_line
from dnas.genotype import Genotype
from dnas.registry import register_space
from dnas.space import Decision, SearchSpace, Task
from dnas.spaces.ops import CNN_OP_SETS, POOLS, BatchNorm2d, FactorizedReduce, ReLUConvBN
from dnas.supernet import Supernet


@dataclass
class DartsConfig:
    C: int = 16  # initial channels
    layers: int = 8  # number of cells
    nodes: int = 4  # intermediate nodes per cell (L)
    stem_multiplier: int = 3
    ops: Literal["darts", "darts-o"] = "darts"  # S (8 ops with none) or S_o (12 ops)
    individual: bool = False  # one α per cell (D-DARTS) instead of shared normal/reduce
    auxiliary: bool = True  # evaluation network: auxiliary head at 2/3 depth
    # speed and memory of the supernet (search only; the math is unchanged unless said)
    partial_channels: int = 1  # PC-DARTS K: 1/K of an edge's channels go through the mixed op (changes the math)
    edge_normalization: bool | None = None  # PC-DARTS β per edge; None = on when partial_channels > 1
    channels_last: bool | None = None  # NHWC activations; None: on for CPU inputs (1.4-1.6x faster step there, bench_darts), off on GPU
    checkpoint_cells: bool = False  # recompute each cell in backward: less memory, same gradients, more time
    compile: bool = False  # torch.compile each mixed op (first steps pay the compilation; see docs/performance.md)
    reductions: list[int] | None = None  # reduction cell positions; None: DARTS' n//3 and 2n//3
    share: list[int] | None = None  # with individual: cell i uses the α of cell share[i] (DARTOpti)

    def check(self):
        if self.C < 1 or self.layers < 1 or self.nodes < 1 or self.stem_multiplier < 1:
            return "C, layers, nodes and stem_multiplier must be positive"
        if self.reductions is not None and not all(isinstance(r, int) and 0 <= r < self.layers for r in self.reductions):
            return f"reductions must list cell positions 0 to {self.layers - 1}, got {self.reductions}"
        if self.share is not None:
            s = self.share
            if not self.individual:
                return "share needs individual cells (space ddarts, or individual: true)"
            if len(s) != self.layers or not all(isinstance(j, int) and 0 <= j <= i and s[j] == j for i, j in enumerate(s)):
                return (f"share must give, for each of the {self.layers} cells, the index of an earlier (or the same) "
                        f"cell that uses its own α, e.g. [0, 1, 1, 3]; got {s}")
            reds = set(self.reductions) if self.reductions is not None else {self.layers // 3, 2 * self.layers // 3}
            mixed = [i for i, j in enumerate(s) if (i in reds) != (j in reds)]
            if mixed:
                return f"share: cell {mixed[0]} and cell {s[mixed[0]]} are not both normal or both reduction cells"
        if self.partial_channels < 1 or self.C % self.partial_channels:
            return f"partial_channels must be >= 1 and divide C={self.C}, got {self.partial_channels}"
        return None


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel groups (ShuffleNet; PC-DARTS mixes bypassed and searched channels)."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class SharedReLU(nn.ReLU):
    """A ReLU that returns the relu(x) its mixed op hands over for this very x instead of a new copy."""

    shared: tuple[torch.Tensor, torch.Tensor] | None = None  # (x, relu(x)) during the MixedOp's forward

    def forward(self, x):
        s = self.shared
        return s[1] if s is not None and s[0] is x else F.relu(x)


def _share_leading_relu(op: nn.Module) -> SharedReLU | None:
    """Swap the ReLU an op starts with (through nested Sequentials) for a :class:`SharedReLU`.

    ReLU holds no state, so parameter names and checkpoints are unchanged, and the op alone still
    computes o(x).
    """
    parent = op
    while isinstance(parent, nn.Sequential) and len(parent) > 0:
        if type(parent[0]) is nn.ReLU:
            parent[0] = SharedReLU()
            return parent[0]
        parent = parent[0]
    return None


class MixedOp(nn.Module):
    """One edge of the supernet: Σ_k w_k · o_k(x).

    Same math as the DARTS MixedOp, computed leaner: ``none`` is skipped (it adds exactly 0), and
    the ops that start with a ReLU share one relu(x) per input state (given by the cell) instead of
    each storing its own copy for backward, the parameter-free pools are computed once per state for
    every edge leaving it (``shared``, given by the cell), each op is added as one fused
    ``out + w_k · o_k(x)``; the max pool keeps no indices (``ops.MaxPool2d``), and
    the strategies record gradients only for what a pass needs (``Supernet.grad_only``).

    With ``partial=K > 1`` (PC-DARTS, Xu et al., ICLR 2020, eq. (2)) only the first C/K channels go
    through the ops; the others bypass the edge (max-pooled 2x2 on a reduction edge), then the
    channels are shuffled with K groups.
    """

    def __init__(self, C: int, stride: int, op_names: tuple[str, ...], table, partial: int = 1):
        super().__init__()
        self.active = [i for i, n in enumerate(op_names) if n != "none"]  # `none` adds exactly 0: skipped
        self.pools = [i for i, n in enumerate(op_names) if n in POOLS]  # parameter-free: one per state (SearchCell)
        self.partial, self.stride = partial, stride
        self.ops = nn.ModuleList()
        self.relus: list[SharedReLU] = []  # the ops' leading ReLUs (also registered inside the ops)
        for n in op_names:
            C_op = C // partial
            op = table[n](C_op, stride, False)
            relu = _share_leading_relu(op)
            if relu is not None:
                self.relus.append(relu)
            if n in POOLS:
                op = nn.Sequential(op, BatchNorm2d(C_op, affine=False))
            self.ops.append(op)

    def forward(self, x: torch.Tensor, w: torch.Tensor, rx: torch.Tensor | None = None,
                shared: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """``rx``: relu(x) when the caller shares it between edges (computed here otherwise);
        ``shared``: op index -> that op's output on this very x, computed once for every edge
        leaving the same state (the parameter-free pools, see :meth:`SearchCell.forward`)."""
        if rx is None and self.relus:
            rx = F.relu(x)
        if self.partial > 1:
            sizes = [x.shape[1] // self.partial, x.shape[1] - x.shape[1] // self.partial]
            x, rest = x.split(sizes, dim=1)
            rx = rx.split(sizes, dim=1)[0] if rx is not None else None
        # hand relu(x) to the ops' leading ReLUs; a compiled graph needs no hand-over (inductor merges the
        # identical relu(x) itself) and a module attribute set during tracing would cost a guard per call
        relus = self.relus if not torch.compiler.is_compiling() else []
        for r in relus:
            r.shared = (x, rx)
        try:
            # DARTS eq. (2.7): ō(x) = Σ_k w_k o_k(x), w = softmax(α) (or σ(α) for FairDARTS)
            out = None
            for i in self.active:
                y = shared[i] if shared is not None and i in shared else self.ops[i](x)
                out = w[i] * y if out is None else torch.addcmul(out, w[i], y)  # out + w_k · o_k(x), one pass
        finally:
            for r in relus:
                r.shared = None
        if self.partial > 1:  # PC-DARTS eq. (2): [ō(S·x), (1 − S)·x], then channel shuffle
            rest = F.max_pool2d(rest, 2, 2) if self.stride > 1 else rest
            out = channel_shuffle(torch.cat([out, rest], dim=1), self.partial)
        return out


def _nhwc(x: torch.Tensor, channels_last: bool | None) -> torch.Tensor:
    """``x`` in channels-last layout when asked, or by default (None) on the CPU, where mkldnn's
    convolutions run faster on it; every later activation inherits the layout."""
    on = x.device.type == "cpu" if channels_last is None else channels_last
    return x.contiguous(memory_format=torch.channels_last) if on and x.dim() == 4 else x


def _preprocess(C_pp, C_p, C, reduction_prev, affine):
    pre0 = FactorizedReduce(C_pp, C, affine) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0, affine)
    return pre0, ReLUConvBN(C_p, C, 1, 1, 0, affine)


class SearchCell(nn.Module):
    def __init__(self, nodes, C_pp, C_p, C, reduction, reduction_prev, op_names, table, partial=1):
        super().__init__()
        self.nodes, self.reduction, self.C = nodes, reduction, C
        self.pre0, self.pre1 = _preprocess(C_pp, C_p, C, reduction_prev, affine=False)
        self.edges = nn.ModuleList(
            MixedOp(C, 2 if reduction and j < 2 else 1, op_names, table, partial) for i in range(nodes) for j in range(2 + i)
        )

    def forward(self, s0, s1, weights, edge_weights=None):
        """``edge_weights``: PC-DARTS β normalised per node (one per edge), or None."""
        states = [self.pre0(s0), self.pre1(s1)]
        relus = [F.relu(s) for s in states] if self.edges[0].relus else [None] * 2  # shared by every edge
        pooled: list[dict[int, torch.Tensor] | None] = [None] * (2 + self.nodes)
        e = 0
        for _ in range(self.nodes):
            node = None
            for j in range(len(states)):
                if pooled[j] is None:
                    pooled[j] = self._pools(e + j, states[j])
                y = self.edges[e + j](states[j], weights[e + j], relus[j], pooled[j])
                if edge_weights is not None:  # PC-DARTS eq. (4): x_j = Σ_i β_ij · ō_ij(x_i)
                    y = edge_weights[e + j] * y
                node = y if node is None else node + y
            e += len(states)
            states.append(node)
            relus.append(F.relu(node) if relus[0] is not None and len(states) < 2 + self.nodes else None)
        return torch.cat(states[2:], dim=1)

    def _pools(self, first: int, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """The pool ops (pool, then a parameter-free BatchNorm) of every edge leaving state x,
        computed once by the first such edge (``first``): they have no parameters and see the same
        x with the same stride, so their outputs are equal. The other edges' BatchNorms get the
        first one's running statistics, which they would have computed themselves."""
        edge = self.edges[first]
        if edge.partial > 1 or not edge.pools:
            return {}
        out = {i: edge.ops[i](x) for i in edge.pools}
        if self.training:
            sources = [edge.ops[i][1] for i in edge.pools]
            with torch.no_grad():
                for other in self._edges_from(first):
                    for i, src in zip(edge.pools, sources):
                        dst = self.edges[other].ops[i][1]
                        if dst.track_running_stats and dst.running_mean is not None:
                            dst.running_mean.copy_(src.running_mean)
                            dst.running_var.copy_(src.running_var)
                            dst.num_batches_tracked.copy_(src.num_batches_tracked)
        return out

    def _edges_from(self, first: int) -> list[int]:
        """The edges after ``first`` that leave the same state as edge ``first``."""
        e, j_first, found = 0, None, []
        for i in range(self.nodes):
            for j in range(2 + i):
                if e + j == first:
                    j_first = j
                elif j_first is not None and j == j_first:
                    found.append(e + j)
            e += 2 + i
        return found

    def bypass(self, s0, s1):
        """The output of this cell switched off (D-DARTS eq. (4.2): "replaced by its input path").

        The previous cell's output ``s1`` itself where it has this cell's output shape (the cell is
        simply removed). Otherwise (a reduction cell, or a first cell whose stem width differs) the
        cell's own preprocessing ``pre1(s1)``, a parameter-free 3x3 average pool with stride 2 in a
        reduction cell, repeated once per node along channels: the cell with every node a skip
        connection from its input path. No α enters, so L_CE(C without C_i) is constant in α_i.
        """
        if not self.reduction and s1.shape[1] == self.nodes * self.C:
            return s1
        x = self.pre1(s1)
        if self.reduction:
            x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
        return x.repeat(1, self.nodes, 1, 1)


#: how an ablated cell is replaced: its input path (the paper) or random op weights (authors' code)
ABLATIONS = ("input", "random")


def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Drop a whole path per sample with probability p, rescaling the kept ones (DARTS drop-path)."""
    keep = 1.0 - p
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


class EvalCell(nn.Module):
    def __init__(self, key, choices, nodes, C_pp, C_p, C, reduction, reduction_prev, table):
        super().__init__()
        self.nodes = nodes
        self.pre0, self.pre1 = _preprocess(C_pp, C_p, C, reduction_prev, affine=True)
        self.ops = nn.ModuleList()
        self.wiring: list[tuple[int, int, bool]] = []  # (node, source state, is identity)
        for i in range(nodes):
            for j in range(2 + i):
                for name in choices[f"{key}.node{i}.edge{j}"]:
                    op = table[name](C, 2 if reduction and j < 2 else 1, True)
                    self.ops.append(op)
                    self.wiring.append((i, j, isinstance(op, nn.Identity)))

    def forward(self, s0, s1, drop_prob: float = 0.0):
        states, k = [self.pre0(s0), self.pre1(s1)], 0
        for i in range(self.nodes):  # wiring is ordered by node
            node = None
            while k < len(self.wiring) and self.wiring[k][0] == i:
                _, j, identity = self.wiring[k]
                y = self.ops[k](states[j])
                if self.training and drop_prob > 0 and not identity:
                    y = drop_path(y, drop_prob)
                node = y if node is None else node + y
                k += 1
            states.append(node)
        return torch.cat(states[2:], dim=1)


@contextmanager
def _compile_options(graphs: int):
    """While the compiled edges run: room for ``graphs`` graphs (torch's default of 8 would send
    the later ones back to eager)."""
    import torch._dynamo

    with torch._dynamo.config.patch(cache_size_limit=graphs):
        yield


@contextmanager
def _frozen_bn_stats(module: nn.Module):
    """BatchNorm running statistics left untouched inside (momentum 0), e.g. while a checkpoint recomputes."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, n) in zip(bns, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(n)


class AuxiliaryHead(nn.Sequential):
    """DARTS auxiliary classifier at 2/3 depth (adaptive pooling so any input size works)."""

    def __init__(self, C, num_classes):
        super().__init__(
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(768, num_classes),
        )


def _stack(space: "DartsSpace", task: Task, make_cell):
    """Stem and cells shared by the supernet and the evaluation network."""
    cfg = space.config
    C_curr = cfg.stem_multiplier * cfg.C
    stem = nn.Sequential(nn.Conv2d(task.input_shape[0], C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
    C_pp, C_p, C_curr = C_curr, C_curr, cfg.C
    cells, reduction_prev, channels = nn.ModuleList(), False, []
    for i in range(cfg.layers):
        reduction = i in space.reduction_layers()
        C_curr = C_curr * 2 if reduction else C_curr
        cells.append(make_cell(i, C_pp, C_p, C_curr, reduction, reduction_prev))
        reduction_prev = reduction
        C_pp, C_p = C_p, cfg.nodes * C_curr
        channels.append(C_p)
    return stem, cells, channels


class DartsSupernet(Supernet):
    def __init__(self, space: "DartsSpace", task: Task):
        super().__init__(space, task)
        cfg, table = space.config, CNN_OP_SETS[space.config.ops]
        ops = tuple(table)
        self.stem, self.cells, channels = _stack(
            space,
            task,
            lambda i, C_pp, C_p, C, red, red_prev: SearchCell(cfg.nodes, C_pp, C_p, C, red, red_prev, ops, table, cfg.partial_channels),
        )
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels[-1], task.num_classes)
        self.cell_keys = [space.cell_key(i) for i in range(cfg.layers)]
        en = cfg.edge_normalization
        self.edge_normalization = cfg.partial_channels > 1 if en is None else en
        for key in space.cell_keys():
            decisions = space.cell_decisions(key)
            self.add_alpha(key, decisions)  # DARTS init: 1e-3 · N(0, 1)
            if self.edge_normalization:  # PC-DARTS β, one per edge, same init as α
                self.alphas[f"{key}_beta"] = nn.Parameter(1e-3 * torch.randn(len(decisions)))
        if cfg.channels_last:
            self.to(memory_format=torch.channels_last)
        self._compiled = False
        self._ablated: int | None = None
        self._ablation_mode = "input"
        self._ablation_weights: torch.Tensor | None = None

    def edge_weights(self, key: str) -> torch.Tensor:
        """PC-DARTS eq. (4): β of cell ``key`` softmax-normalised over each node's incoming edges."""
        beta, out, e = self.alphas[f"{key}_beta"], [], 0
        for i in range(self.space.config.nodes):
            out.append(F.softmax(beta[e : e + 2 + i], dim=0))
            e += 2 + i
        return torch.cat(out)

    @torch.no_grad()
    def decision_weights(self) -> dict[str, torch.Tensor]:
        """Relaxed weights per edge; with edge normalisation each edge's are scaled by its β weight, so
        the darts parser ranks edges by β · w as PC-DARTS does (the op chosen on an edge is unchanged)."""
        w = super().decision_weights()
        if self.edge_normalization:
            for key in self.space.cell_keys():
                b = self.edge_weights(key).detach().cpu()
                for row, d in enumerate(self.space.cell_decisions(key)):
                    w[d.name] = w[d.name] * b[row]
        return w

    def forward(self, x):
        if self.space.config.compile and not self._compiled:
            try:  # the first call compiles the edges (in _run_cell) and the compilation happens in it
                return self._forward(x)
            except Exception as e:
                if not type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
                    raise
                self._compiled = False
                msg = first_line(e, 200)
                raise DnasError(f"torch.compile is unavailable here ({msg}); set space.compile=false") from None
        return self._forward(x)

    def _compile_cells(self) -> None:
        """``torch.compile`` each mixed op (edge), not each cell nor the whole forward.

        Dynamo compiles one graph per input shape and per ``requires_grad`` pattern (``grad_only``
        freezes the weights in the α step and α in the weight step). Per cell that is a graph per
        cell shape and pass kind, each a hundred-odd ops: on 2 CPU cores the quick config compiled
        one every 2–3 min and had not finished its first step in 15 min. Per edge the graphs are
        small and shared by every edge of the same shape (a dozen for the quick config, compiled
        in about 2 min); the pools, the shared relu(x) and the node sums stay eager."""
        import torch._functorch.config

        if next(self.parameters()).device.type == "cpu":
            warnings.warn("space.compile=true on the CPU: the first steps compile for about 3 minutes, then a step runs "
                          "about 1.2-1.3x faster than eager (docs/performance.md): it pays for searches longer than about "
                          "15 minutes", stacklevel=2)
        # AOT autograd compiles a backward lazily, at its first call (outside any context set here), and by
        # default donates buffers, which forbids retain_graph; shapley's pass tree backpropagates through
        # shared prefixes with it. Process-wide, and only once a user turns compile on.
        torch._functorch.config.donated_buffer = False
        try:
            for cell in self.cells:
                for edge in cell.edges:
                    edge.compile()
        except Exception as e:  # no compiler, unsupported Python/platform...: say so in one line
            msg = first_line(e, 200)
            raise DnasError(f"torch.compile is unavailable here ({msg}); set space.compile=false") from None
        self._compiled = True

    #: graphs dynamo may keep for the edges' one forward function: edge shapes × requires_grad
    #: patterns × pass kinds (torch's default of 8 would send the later ones back to eager)
    COMPILED_GRAPHS = 64

    def _run_cell(self, cell: SearchCell, s0, s1, w, ew):
        if self.space.config.compile and not self._compiled:
            self._compile_cells()  # also when a strategy runs cells itself (shapley's pass tree)
        with _compile_options(self.COMPILED_GRAPHS) if self._compiled else nullcontext():
            if not (self.space.config.checkpoint_cells and torch.is_grad_enabled()):
                return cell(s0, s1, w, ew)
            calls = []

            def fn(s0, s1, w, ew):  # the recomputation in backward must not update BN statistics twice
                with _frozen_bn_stats(cell) if calls else nullcontext():
                    calls.append(1)
                    return cell(s0, s1, w, ew)

            return checkpoint(fn, s0, s1, w, ew, use_reentrant=False)

    def stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The stem's output: the input (s0 = s1) of cell 0."""
        return self.stem(_nhwc(x, self.space.config.channels_last))

    def head(self, s: torch.Tensor) -> torch.Tensor:
        """Logits from the last cell's output (global average pool, then the classifier)."""
        return self.classifier(self.gap(s).flatten(1))

    def cells_forward(self, start: int, stop: int, s0: torch.Tensor, s1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run cells ``start`` to ``stop - 1`` on the inputs (s0, s1) of cell ``start``.

        Honours :meth:`ablated`, so a pass of an ablated network can start from the full network's
        inputs of the ablated cell (the cells before it see exactly the same inputs). D-DARTS'
        ``shapley`` strategy uses this to share the cells before the one it drops.

        Args:
            start: first cell to run.
            stop: one past the last cell to run.
            s0: the output of cell ``start - 2`` (the stem's output for cells 0 and 1).
            s1: the output of cell ``start - 1`` (the stem's output for cell 0).

        Returns:
            (s0, s1) after cell ``stop - 1``: the inputs cell ``stop`` would get.
        """
        keys = dict.fromkeys(self.cell_keys[start:stop])
        weights = {k: self.mixing_weights(k) for k in keys}
        edge_w = {k: self.edge_weights(k) for k in keys} if self.edge_normalization else {}
        for i in range(start, stop):
            cell, key = self.cells[i], self.cell_keys[i]
            if i != self._ablated:
                out = self._run_cell(cell, s0, s1, weights[key], edge_w.get(key))
            elif self._ablation_mode == "input":
                out = cell.bypass(s0, s1)
            else:  # the D-DARTS code: the cell's ops mixed with random weights instead of σ(α)
                w = self._ablation_weights if self._ablation_weights is not None else torch.rand_like(weights[key])
                out = self._run_cell(cell, s0, s1, w, edge_w.get(key))
            s0, s1 = s1, out
        return s0, s1

    def forward_from(self, start: int, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        """Logits of the network run from cell ``start`` on its inputs (s0, s1) (see :meth:`cells_forward`)."""
        return self.head(self.cells_forward(start, len(self.cells), s0, s1)[1])

    def _forward(self, x):
        s = self.stem_forward(x)
        return self.forward_from(0, s, s)

    @contextmanager
    def ablated(self, cell: int, mode: str = "input", random_weights: torch.Tensor | None = None):
        """Context in which cell ``cell`` is switched off (D-DARTS eq. (4.2)).

        ``mode="input"`` (default, the paper): its output is its input path (:meth:`SearchCell.bypass`);
        ``mode="random"`` (the authors' code): its ops are mixed with U(0, 1) weights, not σ(α), drawn
        at each forward, or ``random_weights`` (shape of the cell's α) where given.
        """
        if not 0 <= cell < len(self.cells):
            raise DnasError(f"cannot ablate cell {cell}: the supernet has cells 0 to {len(self.cells) - 1}")
        if mode not in ABLATIONS:
            raise DnasError(f"unknown ablation mode '{mode}'; choose one of: {', '.join(ABLATIONS)}")
        before = self._ablated, self._ablation_mode, self._ablation_weights
        self._ablated, self._ablation_mode, self._ablation_weights = cell, mode, random_weights
        try:
            yield
        finally:
            self._ablated, self._ablation_mode, self._ablation_weights = before

    def arch_groups(self):
        return {k: [self.alphas[k]] + ([self.alphas[f"{k}_beta"]] if self.edge_normalization else []) for k in self.space.cell_keys()}

    def num_cells(self) -> int:
        return len(self.cells)


class DartsNetwork(nn.Module):
    """The evaluation network of a genotype (DARTS NetworkCIFAR): logits, plus aux logits in training."""

    def __init__(self, space: "DartsSpace", genotype: Genotype, task: Task):
        super().__init__()
        cfg, table = space.config, CNN_OP_SETS[space.config.ops]
        self.stem, self.cells, channels = _stack(
            space,
            task,
            lambda i, C_pp, C_p, C, red, red_prev: EvalCell(
                space.cell_key(i), genotype.choices, cfg.nodes, C_pp, C_p, C, red, red_prev, table
            ),
        )
        self.aux_at = 2 * cfg.layers // 3
        self.aux = AuxiliaryHead(channels[self.aux_at], task.num_classes) if cfg.auxiliary and cfg.layers > 2 else None
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels[-1], task.num_classes)
        self.drop_path_prob = 0.0
        self.channels_last = cfg.channels_last
        if cfg.channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x):
        aux = None
        s0 = s1 = self.stem(_nhwc(x, self.channels_last))
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_at and self.aux is not None and self.training:
                aux = self.aux(s1)
        logits = self.classifier(self.gap(s1).flatten(1))
        return (logits, aux) if aux is not None else logits


@register_space("darts")
class DartsSpace(SearchSpace):
    """DARTS CNN cells. Decisions are edges ``<cell>.node<i>.edge<j>`` (j = source state)."""

    Config = DartsConfig
    inputs = "images"
    default_parser = "darts"
    offers = SearchSpace.offers | {"cells", "ablation"}
    offers_with = {"alpha_per_cell": "space.individual=true"}
    tiny_config = dict(C=4, layers=3, nodes=2)
    tiny_task = Task((3, 8, 8), 4)

    def capabilities(self) -> frozenset[str]:
        """``alpha_per_cell`` with ``individual`` cells that share no α (D-DARTS: space ``ddarts``)."""
        c = self.config
        per_cell = c.individual and (c.share is None or list(c.share) == list(range(c.layers)))
        return super().capabilities() | ({"alpha_per_cell"} if per_cell else set())

    @property
    def op_names(self) -> tuple[str, ...]:
        return tuple(CNN_OP_SETS[self.config.ops])

    def reduction_layers(self) -> set[int]:
        n = self.config.layers
        if self.config.reductions is not None:
            return set(self.config.reductions)
        return {n // 3, 2 * n // 3}

    def cell_key(self, i: int) -> str:
        if self.config.individual:
            return f"cell{i if self.config.share is None else self.config.share[i]}"  # shared cells: one α key
        return "reduce" if i in self.reduction_layers() else "normal"

    def cell_keys(self) -> list[str]:
        return list(dict.fromkeys(self.cell_key(i) for i in range(self.config.layers)))

    def cell_decisions(self, key: str) -> list[Decision]:
        opts, nodes = self.op_names, self.config.nodes
        return [
            Decision(f"{key}.node{i}.edge{j}", opts, group=f"{key}.node{i}", cell=key, max_options=len(opts), min_options=0)
            for i in range(nodes)
            for j in range(2 + i)
        ]

    def decisions(self) -> list[Decision]:
        return [d for key in self.cell_keys() for d in self.cell_decisions(key)]

    def supernet(self, task: Task) -> DartsSupernet:
        return DartsSupernet(self, task)

    def build_network(self, genotype: Genotype, task: Task) -> DartsNetwork:
        self.validate(genotype)
        return DartsNetwork(self, genotype, task)

    def validate(self, genotype: Genotype) -> None:
        super().validate(genotype)
        for key in self.cell_keys():
            for i in range(self.config.nodes):
                if not any(genotype.choices[f"{key}.node{i}.edge{j}"] for j in range(2 + i)):
                    raise DnasError(f"node '{key}.node{i}' has no incoming op; every node needs at least one")
                if any("none" in genotype.choices[f"{key}.node{i}.edge{j}"] for j in range(2 + i)):
                    raise DnasError(f"'{key}.node{i}' keeps the 'none' op; drop the edge instead (an empty list)")

    def random_genotype(self, rng: random.Random) -> Genotype:
        """Uniform over DARTS cells: per node 2 distinct incoming edges, one non-``none`` op each."""
        ops = [o for o in self.op_names if o != "none"]
        choices = {}
        for key in self.cell_keys():
            for i in range(self.config.nodes):
                kept = set(rng.sample(range(2 + i), min(2, 2 + i)))
                for j in range(2 + i):
                    choices[f"{key}.node{i}.edge{j}"] = [rng.choice(ops)] if j in kept else []
        return self.genotype(choices)

    def categorical(self) -> dict[str, tuple[str, ...]]:
        """CSNAS' cell encoding: per node its pair of inputs and one non-``none`` op per input.

        ``<node>.inputs`` picks the 2 source states ("a+b", a < b), ``<node>.op0`` the op on a,
        ``<node>.op1`` the op on b: a bijection onto the valid cells, so a uniform sample of these
        parameters is a uniform valid genotype (eq. (4.1) counts them).
        """
        from itertools import combinations

        ops = tuple(o for o in self.op_names if o != "none")
        out: dict[str, tuple[str, ...]] = {}
        for key in self.cell_keys():
            for i in range(self.config.nodes):
                out[f"{key}.node{i}.inputs"] = tuple(f"{a}+{b}" for a, b in combinations(range(2 + i), 2))
                out[f"{key}.node{i}.op0"] = out[f"{key}.node{i}.op1"] = ops
        return out

    def from_categorical(self, sample: dict[str, str]) -> Genotype:
        choices = {}
        for key in self.cell_keys():
            for i in range(self.config.nodes):
                a, b = (int(s) for s in sample[f"{key}.node{i}.inputs"].split("+"))
                for j in range(2 + i):
                    kept = {a: sample[f"{key}.node{i}.op0"], b: sample[f"{key}.node{i}.op1"]}.get(j)
                    choices[f"{key}.node{i}.edge{j}"] = [kept] if kept else []
        g = self.genotype(choices)
        self.validate(g)
        return g

    def space_size(self) -> float:
        """Eq. (4.1): s(K, L) = Π_{i=1..L} ((i+1)i/2) · K² per distinct cell (K = ops without none)."""
        K = len([o for o in self.op_names if o != "none"])
        per_cell = 1.0
        for i in range(1, self.config.nodes + 1):
            per_cell *= (i + 1) * i / 2 * K**2
        return per_cell ** len(self.cell_keys())
