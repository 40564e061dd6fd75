"""DARIO on data: the quality report (searched vs random prunings of the same budget), fine-tuned random
baselines, the calibration proxy term, and the proxy-correlation protocol (thesis §6.1)."""
import json
import math

import pytest
import torch

import dnas
from dnas.errors import DnasError
from dnas.strategies.proxy import ProxyConfig, proxy_objective, unfused_attention
from dnas.tools.prune_quality import (
    budget_of,
    correlations,
    finetune_random_baseline,
    heads_per_block,
    proxy_correlation,
    proxy_value,
    sample_same_budget,
    top_gates,
)
from dnas.tools.pruning import prune

pytestmark = pytest.mark.filterwarnings("ignore:pruning a randomly initialised")

KW = {"img_size": 32, "patch_size": 8, "depth": 4, "embed_dim": 24, "num_heads": 3, "num_classes": 10}
FAST = {"eval_size": 48, "linear_epochs": 3, "knn_k": 5}
quiet = lambda s: None


def weights_file(tmp_path):
    from safetensors.torch import save_file

    from dnas.spaces.dario import build_model

    space = dnas.create_space("dario", model="vit_tiny_patch16_224", model_kwargs=KW)
    path = tmp_path / "w.safetensors"
    save_file(build_model(space.config, load=False).state_dict(), str(path))
    return str(path)


def supernet(granularity="block"):
    space = dnas.create_space("dario", model="vit_tiny_patch16_224", model_kwargs=KW, granularity=granularity)
    return space, space.supernet(space.tiny_task).eval()


# -- same budget ----------------------------------------------------------------------------------
@pytest.mark.parametrize("granularity", ["block", "head", "both"])
def test_random_prunings_keep_the_same_counts_and_differ(granularity):
    heads = [3, 3, 3, 3, 3, 3]
    kept = [0, 2, 3, 5] if granularity != "head" else list(range(6))
    cut = {} if granularity == "block" else {2: [1], 3: [0, 2]}
    want = budget_of(kept, cut, heads)
    samples = sample_same_budget(heads, kept, cut, granularity, 6, seed=1)
    assert len(samples) == 6
    keys = {(tuple(b), tuple(sorted((k, tuple(v)) for k, v in h.items()))) for b, h in samples}
    assert len(keys) == 6 and (tuple(kept), tuple(sorted((k, tuple(v)) for k, v in cut.items()))) not in keys
    for blocks, h in samples:
        assert budget_of(blocks, h, heads) == want
        assert all(b in blocks and len(v) < heads[b] for b, v in h.items())
        if granularity == "block":
            assert h == {}


def test_random_prunings_stop_when_the_budget_allows_fewer():
    # 3 of 4 blocks: 4 choices, one is the searched pruning
    assert len(sample_same_budget([0] * 4, [0, 1, 2], {}, "block", 10)) == 3
    assert sample_same_budget([0] * 4, [0, 1, 2, 3], {}, "block", 5) == []


def test_top_gates_recasts_a_search_to_a_budget():
    gates = {"block0": 0.9, "block1": 0.2, "block2": 0.7, "block0.head0": 0.1, "block0.head1": 0.8,
             "block1.head0": 0.99, "block1.head1": 0.99, "block2.head0": 0.5, "block2.head1": 0.6}
    assert top_gates(gates, [2, 2, 2], 2, 0, "block") == ([0, 2], {})
    assert top_gates(gates, [2, 2, 2], 2, 3, "both") == ([0, 2], {0: [1]})  # block 2 keeps both heads: not listed
    assert top_gates(gates, [2, 2, 2], 0, 4, "head")[0] == [0, 1, 2]  # head granularity keeps every block
    blocks, cut = top_gates(gates, [2, 2, 2], 2, 2, "both")
    assert blocks == [0, 2] and cut == {0: [1], 2: [1]}  # heads 0.8 and 0.6 win among the kept blocks


