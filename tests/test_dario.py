"""DARIO: gates (eq. 6.1, 6.2), physical pruning, proxies (Table 6.1), the synflow step (6.5, 6.6)."""
import json
import math
import warnings

import pytest
import torch

import dnas
from dnas.engine.run import Run
from dnas.errors import DnasError
from dnas.spaces.dario import apply_pruning, build_model
from dnas.strategies.proxies import PROXIES, get_proxy
from dnas.strategies.proxy import ProxyConfig, proxy_objective

pytestmark = pytest.mark.filterwarnings("ignore:pruning a randomly initialised")

KW = {"img_size": 32, "patch_size": 8, "depth": 4, "embed_dim": 24, "num_heads": 3, "num_classes": 10}
TINY = {"model": "vit_tiny_patch16_224", "model_kwargs": KW}
TOY = {"model": "dario_toy:toy", "blocks": "layers", "input_size": [1, 1, 2]}


def supernet(granularity="both", **cfg):
    space = dnas.create_space("dario", **{**TINY, "granularity": granularity, **cfg})
    return space, space.supernet(space.tiny_task)


def original_of(space, net):
    m = build_model(space.config, load=False)
    m.load_state_dict(net.model.state_dict())
    return m.eval()


def set_gates(net, key, values):
    with torch.no_grad():
        net.alphas[key].copy_(torch.tensor([math.inf if v else -math.inf for v in values]).view(-1, 1))


def x_batch(n=2):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def test_gates_open_reproduce_the_original_model_bitwise():
    space, net = supernet("both")
    net.eval()
    for key in net.alphas:
        set_gates(net, key, [1] * net.alphas[key].shape[0])
    x = x_batch()
    with torch.no_grad():
        assert torch.equal(net(x), original_of(space, net)(x))


def test_a_closed_block_equals_removing_it():
    space, net = supernet("block")
    net.eval()
    set_gates(net, "blocks", [1, 0, 1, 1])
    removed = apply_pruning(original_of(space, net), None, [0, 2, 3], {})
    assert len(removed.blocks) == 3
    x = x_batch()
    with torch.no_grad():
        assert torch.allclose(net(x), removed(x), atol=1e-6, rtol=0)


def test_half_open_block_gate_is_eq_6_1():
    space, net = supernet("block")
    net.eval()
    with torch.no_grad():
        net.alphas["blocks"].fill_(math.inf)
        net.alphas["blocks"][3] = 0.0  # σ = 1/2 on the last block
    orig = original_of(space, net)
    x = x_batch()
    with torch.no_grad():
        h = orig.patch_embed(x)
        h = orig.norm_pre(orig.patch_drop(orig._pos_embed(h)))
        for b in orig.blocks[:3]:
            h = b(h)
        h = 0.5 * orig.blocks[3](h) + 0.5 * h  # H̃ = σ H_m + (1 − σ) H_{m−1}
        ref = orig.forward_head(orig.norm(h))
        assert torch.allclose(net(x), ref, atol=1e-5)


@pytest.mark.parametrize("granularity", ["block", "head", "both"])
def test_physically_pruned_equals_gated_with_hard_gates(granularity, tmp_path):
    space, net = supernet(granularity)
    net.eval()
    blocks = [1, 0, 1, 1]
    heads = [1, 1, 1,  0, 1, 1,  0, 0, 0,  1, 0, 1]  # block2 loses every head (attention -> proj bias)
    if "blocks" in net.alphas:
        set_gates(net, "blocks", blocks)
    if "heads" in net.alphas:
        set_gates(net, "heads", heads)
    g = net.genotype("threshold", threshold=0.65)
    kept, kept_heads = space.kept(g)
    assert kept == ([0, 2, 3] if granularity != "head" else [0, 1, 2, 3])
    if granularity != "block":
        assert kept_heads[2] == [] and kept_heads[3] == [0, 2]
    pruned = space.build_network(g, model=original_of(space, net))
    n_orig = sum(p.numel() for p in net.model.parameters())
    assert sum(p.numel() for p in pruned.parameters()) < n_orig  # smaller, not masked
    if granularity != "block":
        assert pruned.blocks[-1].attn.qkv.weight.shape == (3 * 2 * 8, 24)  # 2 heads of 8 kept
        assert pruned.blocks[-1].attn.proj.weight.shape == (24, 16)
    x = x_batch()
    with torch.no_grad():
        ref = net(x)
        assert not torch.allclose(original_of(space, net)(x), ref, atol=1e-3)  # the closed gates do act
        assert torch.allclose(pruned(x), ref, atol=1e-5, rtol=0)
        from dnas.tools.pruning import load_pruned, save_pruned

        save_pruned(pruned, space.config_dict(), kept, kept_heads, tmp_path)
        assert torch.allclose(load_pruned(tmp_path)(x), ref, atol=1e-5, rtol=0)


