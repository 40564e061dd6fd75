"""Operation factories: one table per op set, small modules (after DARTS ``cnn/operations.py``).

Each factory is ``f(C, stride, affine) -> nn.Module`` mapping C channels to C channels.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

# -- lean backward: the same gradients, less kept for them ---------------------------------------
# Autograd's convolution keeps its input even when only the input's gradient is wanted (the α step
# of a search freezes the weights), and batch norm keeps its input although, without γ and β, its
# output x̂ = (x − μ)/σ holds everything its backward needs. The modules below keep less in those
# cases and fall back to torch's own modules otherwise (eval, no grad, autocast). Inside
# torch.compile they stay: dynamo traces their autograd.Functions, so a compiled graph gets the
# fast depthwise input gradient too (without it a compiled DARTS step ran at 0.58x eager on the
# CPU). Set ``lean = False`` on an instance to get the plain module back.


def _lean(module: nn.Module, x: torch.Tensor) -> bool:
    return (module.lean and module.training and torch.is_grad_enabled() and x.requires_grad
            and not torch.is_autocast_enabled(x.device.type))


def _depthwise_input_grad(grad, weight, shape, stride, padding, dilation):
    """∂L/∂x of a depthwise convolution as a forward convolution of ∂L/∂y with the flipped kernel.

    On the CPU oneDNN's own depthwise backward is 5–40x slower than its forward for 5x5 or dilated
    kernels; this is the same sum in the fast forward kernel. ∂L/∂x[j] = Σ_i w[i]·g[(j + p − i·d)/s]
    over the i where that index is a whole output position: ∂L/∂y placed every s entries, offset by
    q = d(k − 1) − p, on a zero grid of H + d(k − 1), then correlated with the flipped kernel."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    kh, kw = weight.shape[-2:]
    full = (shape[2] + dh * (kh - 1), shape[3] + dw * (kw - 1))
    q = (dh * (kh - 1) - ph, dw * (kw - 1) - pw)
    ho, wo = grad.shape[2:]
    if (sh, sw) == (1, 1) and min(q) >= 0 and (ho + 2 * q[0], wo + 2 * q[1]) == full:  # the convolution pads
        return F.conv2d(grad, weight.flip(-1, -2), None, 1, q, (dh, dw), weight.shape[0])
    if (sh, sw) == (1, 1):  # a plain (possibly negative, i.e. cropping) padding
        grad = F.pad(grad, (q[1], full[1] - q[1] - wo, q[0], full[0] - q[0] - ho))
    else:
        layout = torch.channels_last if _is_nhwc(grad) else torch.contiguous_format
        grid = grad.new_zeros(*grad.shape[:2], *full).contiguous(memory_format=layout)
        rows, cols = (_strided_span(q[0], sh, ho, full[0]), _strided_span(q[1], sw, wo, full[1]))
        grid[:, :, rows[0]:rows[1]:sh, cols[0]:cols[1]:sw] = grad[:, :, rows[2]:rows[3], cols[2]:cols[3]]
        grad = grid
    return F.conv2d(grad, weight.flip(-1, -2), None, 1, 0, (dh, dw), weight.shape[0])