# -- correlations ---------------------------------------------------------------------------------
def test_correlations_by_hand_and_against_scipy():
    from scipy import stats

    x, y = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    c = correlations(x, y)
    # Σdxdy = 8, Σdx² = Σdy² = 10: r = 0.8; the ranks are the values, so Spearman = 0.8 too
    assert c["pearson"]["r"] == pytest.approx(0.8) and c["spearman"]["r"] == pytest.approx(0.8)
    z, q = math.atanh(0.8), 1.959963984540054
    assert c["pearson"]["ci"] == pytest.approx([math.tanh(z - q / math.sqrt(2)), math.tanh(z + q / math.sqrt(2))])
    assert c["pearson"]["ci"] == pytest.approx([-0.2796, 0.9862], abs=1e-4)
    assert c["spearman"]["ci"] == pytest.approx([math.tanh(z - q * math.sqrt(1.06 / 2)), math.tanh(z + q * math.sqrt(1.06 / 2))])
    ref = stats.pearsonr(x, y).confidence_interval(0.95)
    assert c["pearson"]["ci"] == pytest.approx([ref.low, ref.high])
    assert c["pearson"]["p"] == pytest.approx(stats.pearsonr(x, y)[1])
    b = correlations(x, y, method="bootstrap", n_resamples=500, seed=3)
    assert -1 <= b["pearson"]["ci"][0] < 0.8 < b["pearson"]["ci"][1] <= 1
    assert b == correlations(x, y, method="bootstrap", n_resamples=500, seed=3)  # seeded
    assert correlations([1, 1, 1, 1], [1, 2, 3, 4])["spearman"]["r"] is None
    with pytest.raises(DnasError, match="at least 4"):
        correlations([1, 2, 3], [1, 2, 3])


# -- the calibration term ---------------------------------------------------------------------------
def test_calibration_term_gradient_reaches_alpha_and_vanishes_on_the_unpruned_model():
    from dnas.strategies.calibration import calibration_term

    _, net = supernet("both")
    term = calibration_term(net, {"data": "synthetic", "size": 6, "scale": "none"})
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_()
    alphas = net.arch_parameters()
    grads = torch.autograd.grad(term(net), alphas)
    assert all(float(g.abs().max()) > 0 for g in grads)  # blocks and heads both receive a gradient
    # finite difference on one block gate
    a, i, h = net.alphas["blocks"], 1, 1e-2
    with torch.no_grad():
        a[i, 0] += h
        up = float(term(net))
        a[i, 0] -= 2 * h
        down = float(term(net))
        a[i, 0] += h
    assert (up - down) / (2 * h) == pytest.approx(float(grads[list(net.alphas).index("blocks")][i, 0]), rel=0.05, abs=1e-5)
    with torch.no_grad():
        for a in alphas:
            a.fill_(math.inf)  # every gate open: the unpruned model
        assert float(term(net)) == pytest.approx(0.0, abs=1e-6)


def test_calibration_scale_matches_the_proxy_gradient_and_the_strategy_adds_terms():
    from dnas.strategies.calibration import calibration_term
    from dnas.strategies.proxy import add_terms

    _, net = supernet("block")
    cfg = ProxyConfig()
    alphas = net.arch_parameters()
    with unfused_attention(net):
        gs = torch.autograd.grad(proxy_objective(net, cfg), alphas)
        term = calibration_term(net, {"data": "synthetic", "size": 4, "weight": 2.0}, lambda: gs)
        gt = torch.autograd.grad(term(net), alphas)[0]
        assert float(gt.norm()) == pytest.approx(2.0 * float(gs[0].norm()), rel=1e-3)  # weight relative to ∂S/∂α
        s = proxy_objective(net, cfg, create_graph=False).detach()
    total, grads = add_terms(net, [term, lambda n: 3 * n.alphas["blocks"].sum()], s, list(gs))
    with torch.no_grad():
        assert float(total) == pytest.approx(float(s) + float(term(net)) + 3 * float(net.alphas["blocks"].sum()), rel=1e-6)
    assert torch.allclose(grads[0], gs[0] + gt + 3, rtol=1e-5, atol=1e-9)
    assert add_terms(net, [], s, gs) == (s, gs)
    with pytest.raises(DnasError, match="unknown proxy term"):
        dnas.create_strategy("proxy", terms={"nope": {}})