def test_all_ones_batch_of_b_is_b_times_one_sample():
    """The documented equivalence: R_SF over B identical samples = B · R_SF of one (eval mode)."""
    _, net = supernet("both")
    net.eval()
    w = [p for p in net.model.parameters()]
    g1 = torch.autograd.grad(net(torch.ones(1, 3, 32, 32)).sum(), w)
    g4 = torch.autograd.grad(net(torch.ones(4, 3, 32, 32)).sum(), w)
    for a, b in zip(g1, g4):
        assert torch.allclose(4 * a, b, rtol=1e-4, atol=1e-6)


# -- proxies --------------------------------------------------------------------------------------
def test_proxies_by_hand():
    t = [torch.tensor([[1.0, -2.0], [0.0, 3.0]]), torch.tensor([[0.5, -0.5]])]
    g = [torch.tensor([[1.0, 1.0], [2.0, 0.0]]), torch.tensor([[-2.0, 4.0]])]
    l0 = (3 + 2) / 2
    l1 = (6 + 1) / 2
    l2 = (math.sqrt(14) + math.sqrt(0.5)) / 2
    vals = [1, -2, 0, 3, 0.5, -0.5]
    mean = sum(vals) / 6
    var = sum((v - mean) ** 2 for v in vals) / 5
    syn = (1 - 2 + 0 + 0) + (-1 - 2)
    expect = {"l0": l0, "l1": l1, "l2": l2, "var": var, "synflow": syn, "synflow_norm": syn / 6,
              "l0-var": l0 - 0.5 * var, "l1-var": l1 - 0.5 * var, "l0+l1": l0 + 0.5 * l1}
    assert set(expect) == set(PROXIES)
    for name, v in expect.items():
        assert float(get_proxy(name)(t, g, 0.5)) == pytest.approx(v, rel=1e-6), name
    with pytest.raises(DnasError, match="unknown proxy 'varr'.*did you mean 'var'"):
        get_proxy("varr")


def toy_net(dtype=torch.float32):
    space = dnas.create_space("dario", **TOY)
    net = space.supernet(space.tiny_task).to(dtype)
    return space, net