def _strided_span(q: int, s: int, n: int, size: int) -> tuple[int, int, int, int]:
    """Grid slice (start, stop) and source slice (start, stop) for positions q + o·s, o < n, inside [0, size)."""
    o0 = max(0, -(q // s))  # the first o with q + o·s >= 0 (−(q // s) = ⌈−q/s⌉)
    o1 = min(n, (size - q + s - 1) // s)
    if o1 <= o0:
        return 0, 0, 0, 0
    return q + o0 * s, q + (o1 - 1) * s + 1, o0, o1


def _depthwise_as_forward(device_type: str, groups: int, c_in: int, c_out: int, stride, dilation) -> bool:
    """A depthwise convolution whose input gradient :func:`_depthwise_input_grad` computes faster than
    aten: on the CPU, stride 1 or dilated (a strided undilated one is faster in aten)."""
    return (device_type == "cpu" and groups > 1 and groups == c_in == c_out
            and (tuple(stride) == (1, 1) or tuple(dilation) != (1, 1)))


def _is_nhwc(t: torch.Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


class _ConvBackward(torch.autograd.Function):
    """``conv2d(relu(x) if relu else x, w)`` that keeps for backward only what the wanted gradients
    need: the weight alone when w is frozen (the input's gradient needs no input); with ``relu``,
    x rather than relu(x) (x is what the batch norm before it keeps anyway, and relu(x) is
    recomputed in one pass). A depthwise convolution's input gradient is a forward convolution on
    the CPU (:func:`_depthwise_input_grad`); the rest is aten's own convolution and ReLU backward."""

    @staticmethod
    def forward(ctx, x, weight, relu, stride, padding, dilation, groups):
        inp = F.relu(x) if relu else x
        ctx.args = relu, stride, padding, dilation, groups, x.shape, x.stride()
        ctx.save_for_backward(x if relu or weight.requires_grad else None, weight)
        return F.conv2d(inp, weight, None, stride, padding, dilation, groups)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        relu, stride, padding, dilation, groups, shape, strides = ctx.args
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        inp = F.relu(x) if relu else x
        depthwise = _depthwise_as_forward(grad.device.type, groups, shape[1], weight.shape[0], stride, dilation)
        gx = gw = None
        if need_w:
            gx, gw, _ = torch.ops.aten.convolution_backward(grad, inp, weight, None, stride, padding, dilation, False,
                                                            [0, 0], groups, [need_x and not depthwise, True, False])
        if need_x and depthwise:
            gx = _depthwise_input_grad(grad, weight, shape, stride, padding, dilation)
        elif need_x and gx is None:
            if inp is None:  # the weight is frozen: the input's gradient needs the input's shape and layout alone
                inp = torch.empty_strided(shape, strides, dtype=grad.dtype, device=grad.device)  # never read (an
                # expanded 0-stride stand-in sends mkldnn down a path 2x slower for depthwise kernels)
            gx = torch.ops.aten.convolution_backward(grad, inp, weight, None, stride, padding, dilation, False,
                                                     [0, 0], groups, [True, False, False])[0]
        if relu and gx is not None:
            gx = torch.ops.aten.threshold_backward(gx, inp, 0)
        return gx, gw, None, None, None, None, None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that keeps only its weight for backward when the weight is frozen, and whose
    depthwise input gradient on the CPU is a forward convolution; same parameters, same gradients."""

    lean = True

    def _fast(self, x) -> bool:
        """The lean path applies: no bias, zero padding given as numbers, and a frozen weight or a
        depthwise convolution whose input gradient is faster as a forward convolution."""
        depthwise = _depthwise_as_forward(x.device.type, self.groups, self.in_channels, self.out_channels, self.stride, self.dilation)
        return ((not self.weight.requires_grad or depthwise) and self.bias is None and self.padding_mode == "zeros"
                and not isinstance(self.padding, str) and _lean(self, x))

    def forward(self, x):
        if not self._fast(x):
            return super().forward(x)
        return _ConvBackward.apply(x, self.weight, False, self.stride, self.padding, self.dilation, self.groups)


class _BatchNormKeepsOutput(torch.autograd.Function):
    """Training-mode batch norm without γ, β that keeps its output x̂ for backward, not its input.

    ∂L/∂x = (1/σ)(g − mean(g) − x̂·mean(g·x̂)) (Ioffe & Szegedy, 2015, §3): aten's batch-norm
    backward computes it from x̂ when given x̂ as input, mean 0, inverse std 1 and γ = 1/σ."""

    @staticmethod
    def forward(ctx, x, running_mean, running_var, momentum, eps):
        y, _, invstd = torch.native_batch_norm(x, None, None, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(y, invstd)
        ctx.eps = eps
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        y, invstd = ctx.saved_tensors
        gx = torch.ops.aten.native_batch_norm_backward(grad, y, invstd, None, None, torch.zeros_like(invstd),
                                                       torch.ones_like(invstd), True, ctx.eps, [True, False, False])[0]
        return gx, None, None, None, None


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d``; without γ, β it keeps its output rather than its input for backward (the
    op's output is what the mixed op keeps for ∇α, and what the ReLU after it is recomputed from)."""

    lean = True

    def forward(self, x):
        if self.affine or not _lean(self, x):
            return super().forward(x)
        self._check_input_dim(x)
        momentum, rm, rv = 0.0, None, None
        if self.track_running_stats:  # as nn.BatchNorm2d.forward in training
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            rm, rv = self.running_mean, self.running_var
        return _BatchNormKeepsOutput.apply(x, rm, rv, momentum, self.eps)


class ReLUConvBN(nn.Sequential):
    def __init__(self, C_in, C_out, kernel, stride, padding, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            Conv2d(C_in, C_out, kernel, stride=stride, padding=padding, bias=False),
            BatchNorm2d(C_out, affine=affine),
        )


class DilConv(nn.Sequential):
    def __init__(self, C_in, C_out, kernel, stride, padding, dilation, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            Conv2d(C_in, C_in, kernel, stride, padding, dilation=dilation, groups=C_in, bias=False),
            Conv2d(C_in, C_out, 1, bias=False),
            BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        relu, conv = self[0], self[1]
        if type(relu) is nn.ReLU and type(conv) is Conv2d and conv._fast(x):  # keep x, not relu(x): the BN before keeps x
            h = _ConvBackward.apply(x, conv.weight, True, conv.stride, conv.padding, conv.dilation, conv.groups)
        else:
            h = conv(relu(x))
        return self[3](self[2](h))


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convolutions (DARTS ``sep_conv``)."""

    def __init__(self, C_in, C_out, kernel, stride, padding, affine=True):
        super().__init__(
            DilConv(C_in, C_in, kernel, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel, 1, padding, 1, affine),
        )


class FactorizedConv(nn.Sequential):
    """1xk then kx1 convolution (S_o ``conv_3x1_1x3``, ``conv_7x1_1x7``)."""

    def __init__(self, C, k, stride, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            Conv2d(C, C, (1, k), stride=(1, stride), padding=(0, k // 2), bias=False),
            Conv2d(C, C, (k, 1), stride=(stride, 1), padding=(k // 2, 0), bias=False),
            BatchNorm2d(C, affine=affine),
        )


class Bottleneck(nn.Sequential):
    """1x1 reduce (C/4) -> 3x3 -> 1x1 expand, as in ResNet50's bottleneck (S_o ``bottleneck_1x3x1``)."""

    def __init__(self, C, stride, affine=True):
        mid = max(C // 4, 1)
        super().__init__(
            ReLUConvBN(C, mid, 1, 1, 0, affine),
            ReLUConvBN(mid, mid, 3, stride, 1, affine),
            ReLUConvBN(mid, C, 1, 1, 0, affine),
        )


class Zero(nn.Module):
    """The ``none`` op. Mixed ops skip it (its output is 0), so it costs nothing there."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        return torch.zeros_like(x)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset stride-2 1x1 convolutions (DARTS)."""

    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = Conv2d(C_in, C_out - C_out // 2, 1, stride=2, bias=False)
        self.bn = BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        y = x[:, :, 1:, 1:] if x.shape[-1] > 1 else x
        a = self.conv_1(x)
        b = self.conv_2(y)
        if b.shape[-2:] != a.shape[-2:]:  # odd sizes: pad the shifted branch
            b = nn.functional.pad(b, (0, a.shape[-1] - b.shape[-1], 0, a.shape[-2] - b.shape[-2]))
        return self.bn(torch.cat([a, b], dim=1))


class _MaxPoolRecomputed(torch.autograd.Function):
    """max_pool2d whose backward recomputes the argmax from the input instead of keeping the int64
    indices (twice the bytes of the float32 output). In a mixed op the input is kept anyway (the
    average pool beside it saves it), so this drops ~7 % of what a DARTS supernet keeps for backward
    at the price of one pooling pass in backward; the gradient is the same (same argmax, same ties)."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        ctx.save_for_backward(x)
        ctx.args = kernel, stride, padding
        return F.max_pool2d(x, kernel, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        k, s, p = ctx.args
        _, idx = F.max_pool2d(x, k, s, p, return_indices=True)
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, k, s, p, [1, 1], False, idx), None, None, None


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that keeps its input rather than the indices for backward (without dilation
    or ceil mode; with them, or ``return_indices``, it is plain ``nn.MaxPool2d``)."""

    def forward(self, x):
        plain = self.return_indices or self.ceil_mode or _pair(self.dilation) != (1, 1)
        if torch.is_grad_enabled() and x.requires_grad and not plain:
            k, s, p = _pair(self.kernel_size), _pair(self.stride or self.kernel_size), _pair(self.padding)
            return _MaxPoolRecomputed.apply(x, list(k), list(s), list(p))
        return super().forward(x)


def _pool(kind: str, C: int, stride: int, affine: bool) -> nn.Module:
    pool = (
        MaxPool2d(3, stride=stride, padding=1)
        if kind == "max"
        else nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    )
    return pool


def _skip(C, stride, affine):
    return nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine)


Factory = Callable[[int, int, bool], nn.Module]

#: DARTS space S (K = 7 + ``none``), (Liu et al., "DARTS", ICLR 2019).
DARTS_OPS: dict[str, Factory] = {
    "none": lambda C, s, affine: Zero(s),
    "max_pool_3x3": lambda C, s, affine: _pool("max", C, s, affine),
    "avg_pool_3x3": lambda C, s, affine: _pool("avg", C, s, affine),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda C, s, affine: SepConv(C, C, 3, s, 1, affine),
    "sep_conv_5x5": lambda C, s, affine: SepConv(C, C, 5, s, 2, affine),
    "dil_conv_3x3": lambda C, s, affine: DilConv(C, C, 3, s, 2, 2, affine),
    "dil_conv_5x5": lambda C, s, affine: DilConv(C, C, 5, s, 4, 2, affine),
}

#: D-DARTS/DARTOpti space S_o: S without ``none`` plus five ResNet/Xception-style ops (12 ops).
S_O_OPS: dict[str, Factory] = {
    **{k: v for k, v in DARTS_OPS.items() if k != "none"},
    "conv_3x1_1x3": lambda C, s, affine: FactorizedConv(C, 3, s, affine),
    "conv_7x1_1x7": lambda C, s, affine: FactorizedConv(C, 7, s, affine),
    "simple_conv_1x1": lambda C, s, affine: ReLUConvBN(C, C, 1, s, 0, affine),
    "simple_conv_3x3": lambda C, s, affine: ReLUConvBN(C, C, 3, s, 1, affine),
    "bottleneck_1x3x1": lambda C, s, affine: Bottleneck(C, s, affine),
}

CNN_OP_SETS: dict[str, dict[str, Factory]] = {"darts": DARTS_OPS, "darts-o": S_O_OPS}

#: ops whose search-time output gets a parameter-free BatchNorm (DARTS MixedOp does this for pools)
POOLS = ("max_pool_3x3", "avg_pool_3x3")


# -- MLP ops (NASiam heads) ---------------------------------------------------------------------
# Each factory is ``f(d_in, d_out, bn) -> nn.Module`` mapping (N, d_in) to (N, d_out); ``bn=False``
# drops the BatchNorm (NASiam: BN after every op except the predictor's last layer).


def resize_features(x: torch.Tensor, d_out: int) -> torch.Tensor:
    """Parameter-free width change of (N, d) features by 1-D adaptive average pooling (identity if equal)."""
    if x.shape[1] == d_out:
        return x
    return nn.functional.adaptive_avg_pool1d(x.unsqueeze(1), d_out).squeeze(1)


class LinearBNAct(nn.Sequential):
    """linear -> BN -> activation (NASiam MLP space S)."""

    def __init__(self, d_in: int, d_out: int, act: Callable[[], nn.Module], bn: bool = True):
        super().__init__(nn.Linear(d_in, d_out, bias=not bn), *([nn.BatchNorm1d(d_out)] if bn else []), act())


class Pool1d(nn.Module):
    """1-D max/avg pooling of size 3 (stride 1) along the feature axis, resized to d_out, then BN."""

    def __init__(self, kind: str, d_in: int, d_out: int, bn: bool = True):
        super().__init__()
        self.kind, self.d_out = kind, d_out
        self.bn = nn.BatchNorm1d(d_out) if bn else nn.Identity()

    def forward(self, x):
        x = x.unsqueeze(1)
        x = nn.functional.max_pool1d(x, 3, 1, 1) if self.kind == "max" else nn.functional.avg_pool1d(x, 3, 1, 1, count_include_pad=False)
        return self.bn(resize_features(x.squeeze(1), self.d_out))


class IdentityMLP(nn.Module):
    """Identity (a parameter-free resize where the layer changes the width)."""

    def __init__(self, d_out: int):
        super().__init__()
        self.d_out = d_out

    def forward(self, x):
        return resize_features(x, self.d_out)


MLPFactory = Callable[[int, int, bool], nn.Module]

#: NASiam MLP space S (7 ops), (Heuillet et al., NASiam; Heuillet 2023 thesis ch. 5).
MLP_OPS: dict[str, MLPFactory] = {
    "linear_relu": lambda i, o, bn: LinearBNAct(i, o, nn.ReLU, bn),
    "linear_hardswish": lambda i, o, bn: LinearBNAct(i, o, nn.Hardswish, bn),
    "linear_silu": lambda i, o, bn: LinearBNAct(i, o, nn.SiLU, bn),
    "linear_elu": lambda i, o, bn: LinearBNAct(i, o, nn.ELU, bn),
    "max_pool_3": lambda i, o, bn: Pool1d("max", i, o, bn),
    "avg_pool_3": lambda i, o, bn: Pool1d("avg", i, o, bn),
    "identity": lambda i, o, bn: IdentityMLP(o),
}

#: NASiam S' = S without the two pools (the paper's ablation).
MLP_OPS_NO_POOL: dict[str, MLPFactory] = {k: v for k, v in MLP_OPS.items() if "pool" not in k}

MLP_OP_SETS: dict[str, dict[str, MLPFactory]] = {"S": MLP_OPS, "S'": MLP_OPS_NO_POOL}