# -- the quality report ---------------------------------------------------------------------------------
def test_quality_report_has_every_arm_and_figure(tmp_path):
    report = prune("vit_tiny_patch16_224", model_kwargs=KW, keep_blocks=[0, 3], out=tmp_path / "p", bench_batch=1, bench_rounds=1,
                   eval_data="synthetic", quality={"random": 3, **FAST}, log=quiet)
    q = json.loads((tmp_path / "p" / "report.json").read_text())["quality"]
    assert q == json.loads(json.dumps(report["quality"]))
    assert set(q["arms"]) == {"unpruned", "searched", "random1", "random2", "random3"}
    for name, arm in q["arms"].items():
        for key in ("linear_top1", "knn_top1", "cosine_to_unpruned", "params", "images_per_s"):
            assert arm[key] is not None, (name, key)
        assert 0 <= arm["linear_top1"] <= 1 and 0 <= arm["knn_top1"] <= 1 and arm["images_per_s"] > 0
        if name != "unpruned":
            assert len(arm["blocks_kept"]) == 2 and arm["params"] == q["arms"]["searched"]["params"]  # same budget
    assert q["arms"]["unpruned"]["cosine_to_unpruned"] == pytest.approx(1.0)
    assert q["arms"]["searched"]["blocks_kept"] == [0, 3]
    lin = q["searched"]["linear_top1"]
    randoms = [q["arms"][f"random{i}"]["linear_top1"] for i in (1, 2, 3)]
    assert lin["rank"] == 1 + sum(r > lin["value"] for r in randoms) and lin["of"] == 4
    assert lin["random_mean"] == pytest.approx(sum(randoms) / 3, abs=1e-4)
    assert "random prunings with the same budget" in q["summary"] and "verdict" in q["summary"]


def test_compare_calibration_adds_the_data_free_search_at_the_same_budget(tmp_path):
    strat = {"terms": {"calibration": {"data": "synthetic", "size": 4}}}
    report = prune("vit_tiny_patch16_224", model_kwargs=KW, granularity="block", iters=2, warm_start=1, strategy_config=strat,
                   out=tmp_path / "p", bench_batch=1, bench_rounds=1, progress=False, eval_data="synthetic",
                   quality={"random": 1, "compare_calibration": True, **FAST}, log=quiet)
    q = report["quality"]
    heads = [3, 3, 3, 3]
    searched = q["arms"]["searched"]
    other = q["arms"]["data-free search"]
    want = budget_of(searched["blocks_kept"], {int(k): v for k, v in searched["heads_kept"].items()}, heads)
    assert budget_of(other["blocks_kept"], {int(k): v for k, v in other["heads_kept"].items()}, heads) == want
    assert "data-free search_vs_random" in q and "calibration" in q["searched_with"]
    assert (tmp_path / "p" / "compare-data-free" / "genotype.yaml").is_file()
    with pytest.raises(DnasError, match="--calibration"):
        prune("vit_tiny_patch16_224", model_kwargs=KW, keep_blocks=[0], out=tmp_path / "q", eval_data="synthetic",
              quality={"compare_calibration": True}, log=quiet)


def test_cli_eval_data_and_train_random_baseline(tmp_path, capsys):
    from dnas.cli import main

    args = ["prune", "--model", "vit_tiny_patch16_224", "--keep-blocks", "1,2", "--bench-batch", "1", "--no-progress",
            "--eval-data", "synthetic", "--random", "1", "--eval-size", "40", "--weights", weights_file(tmp_path)]
    args += [f"--model-arg={k}={v}" for k, v in KW.items()]
    assert main(args + ["--out", str(tmp_path / "p")]) == 0
    assert "random prunings with the same budget" in capsys.readouterr().out
    assert main(["train", "--pruned", str(tmp_path / "p"), "--random-baseline", "1", "--data", "synthetic", "--out", str(tmp_path / "f")]) == 0
    res = json.loads((tmp_path / "f" / "baseline.json").read_text())
    assert len(res["random"]) == 1 and all(len(p["blocks_kept"]) == 2 for p in res["random_prunings"])
    assert all(p["blocks_kept"] != [1, 2] for p in res["random_prunings"])
    assert res["searched_vs_random"]["of"] == 2 and 0 <= res["searched"] <= 1 and "random" in res["verdict"]
    assert dnas.load_pruned(tmp_path / "f").head.weight.shape == (4, 24)  # the searched one, fine-tuned on 4 classes