def test_synflow_step_and_proxy_on_a_two_layer_toy_net_by_hand():
    _, net = toy_net(torch.float64)
    with torch.no_grad():
        net.alphas["blocks"].copy_(torch.tensor([[0.3], [-0.7]], dtype=torch.float64))
    cfg = ProxyConfig(gamma=0.01, batch_size=3, abs_params=False)  # the authors' code: signed θ
    W1, W2 = (l.weight.detach() for l in net.model.layers)
    g1, g2 = torch.sigmoid(torch.tensor([0.3, -0.7], dtype=torch.float64))
    one, eye = torch.ones(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    u = g1 * W1 @ one + (1 - g1) * one  # H̃_1 (eq. 6.1)
    v = (g2 * W2 + (1 - g2) * eye).T @ one  # ∂R/∂H̃_1
    dW2 = 3 * g2 * torch.outer(one, u)  # R_SF = B · 1ᵀ H̃_2
    dW1 = 3 * g1 * torch.outer(v, one)
    t1, t2 = W1 - 0.01 * dW1, W2 - 0.01 * dW2  # θ̃ = θ − γ ∂R/∂θ
    allv = torch.cat([t1.flatten(), t2.flatten()])
    assert float(proxy_objective(net, cfg).detach()) == pytest.approx(float(allv.var(unbiased=True)), rel=1e-10)
    cfg.proxy = "synflow"
    assert float(proxy_objective(net, cfg).detach()) == pytest.approx(float((dW1 * t1).sum() + (dW2 * t2).sum()), rel=1e-10)
    cfg.proxy, cfg.maximize = "l1", True
    assert float(proxy_objective(net, cfg).detach()) == pytest.approx(-float((t1.abs().sum() + t2.abs().sum()) / 2), rel=1e-10)


def _fd_check(net, cfg, eps=1e-6):
    alphas = net.arch_parameters()
    s = proxy_objective(net, cfg)
    grads = torch.autograd.grad(s, alphas)
    for a, ga in zip(alphas, grads):
        for i in range(a.numel()):
            with torch.no_grad():
                a.view(-1)[i] += eps
            sp = float(proxy_objective(net, cfg, create_graph=False))
            with torch.no_grad():
                a.view(-1)[i] -= 2 * eps
            sm = float(proxy_objective(net, cfg, create_graph=False))
            with torch.no_grad():
                a.view(-1)[i] += eps
            fd = (sp - sm) / (2 * eps)
            assert float(ga.view(-1)[i]) == pytest.approx(fd, rel=1e-5, abs=1e-12)
    return grads


@pytest.mark.parametrize("proxy", ["var", "synflow", "l2"])
def test_alpha_gradient_through_the_synflow_step_matches_finite_differences_toy(proxy):
    _, net = toy_net(torch.float64)
    with torch.no_grad():
        net.alphas["blocks"].normal_()
    grads = _fd_check(net, ProxyConfig(proxy=proxy, gamma=0.05, batch_size=2))
    assert any(float(g.abs().sum()) > 0 for g in grads)  # not the authors' in-place update (no path to α)


def test_alpha_gradient_matches_finite_differences_on_a_vit_with_heads():
    space = dnas.create_space("dario", **{**TINY, "granularity": "both",
                                          "model_kwargs": {**KW, "depth": 2, "img_size": 16, "num_classes": 3}})
    net = space.supernet(space.tiny_task).double().eval()
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_()
    from dnas.strategies.proxy import unfused_attention

    with unfused_attention(net):
        grads = _fd_check(net, ProxyConfig(gamma=1e-2, batch_size=1), eps=1e-5)
    assert all(float(g.abs().sum()) > 0 for g in grads)


# -- the strategy ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["gradient", "random"])
def test_search_never_changes_theta_and_restores_fused_attention(mode, tmp_path):
    _, net = supernet("both")
    theta = {k: v.clone() for k, v in net.model.state_dict().items()}
    alpha0 = [a.detach().clone() for a in net.arch_parameters()]
    fused = [m.fused_attn for m in net.model.modules() if hasattr(m, "fused_attn")]
    strat = dnas.create_strategy("proxy", iters=3, warm_start=2, mode=mode, gamma=0.1)
    with Run(tmp_path, progress=False) as run:
        g = strat.search(net, None, run)
        hist = run.history()
    for k, v in net.model.state_dict().items():
        assert torch.equal(v, theta[k]), k  # bitwise
    assert any(not torch.equal(a, b) for a, b in zip(net.arch_parameters(), alpha0))
    assert [m.fused_attn for m in net.model.modules() if hasattr(m, "fused_attn")] == fused
    assert len(hist) == 5 and {h["phase"] for h in hist} == ({"sample", "gradient"} if mode == "gradient" else {"sample"})
    assert g == net.genotype("threshold", threshold=0.65)


def test_gradient_steps_lower_the_proxy(tmp_path):
    _, net = toy_net()
    strat = dnas.create_strategy("proxy", iters=20, warm_start=0, gamma=0.1, batch_size=1)
    with Run(tmp_path, progress=False) as run:
        strat.search(net, None, run)
        hist = run.history()
    assert hist[-1]["proxy"] < hist[0]["proxy"]


def test_warm_start_keeps_the_best_sample(tmp_path):
    _, net = toy_net()
    strat = dnas.create_strategy("proxy", iters=0, warm_start=6, gamma=0.1)
    with Run(tmp_path, progress=False) as run:
        strat.search(net, None, run)
        hist = run.history()
    best = min(h["proxy"] for h in hist)
    assert float(proxy_objective(net, strat.config, create_graph=False)) == pytest.approx(best, rel=1e-6)


# -- models, weights, export ----------------------------------------------------------------------
def test_mae_vit_base_six_of_twelve_blocks_removed_is_43_3m():
    space = dnas.create_space("dario", model="mae-vit-base")
    with torch.device("meta"):
        m = build_model(space.config, load=False)
        before = sum(p.numel() for p in m.parameters())
        apply_pruning(m, None, [0, 1, 2, 3, 4, 5], {})
        after = sum(p.numel() for p in m.parameters())
    assert round(before / 1e6, 1) == 85.8 and round(after / 1e6, 1) == 43.3
    assert len(space.decisions()) == 12


def test_mobilevit_s_has_nine_transformer_blocks_of_four_heads():
    space = dnas.create_space("dario", model="mobilevit-s", granularity="both")
    assert space._heads() == [4] * 9
    assert len(space.decisions()) == 9 + 36


@pytest.mark.parametrize("suffix", ["safetensors", "pt"])
def test_weights_file_is_loaded(suffix, tmp_path):
    src = build_model(dnas.create_space("dario", **TINY).config, load=False)
    path = tmp_path / f"w.{suffix}"
    if suffix == "pt":
        torch.save({"model": src.state_dict()}, path)
    else:
        from safetensors.torch import save_file

        save_file(src.state_dict(), str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no random-init warning when weights are given
        space, net = supernet("block", weights=str(path))
    x = x_batch()
    with torch.no_grad():
        assert torch.equal(net.model(x), src.eval()(x))


def test_random_init_is_warned_and_bad_input_is_one_line(tmp_path):
    with pytest.warns(UserWarning, match="randomly initialised"):
        supernet("block")
    with pytest.raises(DnasError, match="weights file .* not found"):
        supernet("block", weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(DnasError, match="no submodule 'nope'"):
        dnas.create_space("dario", **{**TINY, "blocks": "nope"}).decisions()
    with pytest.raises(DnasError, match="unknown model"):
        dnas.create_space("dario", model="not-a-model").decisions()


def test_cli_prune_keep_blocks_exports_a_loadable_smaller_model(tmp_path, capsys):
    from dnas.cli import main

    args = ["prune", "--model", "vit_tiny_patch16_224", "--keep-blocks", "0,3", "--bench-batch", "2", "--no-progress"]
    args += [f"--model-arg={k}={v}" for k, v in KW.items()]
    assert main(args + ["--out", str(tmp_path / "p")]) == 0
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["blocks_kept"] == [0, 3] and report["params_after"] < report["params_before"]
    assert report["images_per_s_before"] > 0 and report["images_per_s_after"] > 0
    model = dnas.load_pruned(tmp_path / "p")
    assert len(model.blocks) == 2
    assert main(args + ["--out", str(tmp_path / "p")]) == 2  # refuses to overwrite
    assert main(["prune", "--model", "vit_tiny_patch16_224", "--keep-blocks", "0,x", "--out", str(tmp_path / "q")]) == 2
    assert "dnas: error:" in capsys.readouterr().err


def test_cli_warns_in_one_line_when_the_threshold_prunes_every_block(tmp_path, capsys):
    from dnas.cli import _show_warning, main

    args = ["prune", "--model", "vit_tiny_patch16_224", "--iters", "0", "--warm-start", "2", "--threshold", "0.999",
            "--bench-batch", "2", "--no-progress", *[f"--model-arg={k}={v}" for k, v in KW.items()]]
    assert main(args + ["--out", str(tmp_path / "p")]) == 0  # σ(α) ≥ 0.999 needs α ≥ 6.9: no N(0,1) draw gets there
    assert json.loads((tmp_path / "p" / "report.json").read_text())["blocks_kept"] == []
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "every block" in line] == [(  # one line, not Python's file:line and source dump
        "dnas: warning: every block's gate ended below the threshold (0.999): the pruned model is the stem and head alone; "
        "choose the size with a budget (--budget blocks=K) or a lower --threshold")]
    _show_warning(UserWarning("from torch"), UserWarning, "/elsewhere/torch/x.py", 3)  # others keep Python's format
    assert capsys.readouterr().err.startswith("/elsewhere/torch/x.py:3: UserWarning: from torch")


@pytest.mark.parametrize("name", ["var", "synflow", "synflow_norm"])
def test_closed_forms_equal_the_proxy_on_stepped_tensors(name):
    from dnas.strategies.proxies import STEPPED, stepped_proxy

    assert name in STEPPED
    gen = torch.Generator().manual_seed(0)
    theta = [torch.randn(3, 4, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen, dtype=torch.float64)]
    grads = [torch.randn(t.shape, generator=gen, dtype=torch.float64, requires_grad=True) for t in theta]
    fast = stepped_proxy(name, theta, grads, 0.3)
    slow = PROXIES[name]([t - 0.3 * g for t, g in zip(theta, grads)], grads, 1.0)
    assert float(fast) == pytest.approx(float(slow), rel=1e-10)
    for a, b in zip(torch.autograd.grad(fast, grads), torch.autograd.grad(slow, grads)):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-12)


def test_variance_closed_form_survives_float32_overflow_of_its_dot_products():
    # synflow gradients of deep conv nets on |θ| reach 1e22: g·g overflows float32, not float64
    from dnas.strategies.proxies import _dot, stepped_proxy

    g = torch.tensor([3e22, -1e22, 2e22])
    assert not torch.isfinite(torch.dot(g, g)) and float(_dot(g, g)) == pytest.approx(14e44, rel=1e-6)
    theta = [torch.tensor([1.0, 2.0, 3.0])]
    s = float(stepped_proxy("var", theta, [g], 1e-3))
    stepped = theta[0].double() - 1e-3 * g.double()
    assert math.isfinite(s) and s == pytest.approx(float(stepped.var()), rel=1e-6)  # Table 6.1, unbiased


def test_eva_block_pruning_works_and_head_granularity_fails_early():
    kw = dict(img_size=28, depth=2, num_classes=3)
    space = dnas.create_space("dario", model="eva02_tiny_patch14_224", model_kwargs=kw)
    net = space.supernet(space.tiny_task).eval()
    set_gates(net, "blocks", [0, 1])
    pruned = space.build_network(net.genotype("threshold", threshold=0.65), model=original_of(space, net))
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert len(pruned.blocks) == 1 and torch.allclose(pruned(x), net(x), atol=1e-5)
    with pytest.raises(DnasError, match="not EvaAttention; use granularity=block"):
        dnas.create_space("dario", model="eva02_tiny_patch14_224", model_kwargs=kw, granularity="head").decisions()


def test_finetune_trains_only_the_last_kept_block_and_the_head(tmp_path):
    from dnas.tools.pruning import finetune_pruned, prune

    prune("vit_tiny_patch16_224", model_kwargs=KW, keep_blocks=[0, 2], out=tmp_path / "p", bench_batch=1, bench_rounds=1, log=lambda s: None)
    res = finetune_pruned(tmp_path / "p", "synthetic", epochs=1, batch_size=64, out=tmp_path / "f", log=lambda s: None)
    assert 0.0 <= res["top1"] <= 1.0
    before, after = dnas.load_pruned(tmp_path / "p").state_dict(), dnas.load_pruned(tmp_path / "f").state_dict()
    assert after["head.weight"].shape == (4, 24)  # synthetic: 4 classes
    for k, v in before.items():
        if k.startswith(("blocks.1.", "norm.", "head.")):
            assert k.startswith("head.") or not torch.equal(v, after[k]), k  # trained
        else:
            assert torch.equal(v, after[k]), k  # frozen


def test_finetune_of_a_pruned_model_logs_its_epochs_and_honours_set(tmp_path, capsys):
    """dnas train --pruned: each epoch in history.jsonl and the loggers, --set train.* reaches the
    fine-tuning (an lr of 1e9 makes the loss non-finite: one line)."""
    from dnas.cli import main
    from dnas.tools.pruning import prune

    prune("vit_tiny_patch16_224", model_kwargs=KW, keep_blocks=[0, 2], out=tmp_path / "p", bench_batch=1, bench_rounds=1, log=lambda s: None)
    f = tmp_path / "f"
    assert main(["train", "--pruned", str(tmp_path / "p"), "--data", "synthetic", "--epochs", "2", "--set", "train.batch_size=64",
                 "--logger", "csv", "--out", str(f)]) == 0
    hist = [json.loads(line) for line in (f / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in hist] == [1, 2] and all(0 <= r["test_top1"] <= 1 and r["train_loss"] > 0 for r in hist)
    assert json.loads((f / "finetune.json").read_text())["top1"] == hist[-1]["test_top1"]
    rows = (f / "metrics.csv").read_text().splitlines()
    assert sum(",test_top1," in r for r in rows) == 2  # the csv logger saw both epochs

    def fails(args, match):
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and __import__("re").search(match, err), err

    fails(["train", "--pruned", str(tmp_path / "p"), "--data", "synthetic", "--set", "train.momentum=0.9", "--out", str(tmp_path / "g")],
          "unknown option 'momentum'")
    fails(["train", "--pruned", str(tmp_path / "p"), "--data", "synthetic", "--epochs", "3", "--set", "train.lr=1e9", "--out", str(tmp_path / "h")],
          r"loss is (nan|inf) at epoch 1, step \d+; lower the learning rate \(--set train.lr=...\)")
    fails(["train", "--genotype", "resnet18", "--random-baseline", "2"], "--random-baseline compares a pruned model")
    fails(["train", "--genotype", "resnet18", "--pruned", str(tmp_path / "p")], "not both")


def test_default_synflow_step_runs_on_absolute_weights_by_hand():
    """Eq. 6.5 / Table 6.1: R_SF and θ̃ on |θ| is the default; signed θ is the code's option."""
    _, net = toy_net(torch.float64)
    with torch.no_grad():
        net.alphas["blocks"].zero_()  # σ = 1/2 on both blocks
    assert ProxyConfig().abs_params is True
    W1, W2 = (l.weight.detach().abs() for l in net.model.layers)
    assert bool((net.model.layers[0].weight < 0).any())  # the |·| matters for this toy
    one, eye = torch.ones(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    u = 0.5 * W1 @ one + 0.5 * one
    v = (0.5 * W2 + 0.5 * eye).T @ one
    dW1, dW2 = 0.5 * torch.outer(v, one), 0.5 * torch.outer(one, u)
    t1, t2 = W1 - 0.01 * dW1, W2 - 0.01 * dW2
    syn = (dW1 * t1).sum() + (dW2 * t2).sum()
    var = torch.cat([t1.flatten(), t2.flatten()]).var(unbiased=True)
    cfg = ProxyConfig(proxy="synflow", gamma=0.01, batch_size=1)
    assert float(proxy_objective(net, cfg).detach()) == pytest.approx(float(syn), rel=1e-10)
    cfg.proxy = "var"
    assert float(proxy_objective(net, cfg).detach()) == pytest.approx(float(var), rel=1e-10)
    cfg.abs_params = False
    assert float(proxy_objective(net, cfg).detach()) != pytest.approx(float(var), rel=1e-6)


def test_default_parser_is_threshold_at_0_65():
    _, net = supernet("block")
    with torch.no_grad():
        net.alphas["blocks"].copy_(torch.logit(torch.tensor([0.6, 0.7, 0.9, 0.1])).view(-1, 1))
    g = net.genotype()
    assert [bool(g.choices[f"block{i}"]) for i in range(4)] == [False, True, True, False]
    assert not net.genotype("threshold", threshold=0.8).choices["block1"]
