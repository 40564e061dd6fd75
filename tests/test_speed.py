"""Speed and memory options of the darts supernet and the gradient strategies (issue 7).

Every option that claims "same math" is checked against the plain computation on a tiny supernet;
PC-DARTS partial channels and edge normalisation against a hand computation.
"""
import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import dnas
from dnas.errors import DnasError
from dnas.space import Task
from dnas.spaces.darts import MixedOp, channel_shuffle
from dnas.spaces.ops import CNN_OP_SETS
from dnas.testing import check_space

TINY = dict(C=4, layers=3, nodes=2)
TASK = Task((3, 8, 8), 4)


def _batch(seed=1, n=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


def _net(**options):
    torch.manual_seed(0)
    return dnas.create_space("darts", **TINY, **options).supernet(TASK).train()


def _grads(net, batch):
    net.zero_grad(set_to_none=True)
    net.loss(batch)["loss"].backward()
    return {n: p.grad.clone() for n, p in net.named_parameters()}


def test_checkpoint_cells_gives_the_plain_gradients_and_bn_statistics():
    plain, ckpt = _net(), _net(checkpoint_cells=True)
    ckpt.load_state_dict(plain.state_dict())
    batch = _batch()
    g0, g1 = _grads(plain, batch), _grads(ckpt, batch)
    assert g0.keys() == g1.keys()
    for n in g0:
        assert torch.allclose(g0[n], g1[n], atol=1e-6, rtol=0), n
    assert any(n.startswith("alphas.") and g0[n].abs().sum() > 0 for n in g0)
    # the recomputation in backward must not update the BN running statistics a second time
    for (n, b0), b1 in zip(plain.named_buffers(), ckpt.buffers()):
        assert torch.equal(b0, b1), n


def test_lean_mixed_op_equals_the_naive_sum_over_all_ops():
    """dnas skips `none` and shares relu(x) per state; the benchmark's reference sums every op."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.bench_darts import _reference_classes

    net = _net()
    space = net.space
    ref = _reference_classes()(space, TASK).train()
    ref.load_state_dict(net.state_dict())
    x, y = _batch()
    out, out_ref = net(x), ref(x)
    assert torch.allclose(out, out_ref, atol=1e-6)
    # the pools of the edges leaving one state are computed once; every edge's BatchNorm still
    # ends with the running statistics it would have computed itself
    ref_buffers = dict(ref.named_buffers())
    for name, b in net.named_buffers():
        assert torch.allclose(b, ref_buffers[name], atol=1e-6, rtol=1e-5), name
    g = torch.autograd.grad(F.cross_entropy(out, y), net.arch_parameters())
    g_ref = torch.autograd.grad(F.cross_entropy(out_ref, y), list(ref.alphas.values()))
    for a, b in zip(g, g_ref):
        assert torch.allclose(a, b, atol=1e-7)
    assert all(float(a.abs().sum()) > 0 for a in g)


def test_channels_last_output_equals_the_default_layout():
    plain, nhwc = _net(), _net(channels_last=True)
    nhwc.load_state_dict(plain.state_dict())
    assert nhwc.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    x, _ = _batch()
    assert torch.allclose(plain(x), nhwc(x), atol=1e-5)


def test_compile_unavailable_fails_in_one_line(monkeypatch):
    def broken(fn, *a, **k):
        raise RuntimeError("no C++ compiler found\nlong trace...")

    monkeypatch.setattr(torch, "compile", broken)
    net = _net(compile=True)
    with pytest.raises(DnasError, match="torch.compile is unavailable here \\(no C\\+\\+ compiler found\\); set space.compile=false"), \
            pytest.warns(UserWarning, match="space.compile=true on the CPU: the first steps compile for about 3 minutes"):
        net(_batch()[0])


def _step(amp, order=1):
    net = _net()
    strategy = dnas.create_strategy("darts", amp=amp, order=order)
    net.relaxation = strategy.relaxation
    state = strategy.init_state(net)
    dtypes = []
    hook = net.stem[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    before = [a.detach().clone() for a in net.arch_parameters()]
    metrics = strategy.step(net, _batch(1, 8), _batch(2, 8), state)
    hook.remove()
    moved = max(float((a.detach() - b).abs().max()) for a, b in zip(net.arch_parameters(), before))
    return metrics, moved, dtypes


@pytest.mark.parametrize("order", [1, 2])
def test_bf16_autocast_step_runs_in_bf16_and_moves_alpha(order):
    metrics, moved, dtypes = _step("bf16", order)
    assert torch.bfloat16 in dtypes  # the step's forward ran under autocast
    assert moved > 1e-5  # Adam's first step moves α by about its lr (3e-4)
    assert all(torch.isfinite(v).all() for v in metrics.values())
    _, _, plain = _step("none")
    assert set(plain) == {torch.float32}


def test_fp16_step_uses_a_scaler_and_fp16_second_order_is_refused():
    metrics, moved, dtypes = _step("fp16")
    assert torch.float16 in dtypes and moved > 1e-5
    with pytest.raises(DnasError, match="amp fp16"):
        dnas.create_strategy("darts", amp="fp16", order=2)


def test_partial_channels_supernet_conforms():
    g = check_space("darts", partial_channels=2)
    assert g.space == "darts"
    check_space("ddarts", partial_channels=2)
    with pytest.raises(DnasError, match="partial_channels"):
        dnas.create_space("darts", C=4, partial_channels=3)


def test_partial_mixed_op_by_hand():
    """PC-DARTS eq. (2): ops on the first C/K channels, the rest bypass, then a K-group shuffle."""
    torch.manual_seed(0)
    table = CNN_OP_SETS["darts"]
    op = MixedOp(8, 1, tuple(table), table, partial=4)
    x = torch.randn(2, 8, 6, 6)
    w = torch.softmax(torch.randn(len(table)), 0)
    mixed = sum(w[i] * op.ops[i](x[:, :2]) for i in range(1, len(table)))
    expected = torch.cat([mixed, x[:, 2:]], 1)
    expected = expected.view(2, 4, 2, 6, 6).transpose(1, 2).reshape(2, 8, 6, 6)
    assert torch.allclose(op(x, w), expected, atol=1e-6)
    assert torch.equal(channel_shuffle(torch.arange(6.0).view(1, 6, 1, 1), 3).flatten(), torch.tensor([0.0, 2, 4, 1, 3, 5]))
    red = MixedOp(8, 2, tuple(table), table, partial=2)
    assert red(x, w).shape == (2, 8, 3, 3)


def test_edge_normalisation_sums_to_one_per_node_and_ranks_edges():
    net = _net(partial_channels=2)
    assert "normal_beta" in dict(net.named_arch_parameters())
    assert [p.shape for p in net.arch_groups()["normal"]] == [torch.Size([5, 8]), torch.Size([5])]
    with torch.no_grad():
        net.alphas["normal_beta"].copy_(torch.randn(5))
    b = net.edge_weights("normal")
    assert torch.allclose(b[:2].sum(), torch.tensor(1.0)) and torch.allclose(b[2:].sum(), torch.tensor(1.0))
    # node 1 = rows 2, 3, 4 (edges from states 0, 1, 2): α prefers edge0, β flips the ranking
    with torch.no_grad():
        a = net.alphas["normal"]
        a.zero_()
        a[2, 4] = 3.0  # node1.edge0: sep_conv_3x3, softmax weight ≈ 0.74
        a[3, 5] = 2.0  # node1.edge1: sep_conv_5x5, ≈ 0.51
        a[4, 6] = 1.0  # node1.edge2: dil_conv_3x3, ≈ 0.28
        net.alphas["normal_beta"][2:] = torch.tensor([-2.0, 2.0, 1.5])  # softmax ≈ 0.011, 0.615, 0.373
    w = net.decision_weights()
    sm = torch.softmax(net.alphas["normal"].detach(), -1)
    beta = net.edge_weights("normal").detach()
    assert torch.allclose(w["normal.node1.edge1"], sm[3] * beta[3])
    g = net.genotype("darts")
    kept = {e for e in range(3) if g.choices[f"normal.node1.edge{e}"]}
    assert kept == {1, 2}  # by β·w: 0.32 and 0.10 beat edge0's 0.74 · 0.011 = 0.008
    assert g.choices["normal.node1.edge1"] == ("sep_conv_5x5",)
    # without edge normalisation the same α keep edge0
    plain = _net()
    with torch.no_grad():
        plain.alphas["normal"].copy_(net.alphas["normal"])
    assert plain.genotype("darts").choices["normal.node1.edge0"] == ("sep_conv_3x3",)


def _saved_mb(net, batch) -> float:
    """MB of the distinct tensors autograd saves for backward during ``net.loss(batch)``."""
    seen = {}

    def pack(t):
        seen[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = net.loss(batch)["loss"]
    return loss, sum(seen.values()) / 2**20


@pytest.mark.parametrize("which", ["arch", "weights"])
def test_grad_only_gives_the_same_gradients_and_saves_less(which):
    net, batch = _net(), _batch(n=8)
    net.weight_parameters()[3].requires_grad_(False)  # a weight the user froze stays frozen
    params = net.arch_parameters() if which == "arch" else [p for p in net.weight_parameters() if p.requires_grad]
    loss, full = _saved_mb(net, batch)
    g_plain = torch.autograd.grad(loss, params)
    with net.grad_only(params):
        loss, lean = _saved_mb(net, batch)
        g_lean = torch.autograd.grad(loss, params)
        assert not any(p.requires_grad for p in net.parameters() if all(p is not q for q in params))
    for a, b in zip(g_plain, g_lean):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-5)
    if which == "arch":
        assert lean < 0.7 * full  # measured: 0.49 (no conv input, no activation kept for the frozen weights)
    else:  # the ops' batch norms keep their outputs, which is what ∇α needs: nothing more to drop
        assert lean <= full
    user_frozen = [p for p in net.parameters() if not p.requires_grad]
    assert len(user_frozen) == 1 and user_frozen[0] is net.weight_parameters()[3]
    with pytest.raises(RuntimeError, match="boom"), net.grad_only(params):
        raise RuntimeError("boom")
    assert [p for p in net.parameters() if not p.requires_grad] == user_frozen  # restored after an error too


def test_channels_last_is_on_by_default_on_cpu_and_can_be_turned_off():
    layouts = {}
    for option in (None, False, True):
        net = _net() if option is None else _net(channels_last=option)
        seen = []
        hook = net.cells[0].edges[0].ops[4].register_forward_hook(lambda m, i, o: seen.append(o))
        layouts[option] = (net(_batch()[0]), seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous())
        hook.remove()
    assert layouts[None][1] and layouts[True][1] and not layouts[False][1]
    assert torch.allclose(layouts[None][0], layouts[False][0], atol=1e-5)


def test_fp16_loss_scale_is_kept_in_the_loop_state():
    net = _net()
    strategy = dnas.create_strategy("darts", amp="fp16")
    net.relaxation = strategy.relaxation
    state = strategy.init_state(net)
    strategy.step(net, _batch(1, 8), _batch(2, 8), state)
    scaler = state.scalers["weights"]
    scaler.update(1234.0)  # a scale the default (65536) would not give back
    saved = state.state_dict()
    assert saved["grad_scalers"]["weights"]["scale"] == 1234.0
    resumed = dnas.create_strategy("darts", amp="fp16").init_state(net)
    resumed.load_state_dict(saved)
    assert resumed.scalers["weights"].get_scale() == 1234.0
    assert resumed.scalers["arch"].get_scale() == state.scalers["arch"].get_scale()
    scaler.update(7.0)  # a rollback: the scaler already exists and goes back to the saved scale
    state.load_state_dict(saved)
    assert state.scalers["weights"].get_scale() == 1234.0
    assert dnas.create_strategy("darts").init_state(net).scalers == {}  # no amp: no scaler


def test_dnas_bench_runs_the_suite_module_and_refuses_unknown_names(capfd):
    from dnas.cli import main

    assert main(["bench", "no_such_bench"]) == 2
    err = capfd.readouterr().err
    assert "unknown benchmark no_such_bench; choose from: compile, dario, darts, nasiam, shapley" in err


@pytest.mark.parametrize("args", [(3, 1, 1), (3, 2, 1), ((3, 2), (2, 1), (1, 0)), (2, None, 0)])
def test_max_pool_without_indices_has_torchs_gradient_and_keeps_less(args):
    from dnas.spaces.ops import MaxPool2d

    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    x[0, 0, :4, :4] = 1.0  # ties: the recomputed argmax must pick the same element
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = MaxPool2d(*args)(a), torch.nn.MaxPool2d(*args)(b)
    g = torch.randn_like(ya)
    assert torch.equal(ya, yb)
    assert torch.equal(torch.autograd.grad(ya, a, g)[0], torch.autograd.grad(yb, b, g)[0])
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.dtype) or t, lambda t: t):
        MaxPool2d(*args)(a)
    assert saved == [torch.float64]  # the input only, no int64 indices


def test_speed_flags_of_dnas_search_reach_the_space_and_strategy():
    from dnas.api import resolve
    from dnas.cli import build_parser
    from dnas.cli.search import _search_overlay

    def resolved(*flags):
        return resolve(_search_overlay(build_parser().parse_args(["search", "--space", "darts", "--strategy", "darts", *flags])))

    r = resolved("--amp", "bf16", "--compile", "--checkpoint-cells", "--no-channels-last", "--partial-channels", "4")
    cfg = r.space.config
    assert r.strategy.config.amp == "bf16"
    assert (cfg.compile, cfg.checkpoint_cells, cfg.channels_last, cfg.partial_channels) == (True, True, False, 4)
    plain = resolved().space.config
    assert (plain.compile, plain.checkpoint_cells, plain.channels_last, plain.partial_channels) == (False, False, None, 1)


def test_benchmark_table_renders_saved_records(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.table import main, tables

    rec = {"benchmark": "darts", "order": 1, "case": "dnas", "median_s": 1.2, "min_s": 1.1, "cpu_s_per_step": 2.3,
           "speedup_vs_reference": 1.4, "step_peak_mb": 155.2, "memory_ratio_vs_reference": 0.72,
           "alpha_grads_match": False, "config": {"layers": 5}, "machine": "box, 2 CPU cores", "when": "2026-12-02 06:00 UTC"}
    text = tables([rec, {"benchmark": "unknown"}])
    assert "**darts** (layers=5)" in text
    assert "| 1 | dnas | 1.2 (1.1) | 2.3 | 1.4 | 155.2 | 0.72 | **no** |" in text
    assert "Measured 2026-12-02 06:00 UTC on box, 2 CPU cores." in text
    res = tmp_path / "box-cpu.json"
    res.write_text(json.dumps([rec]))
    (tmp_path / "gpu-torchrun.json").write_text("{}")  # gpu.sh's summaries are not tables
    out = tmp_path / "performance.md"
    assert main([str(res), "--markdown", "--out", str(out)]) == 0
    page = out.read_text()
    assert page.startswith("# Performance") and "### `box-cpu.json`" in page and "has not run on a GPU yet" in page
    assert "| 1 | dnas | 1.2 (1.1)" in page


def test_benchmarks_dry_run_prints_the_plan_without_running(capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.__main__ import main

    assert main(["--device", "cuda", "--dry-run", "darts", "shapley"]) == 0  # no GPU needed to plan
    plan = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["benchmark"] for p in plan] == ["darts", "shapley"]
    assert all(p["dry_run"] and p["device"] == "cuda" and p["quick"] is False for p in plan)
    assert plan[0]["config"]["layers"] == 8 and plan[0]["config"]["batch"] == 64  # the DARTS CIFAR config on a GPU
    assert main(["--dry-run", "darts"]) == 0
    assert json.loads(capsys.readouterr().out)["quick"] is True  # the CPU default
    assert main(["--dry-run"]) == 0
    assert "compile" not in {json.loads(x)["benchmark"] for x in capsys.readouterr().out.splitlines()}  # opt-in on the CPU
    assert main(["--dry-run", "--device", "cuda"]) == 0
    assert "compile" in {json.loads(x)["benchmark"] for x in capsys.readouterr().out.splitlines()}
    with pytest.raises(SystemExit):
        main(["--dry-run", "nope"])


def test_step_timer_measures_a_call():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import time

    from benchmarks.common import step_timer

    assert step_timer("cpu")(lambda: time.sleep(0.05)) >= 0.05


def test_gpu_script_dry_run_lists_every_check():
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": "/tmp"}
    r = subprocess.run(["bash", str(root / "benchmarks/gpu.sh"), "--dry-run"], check=False, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    cmds = [line[2:] for line in r.stderr.splitlines() if line.startswith("+ ")]
    assert "-m benchmarks --device cuda --full --save" in cmds[0]
    searches = [c for c in cmds if "-m dnas search" in c]
    assert len(searches) == 2 and all("--amp bf16" in c and "--epochs 2" in c for c in searches)
    assert "--channels-last" in searches[0] and "--no-channels-last" in searches[1]
    assert any("torch.distributed.run --nproc_per_node 1" in c and "--backend nccl" in c for c in cmds)


def test_gpu_check_helpers_write_json(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.gpu_check import make_images, summarize

    assert make_images(tmp_path / "img", classes=2, per_class=2, size=32) == 4
    from PIL import Image

    assert Image.open(next((tmp_path / "img" / "class00").iterdir())).size == (32, 32)
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.jsonl").write_text(json.dumps({"epoch": 2, "val_loss": 1.5, "dominant_ops": {"a": 1}}) + "\n")
    (run / "genotype.yaml").write_text("x")
    rec = summarize(run, "search", 12.3, tmp_path / "out.json")
    assert rec == json.loads((tmp_path / "out.json").read_text())
    assert rec["finished"] and rec["epochs"] == 2 and rec["last"] == {"epoch": 2, "val_loss": 1.5}


@pytest.mark.slow
def test_gpu_script_runs_on_the_cpu(tmp_path):
    """benchmarks/gpu.sh end to end, CPU-sized: the image folder, two searches, torchrun (gloo).
    Without autocast: the 3-cell, 60-image CPU search diverges (val_loss nan) under bf16."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "QUICK": "1", "BACKEND": "gloo", "SUITE": "none", "AMP": "none",
           "RESULTS": str(tmp_path / "r"), "WORK": str(tmp_path / "w"), "PYTHONPATH": str(root)}
    r = subprocess.run(["bash", str(root / "benchmarks/gpu.sh")], check=False, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    out = {p.name: json.loads(p.read_text()) for p in (tmp_path / "r").glob("*.json")}
    assert set(out) == {"gpu-search-none-channels-last.json", "gpu-search-none-nchw.json", "gpu-torchrun.json"}
    assert all(out[k]["finished"] for k in out if k.startswith("gpu-search"))
    t = out["gpu-torchrun.json"]
    assert t["backend"] == "gloo" and t["world_size"] == 1 and t["all_reduce_ok"] and t["step_finite"]


def _set_lean(net, on: bool):
    for m in net.modules():
        if hasattr(m, "lean"):
            m.lean = on


@pytest.mark.parametrize("which", ["arch", "weights"])
def test_lean_convolution_and_batch_norm_keep_less_for_the_same_gradients(which):
    """dnas.spaces.ops: a frozen convolution keeps no input, a γ-free batch norm keeps its output and
    the ReLU after it is recomputed from that output. Same gradients and running statistics as torch's modules."""
    saved, grads, stats = {}, {}, {}
    for lean in (True, False):
        net, batch = _net(), _batch(n=8)
        net = net.double()
        batch = (batch[0].double(), batch[1])
        _set_lean(net, lean)
        params = net.arch_parameters() if which == "arch" else net.weight_parameters()
        with net.grad_only(params):
            loss, saved[lean] = _saved_mb(net, batch)
            grads[lean] = torch.autograd.grad(loss, params)
        stats[lean] = [b.clone() for b in net.buffers()]
    for a, b in zip(grads[True], grads[False]):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(stats[True], stats[False]):
        assert torch.equal(a, b)
    # measured on this supernet: 0.59 (α step), 0.88 (weight step)
    assert saved[True] < (0.7 if which == "arch" else 0.95) * saved[False]


def test_lean_modules_step_aside_where_they_do_not_apply():
    """eval, no grad, autocast and double backward get torch's own modules (or a clear error)."""
    from dnas.spaces.ops import BatchNorm2d, Conv2d

    conv, bn = Conv2d(4, 4, 3, padding=1, bias=False).requires_grad_(False), BatchNorm2d(4, affine=False)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    assert type(conv(x).grad_fn).__name__ == "_ConvBackwardBackward"  # the lean paths
    assert type(bn(x).grad_fn).__name__ == "_BatchNormKeepsOutputBackward"
    assert type(conv.eval()(x).grad_fn).__name__ == "ConvolutionBackward0"
    with torch.no_grad():
        assert torch.equal(conv(x), torch.nn.functional.conv2d(x, conv.weight, padding=1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert type(conv.train()(x).grad_fn).__name__ == "ConvolutionBackward0"
    assert type(bn.eval()(x).grad_fn).__name__ == "NativeBatchNormBackward0"
    y = bn.train()(x)
    (g,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|twice"):
        g.sum().backward()


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("relu", [False, True])
def test_lean_convolution_gradients_match_aten_on_every_shape(stride, relu):
    """The depthwise input gradient as a forward convolution (and the fused ReLU) against torch's own
    convolution backward, float64, over kernels, dilations, paddings (cropping included), odd sizes,
    both layouts, frozen and trained weights."""
    import itertools

    import torch.nn.functional as F

    from dnas.spaces.ops import _ConvBackward

    torch.manual_seed(0)
    C = 3
    for size, (k, p, d), frozen, nhwc in itertools.product(
            (1, 2, 5, 9), ((3, 1, 1), (5, 2, 1), (3, 2, 2), (5, 4, 2), (3, 0, 1), (1, 0, 1), (3, 3, 1)), (False, True), (False, True)):
        if size + 2 * p < d * (k - 1) + 1:
            continue
        x = torch.randn(2, C, size, size, dtype=torch.float64)
        x = x.to(memory_format=torch.channels_last) if nhwc else x
        w = torch.randn(C, 1, k, k, dtype=torch.float64)
        x1, w1 = x.clone().requires_grad_(), w.clone().requires_grad_(not frozen)
        x2, w2 = x.clone().requires_grad_(), w.clone().requires_grad_(not frozen)
        y1 = F.conv2d(F.relu(x1) if relu else x1, w1, None, stride, p, d, C)
        y2 = _ConvBackward.apply(x2, w2, relu, (stride, stride), (p, p), (d, d), C)
        g = torch.randn_like(y1)
        y1.backward(g)
        y2.backward(g)
        assert torch.equal(y1, y2)
        assert x2.grad.shape == x.shape and torch.allclose(x1.grad, x2.grad, rtol=1e-12, atol=1e-13), (size, k, p, d)
        if not frozen:
            assert torch.allclose(w1.grad, w2.grad, rtol=1e-12, atol=1e-13)


@pytest.mark.slow
def test_shapley_alpha_step_with_compiled_edges_is_the_eager_one_in_float64():
    """The pass tree runs with compiled edges (retain_graph through shared prefixes) and gives eager's α gradient:
    equal to 1e-12 in float64 (in float32 inductor's other summation order, amplified by the ablation loss's
    differences of losses, leaves about 1e-4 relative)."""
    torch.set_default_dtype(torch.float64)
    try:
        grads = []
        for compiled in (False, True):
            torch.manual_seed(0)
            net = dnas.create_space("ddarts", C=4, layers=3, nodes=2, compile=compiled).supernet(TASK).train()
            strategy = dnas.create_strategy("shapley")
            net.relaxation = strategy.relaxation
            state = strategy.init_state(net)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the CPU compile notice
                strategy.arch_step(net, _batch(1, 8), _batch(2, 8), state)
            grads.append([a.grad.clone() for a in net.arch_parameters() if a.grad is not None])
        assert len(grads[0]) == len(grads[1]) == 3  # one α tensor per cell, each with its own gradient
        for a, b in zip(*grads):
            assert a.abs().max() > 0 and torch.allclose(a, b, rtol=1e-10, atol=1e-14)
    finally:
        torch.set_default_dtype(torch.float32)


def _dies():
    raise SystemExit(3)


def test_a_benchmark_child_that_dies_is_an_error_not_a_hang():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.common import in_fresh_process

    with pytest.raises(RuntimeError, match="died in its own process \\(exit code 3\\)"):
        in_fresh_process(_dies)


def test_shapley_pass_floor_counts_the_tree_passes_by_hand():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.bench_shapley import cell_costs, pass_floor

    # 2 cells: FairDARTS f0 b0 f1 b1 = 4; the tree: trunk f0 f1, u and v back through cell 0 and u
    # through cell 1 (3), branch 0 runs cell 1 (f1 b1) = 7
    assert pass_floor({"f": [1.0, 1.0], "b": [1.0, 1.0], "stem": 0.0, "head": 0.0}) == pytest.approx(7 / 4)
    # with a stem (once in both) and a head (once in FairDARTS, n + 1 times in the tree): 11 / 6
    assert pass_floor({"f": [1.0, 1.0], "b": [1.0, 1.0], "stem": 1.0, "head": 1.0}) == pytest.approx(11 / 6)
    # 3 cells with the later ones cheaper: branches 0 and 1 run cells 1-2 and 2
    c = {"f": [4.0, 2.0, 1.0], "b": [4.0, 2.0, 1.0], "stem": 0.0, "head": 0.0}
    assert pass_floor(c) == pytest.approx((7 + 2 * 6 + 1 + 6 + 2) / 14)
    measured = cell_costs(dict(layers=3, C=4, nodes=2, batch=4, size=8, repeats=1), "cpu")
    assert len(measured["f"]) == len(measured["b"]) == 3 and min(measured["f"] + measured["b"]) > 0
    assert pass_floor(measured) > 1.5  # 3 cells: at least one branch and a second trunk cotangent


@pytest.mark.slow
def test_compiled_edges_keep_the_lean_depthwise_gradient_and_the_gradients(monkeypatch):
    """Inside torch.compile the lean modules stay (their depthwise input gradient is what made a compiled
    step 0.58x eager without them): the compiled backward is traced through _depthwise_input_grad, and α and
    weight gradients equal the eager ones."""
    import dnas.spaces.ops as ops

    calls = []
    real = ops._depthwise_input_grad
    monkeypatch.setattr(ops, "_depthwise_input_grad", lambda *a: calls.append(1) or real(*a))

    def grads(compiled):
        torch.manual_seed(0)
        net = dnas.create_space("darts", C=4, layers=2, nodes=2, compile=compiled).supernet(TASK).train()
        x, y = _batch()
        out = []
        for params in (list(net.arch_parameters()), list(net.weight_parameters())):
            with net.grad_only(params):
                out.append(torch.autograd.grad(net.loss((x, y))["loss"], params))
        return out

    with pytest.warns(UserWarning, match="space.compile=true on the CPU"):
        compiled = grads(True)
    assert calls  # the compiled backward graphs call the lean depthwise gradient
    for a, b in zip(grads(False), compiled):
        for u, v in zip(a, b):
            assert torch.allclose(u, v, rtol=1e-4, atol=1e-6)