def test_random_baseline_is_the_same_recipe(tmp_path):
    """Fine-tuned twice, every arm gives the same top-1: the arms differ by their blocks only."""
    prune("vit_tiny_patch16_224", model_kwargs=KW, keep_blocks=[0, 2], weights=weights_file(tmp_path), out=tmp_path / "p",
          bench_batch=1, bench_rounds=1, log=quiet)
    a = finetune_random_baseline(tmp_path / "p", 1, "synthetic", batch_size=64, seed=5, log=quiet)
    b = finetune_random_baseline(tmp_path / "p", 1, "synthetic", batch_size=64, seed=5, log=quiet)
    assert a["searched"] == b["searched"] and a["random"] == b["random"]
    prune("vit_tiny_patch16_224", model_kwargs=KW, keep_blocks=[0, 2], out=tmp_path / "r", bench_batch=1, bench_rounds=1, log=quiet)
    with pytest.raises(DnasError, match="randomly initialised"):
        finetune_random_baseline(tmp_path / "r", 1, "synthetic", log=quiet)


# -- the correlation protocol ----------------------------------------------------------------------------
def test_proxy_value_with_hard_gates_is_the_proxy_of_the_gated_pruned_model():
    space, net = supernet("both")
    cfg = ProxyConfig(proxy="l1")
    v = proxy_value(net, ([0, 2], {2: [1]}), cfg)
    assert net.mixing_weights("blocks").flatten().tolist() == [1, 0, 1, 0]
    assert net.mixing_weights("heads").flatten().tolist() == [1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    with unfused_attention(net):
        assert v == pytest.approx(float(proxy_objective(net, cfg, create_graph=False).detach()))
    assert v != pytest.approx(proxy_value(net, ([0, 1, 2, 3], {}), cfg))
    assert heads_per_block(space) == [3, 3, 3, 3]


def test_proxy_correlation_protocol_end_to_end(tmp_path):
    res = proxy_correlation("vit_tiny_patch16_224", data="synthetic", n=5, space_config={"model_kwargs": KW},
                            strategy_config={"terms": {"calibration": {"data": "synthetic", "size": 4}}},
                            quality_config=FAST, out=tmp_path, log=quiet)
    assert res["n"] == 5 and len({json.dumps(r["blocks_kept"]) for r in res["models"]}) == 5
    assert set(res["correlations"]) == {"proxy", "calibration", "params"}
    rows = res["models"]
    ref = correlations([r["proxy"] for r in rows], [r["linear_top1"] for r in rows])
    assert res["correlations"]["proxy"]["linear_top1"] == ref
    assert (tmp_path / "correlation.json").is_file() and (tmp_path / "correlation.png").is_file()
    assert "spearman" in res["summary"]


def test_an_image_folder_is_read_at_the_model_size_with_its_normalisation(tmp_path):
    from PIL import Image

    from dnas.strategies.calibration import CalibrationConfig, calibration_images
    from dnas.tools.prune_quality import QualityConfig, eval_tensors

    for cls, grey in (("a", 64), ("b", 192)):  # uniform 48x40 photos: two classes by brightness
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (48, 40), (grey, grey, grey)).save(tmp_path / "imgs" / cls / f"{i}.png")
    from dnas.spaces.dario import build_model

    model = build_model(dnas.create_space("dario", model="vit_tiny_patch16_224", model_kwargs=KW).config, load=False)
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]  # timm's ImageNet statistics
    data = f"imagefolder:{tmp_path / 'imgs'}"
    trx, try_, tex, tey = eval_tensors(data, QualityConfig(eval_size=10), (3, 24, 24), model)
    assert trx.shape[1:] == (3, 24, 24) and len(trx) + len(tex) == 10  # read at the model's side, not 32 px
    x = torch.cat([trx, tex])
    for img, y in zip(x, torch.cat([try_, tey])):
        v = (64 if int(y) == 0 else 192) / 255
        want = torch.tensor([(v - m) / s for m, s in zip(mean, std)])
        assert torch.allclose(img.mean((1, 2)), want, atol=1e-5)  # (x − mean) / std per channel, by hand
    cal = calibration_images(CalibrationConfig(data=data, size=3), (3, 24, 24), model)
    assert cal.shape == (3, 3, 24, 24) and float(cal.std(dim=(1, 2, 3)).max()) < 1e-5  # uniform images stay so
    raw = eval_tensors(data, QualityConfig(eval_size=10), (3, 24, 24))[0]  # no model: no normalisation
    assert 0.2 < float(raw.min()) and float(raw.max()) < 0.8


def test_verdict_by_hand_ties_are_not_losses():
    from dnas.tools.prune_quality import compare, verdict

    assert compare(0.8, [0.7, 0.8, 0.9]) == {"value": 0.8, "rank": 2, "of": 4, "beats": 1, "ties": 1,
                                             "random_mean": 0.8, "random_std": 0.1}
    assert "beat every random pruning" in verdict(compare(0.9, [0.7, 0.8]))
    assert "scored the same as all 2 random prunings" in verdict(compare(1.0, [1.0, 1.0]))  # a saturated measure
    assert "beat the random prunings' mean on this data, but not all of them (1 of 2)" in verdict(compare(0.8, [0.7, 0.85]))
    assert verdict(compare(0.8, [0.7, 0.8, 0.9])).endswith("it beats 1 of 3, ties 1, at their mean")
    assert verdict(compare(0.6, [0.7, 0.8])).endswith("it beats 0 of 2, below their mean")


# -- a user's inputs -----------------------------------------------------------------------------------
def test_the_same_weights_saved_two_ways_give_the_same_pruning(tmp_path):
    """The search is seeded after the model is built: how the checkpoint was read does not move α."""
    from safetensors.torch import load_file

    sd = load_file(weights_file(tmp_path))
    torch.save(sd, tmp_path / "plain.pth")
    torch.save({"model.": sd, "epoch": 3}, tmp_path / "nested.pth")  # read through another loading path
    runs = [prune("vit_tiny_patch16_224", model_kwargs=KW, weights=str(tmp_path / f), iters=3, warm_start=4, out=tmp_path / f"o{i}",
                  bench_batch=1, bench_rounds=1, progress=False, log=quiet) for i, f in enumerate(("plain.pth", "nested.pth"))]
    a, b = (torch.load(tmp_path / f"o{i}" / "alphas.pt") for i in range(2))
    assert runs[0]["blocks_kept"] == runs[1]["blocks_kept"] and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_eval_data_and_out_fail_before_the_search_and_a_stopped_pruning_starts_over(tmp_path):
    one = tmp_path / "one" / "a"
    one.mkdir(parents=True)
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(one / f"{i}.png")
    kw = dict(model_kwargs=KW, iters=2, warm_start=1, bench_batch=1, bench_rounds=1, progress=False, log=quiet)
    for data, match in (("imagefolder:" + str(tmp_path / "one"), "has 1 class"), ("imagefolder:" + str(tmp_path / "none"), "not found"),
                        ("cifar10", "--data-dir DIR, or add --download")):
        with pytest.raises(DnasError, match=match):
            prune("vit_tiny_patch16_224", eval_data=data, quality={"data_dir": str(tmp_path)}, out=tmp_path / "e", **kw)
        assert not (tmp_path / "e").exists()  # refused before the search wrote anything
    (tmp_path / "f").write_text("x")
    with pytest.raises(DnasError, match="is a file"):
        prune("vit_tiny_patch16_224", out=tmp_path / "f", **kw)
    with pytest.raises(DnasError, match="not reached"):  # an unreachable speed-up stops after the search
        prune("vit_tiny_patch16_224", budget="speedup=1000", out=tmp_path / "s", **kw)
    assert (tmp_path / "s" / "genotype.yaml").is_file() and not (tmp_path / "s" / "model.safetensors").exists()
    r = prune("vit_tiny_patch16_224", budget="blocks=2", out=tmp_path / "s", **kw)  # the same folder: starts over
    assert len(r["blocks_kept"]) == 2 and (tmp_path / "s" / "genotype.yaml.previous").is_file()
    with pytest.raises(DnasError, match="already holds a pruned model"):
        prune("vit_tiny_patch16_224", budget="blocks=2", out=tmp_path / "s", **kw)
