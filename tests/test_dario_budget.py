"""DARIO pruning budgets, checkpoints at other resolutions and formats, transformers via hf:, the
finite-difference α-gradient, and the proxy strategy on spaces other than dario."""
import json
import math
import warnings

import pytest
import torch
import yaml

import dnas
from dnas.errors import DnasError
from dnas.spaces.dario import build_model
from dnas.strategies.proxy import ProxyConfig, proxy_step, unfused_attention
from dnas.tools.pruning import ModelInfo, count_params, equivalent_threshold, keep_for_budget, model_info, parse_budget, prune

pytestmark = pytest.mark.filterwarnings("ignore:pruning a randomly initialised")

KW = {"img_size": 32, "patch_size": 8, "depth": 4, "embed_dim": 24, "num_heads": 3, "num_classes": 10}
TINY = {"model": "vit_tiny_patch16_224", "model_kwargs": KW}
QUIET = {"bench_batch": 1, "bench_rounds": 1, "progress": False, "log": lambda s: None}


# -- budgets ---------------------------------------------------------------------------------------
def test_parse_budget_and_its_one_line_errors():
    assert parse_budget("blocks=6") == {"blocks": 6.0}
    assert parse_budget("blocks=8,heads=40") == {"blocks": 8.0, "heads": 40.0}
    assert parse_budget(None) == {}
    for bad, msg in [("size=3", "unknown budget 'size'"), ("blocks", "KIND=VALUE"), ("params=1.5", r"in \(0, 1\]"),
                     ("blocks=2.5", "whole number"), ("speedup=0.5", ">= 1"), ("params=0.5,blocks=2", "stand alone")]:
        with pytest.raises(DnasError, match=msg):
            parse_budget(bad)


def _info():
    # 4 blocks of 10 parameters, 2 heads of 3 in each, 2 more gone with a block's last head; 20 elsewhere
    gp = {f"block{i}": 10 for i in range(4)}
    heads = {f"block{i}": [f"block{i}.head0", f"block{i}.head1"] for i in range(4)}
    gp.update({h: 3 for hs in heads.values() for h in hs})
    return ModelInfo(60, gp, heads, {b: 2 for b in heads}, {b: 1.0 for b in heads}, 1.0)


def test_keep_for_budget_by_hand():
    scores = {"block0": 0.9, "block1": 0.2, "block2": 0.7, "block3": 0.4}
    info = _info()
    kept = lambda c: [n for n, v in c.items() if v]
    assert kept(keep_for_budget(scores, "blocks=2", info)) == ["block0", "block2"]
    assert kept(keep_for_budget(scores, "blocks=0", info)) == []
    # params: 60 total; dropping block1 -> 50 (0.83), block3 -> 40 (0.67), block2 -> 30 (0.5)
    assert kept(keep_for_budget(scores, "params=0.7", info)) == ["block0", "block2"]
    assert kept(keep_for_budget(scores, "params=0.5", info)) == ["block0"]
    # speed-up: cost 1 per block + 1 elsewhere = 5; 3 blocks left -> 5/4, 2 -> 5/3, 1 -> 5/2
    assert kept(keep_for_budget(scores, "speedup=1.6", info)) == ["block0", "block2"]
    assert kept(keep_for_budget(scores, "speedup=2.5", info)) == ["block0"]
    with pytest.raises(DnasError, match="has 4 gated blocks"):
        keep_for_budget(scores, "blocks=5", info)
    with pytest.raises(DnasError, match="raise it"):
        keep_for_budget(scores, "params=0.2", info)  # 20 of 60 stay with every gate closed
    eq = equivalent_threshold(scores, keep_for_budget(scores, "blocks=2", info))
    assert eq == {"low": 0.4, "high": 0.7, "threshold": 0.55}


def test_heads_budget_ranks_the_heads_of_kept_blocks_and_params_count_the_last_head():
    info = _info()
    scores = {"block0": 0.9, "block1": 0.8, "block0.head0": 0.1, "block0.head1": 0.6, "block1.head0": 0.5, "block1.head1": 0.3}
    info.gate_params = {k: v for k, v in info.gate_params.items() if k.startswith(("block0", "block1"))}
    info.heads_of = {k: v for k, v in info.heads_of.items() if k in ("block0", "block1")}
    info.total_params = 40
    c = keep_for_budget(scores, "heads=2", info)
    assert [n for n, v in c.items() if v] == ["block0", "block1", "block0.head1", "block1.head0"]
    assert info.params_kept({"block0.head0", "block1.head1"}) == 40 - 6
    assert info.params_kept({"block0.head0", "block0.head1"}) == 40 - 6 - 2  # proj bias etc. go with the last head


@pytest.mark.parametrize("granularity", ["block", "both"])
def test_model_info_counts_match_the_physically_pruned_model(granularity):
    import random

    space = dnas.create_space("dario", **TINY, granularity=granularity)
    model = build_model(space.config, load=False)
    info = model_info(space, model)
    rng = random.Random(0)
    for _ in range(4):
        g = space.random_genotype(rng)
        drop = {n for n, c in g.choices.items() if not c}
        assert info.params_kept(drop) == count_params(space.build_network(g, model=model))


def test_prune_with_a_budget_meets_it_and_reports_the_equivalent_threshold(tmp_path):
    rep = prune(**TINY, out=tmp_path / "p", budget="blocks=2", iters=2, warm_start=1, **QUIET)
    assert len(rep["blocks_kept"]) == 2 and rep["budget"] == "blocks=2"
    gates = json.loads((tmp_path / "p" / "alphas.json").read_text())
    low, high = rep["threshold_range"]
    assert sorted(int(k[5:]) for k, v in gates.items() if v >= rep["equivalent_threshold"]) == rep["blocks_kept"]
    assert low < rep["equivalent_threshold"] < high
    assert len(dnas.load_pruned(tmp_path / "p").blocks) == 2
    rep = prune(**TINY, out=tmp_path / "q", budget="params=0.6", iters=1, warm_start=1, **QUIET)
    assert rep["params_after"] <= 0.6 * rep["params_before"] and rep["params_fraction"] == round(rep["params_after"] / rep["params_before"], 4)


def test_heads_budget_report_lists_the_kept_heads_as_pruned_yaml_does(tmp_path):
    logged = []
    rep = prune(**TINY, granularity="head", out=tmp_path / "h", budget="heads=5", iters=2, warm_start=1,
                **{**QUIET, "log": logged.append})
    kept = {int(b): v for b, v in rep["heads_kept"].items()}
    assert rep["heads_total"] == 12 and rep["heads_left"] == 5  # 4 blocks x 3 heads; 5 kept
    assert sum(len(kept.get(b, range(3))) for b in rep["blocks_kept"]) == 5
    saved = yaml.safe_load((tmp_path / "h" / "pruned.yaml").read_text())["keep_heads"]
    assert {int(b): v for b, v in saved.items()} == kept
    model = dnas.load_pruned(tmp_path / "h")
    # the physically pruned model has exactly the kept heads (a block that lost all of them has no attention)
    assert sum(getattr(blk.attn, "num_heads", 0) for blk in model.blocks) == 5
    assert "5/12 heads" in logged[-1]


def test_a_proxy_blind_to_the_gates_stops_after_the_warm_start_and_a_rerun_starts_over(tmp_path):
    blind = {"model": "dario_toy:blind", "blocks": "layers", "input_size": [1, 1, 2]}
    with pytest.raises(DnasError, match="the proxy is the same for all 4 random gate settings.*--signed-synflow"):
        prune(**blind, out=tmp_path / "p", budget="blocks=1", iters=2, warm_start=4, **QUIET)
    assert len((tmp_path / "p" / "history.jsonl").read_text().splitlines()) == 4
    rep = prune(**{**blind, "model": "dario_toy:toy"}, out=tmp_path / "p", budget="blocks=1", iters=2, warm_start=3, **QUIET)
    assert len(rep["blocks_kept"]) == 1  # the same --out again, after the error
    history = [json.loads(line) for line in (tmp_path / "p" / "history.jsonl").read_text().splitlines()]
    assert len(history) == 5 and history[0]["epoch"] == 1  # only the new run's 3 samples + 2 iterations
    assert len((tmp_path / "p" / "history.jsonl.previous").read_text().splitlines()) == 4  # the failed run, kept
    assert yaml.safe_load((tmp_path / "p" / "config.yaml.previous").read_text())["space"]["model"] == "dario_toy:blind"


def test_combined_budget_meets_both_counts_and_says_whether_a_threshold_gives_it(tmp_path):
    logged = []
    rep = prune(**TINY, granularity="both", out=tmp_path / "b", budget="blocks=3,heads=5", iters=2, warm_start=2,
                **{**QUIET, "log": logged.append})
    assert len(rep["blocks_kept"]) == 3 and rep["heads_left"] == 5
    eq = rep["equivalent_threshold"]
    assert (f"= threshold {eq}" if eq is not None else "no single threshold gives it") in logged[-1]
    assert "threshold None" not in logged[-1]


def test_prune_search_is_mirrored_to_loggers(tmp_path):
    prune(**TINY, out=tmp_path / "p", budget="blocks=2", iters=2, warm_start=2, loggers=["csv"], **QUIET)
    rows = (tmp_path / "p" / "metrics.csv").read_text().splitlines()
    history = [json.loads(line) for line in (tmp_path / "p" / "history.jsonl").read_text().splitlines()]
    proxy = {int(r.split(",")[0]): float(r.split(",")[2]) for r in rows[1:] if r.split(",")[1] == "proxy"}
    assert proxy == {h["epoch"]: pytest.approx(h["proxy"]) for h in history}  # every iteration, its proxy


def test_cli_budget_and_input_options(tmp_path, capsys):
    from dnas.cli import main

    args = ["prune", "--model", "vit_tiny_patch16_224", "--budget", "blocks=1", "--iters", "1", "--warm-start", "1",
            "--bench-batch", "1", "--no-progress", "--input-size", "3,32,32"] + [f"--model-arg={k}={v}" for k, v in KW.items()]
    assert main(args + ["--out", str(tmp_path / "p")]) == 0
    assert json.loads((tmp_path / "p" / "report.json").read_text())["blocks_kept"].__len__() == 1
    assert yaml.safe_load((tmp_path / "p" / "config.yaml").read_text())["strategy"]["abs_params"] is True
    capsys.readouterr()
    assert main(["show", str(tmp_path / "p")]) == 0  # a pruning run reads as proxy evaluations, not epochs
    last = json.loads((tmp_path / "p" / "history.jsonl").read_text().splitlines()[-1])
    assert f"run: 2 proxy evaluations; last proxy {last['proxy']:.4g}" in capsys.readouterr().out
    assert main(args + ["--signed-synflow", "--out", str(tmp_path / "s")]) == 0  # the authors' code: synflow on θ
    assert yaml.safe_load((tmp_path / "s" / "config.yaml").read_text())["strategy"]["abs_params"] is False
    assert main(args[:-2] + ["--input-size", "3,x", "--out", str(tmp_path / "q")]) == 2
    assert main(args + ["--budget", "size=3", "--out", str(tmp_path / "r")]) == 2
    assert main(args + ["--threshold", "1.5", "--out", str(tmp_path / "t")]) == 2  # refused before the search
    err = capsys.readouterr().err
    assert "--input-size takes C,H,W" in err and "unknown budget 'size'" in err
    assert "threshold must be in (0, 1)" in err and not (tmp_path / "t").exists()


@pytest.mark.parametrize("budget,says,granularity", [
    ("blocks=9", "budget blocks=9: the model has 4 gated blocks", "both"),
    ("heads=13", "budget heads=13: the kept blocks hold 12 gated heads", "both"),
    ("blocks=1,heads=4", "budget heads=4: the kept blocks hold 3 gated heads", "both"),
    ("params=0.001", "budget params=0.001: even with every gate closed", "both"),
    ("heads=4", "budget heads=4 needs head gates; use granularity head or both", "block"),
])
def test_impossible_budget_fails_before_the_search_and_writes_nothing(tmp_path, monkeypatch, budget, says, granularity):
    import dnas.api

    def no_search(*a, **k):
        raise AssertionError("the search ran")

    monkeypatch.setattr(dnas.api, "search", no_search)
    with pytest.raises(DnasError, match=says.replace("(", r"\(")):
        prune(**TINY, granularity=granularity, out=tmp_path / "p", budget=budget, iters=1, warm_start=1, **QUIET)
    assert not (tmp_path / "p").exists()


def test_budget_check_before_the_search_lets_every_feasible_budget_through(tmp_path):
    from dnas.tools.pruning import check_budget

    space = dnas.create_space("dario", **TINY, granularity="both")
    for budget in ("blocks=4", "blocks=0", "heads=12", "blocks=2,heads=6", "params=0.3", "speedup=3"):
        check_budget(space, parse_budget(budget))  # each is met by some ranking: no error


def test_prune_takes_space_and_strategy_objects(tmp_path):
    space = dnas.create_space("dario", **TINY)
    strat = dnas.create_strategy("proxy", iters=1, warm_start=1, threshold=0.5)
    rep = prune(space=space, strategy=strat, out=tmp_path / "p", **QUIET)
    cfg = json.loads(json.dumps(__import__("yaml").safe_load((tmp_path / "p" / "config.yaml").read_text())))
    assert cfg["strategy"]["threshold"] == 0.5 and cfg["strategy"]["iters"] == 1 and rep["blocks_total"] == 4


# -- checkpoints -----------------------------------------------------------------------------------
def test_checkpoint_at_another_resolution_loads_with_resampled_position_embeddings(tmp_path):
    from safetensors.torch import save_file

    big = build_model(dnas.create_space("dario", model="vit_tiny_patch16_224", model_kwargs={**KW, "img_size": 64}).config, load=False)
    assert big.pos_embed.shape[1] == 1 + 8 * 8
    save_file(big.state_dict(), str(tmp_path / "w64.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither a random-init warning nor a missing tensor
        model = build_model(dnas.create_space("dario", **TINY, weights=str(tmp_path / "w64.safetensors")).config)
    assert model.pos_embed.shape[1] == 1 + 4 * 4
    assert torch.equal(model.blocks[2].mlp.fc1.weight, big.blocks[2].mlp.fc1.weight)
    assert not torch.equal(model.pos_embed[:, 1:], big.pos_embed[:, 1:17])  # resampled, not cropped
    assert torch.equal(model.pos_embed[:, 0], big.pos_embed[:, 0])  # the class token's embedding is kept


@pytest.mark.parametrize("wrap", [
    lambda sd: {"model": sd, "epoch": 1600},  # the MAE release
    lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3},  # saved from DDP
    lambda sd: {"model_ema": sd, "optimizer": {}},  # an EMA training checkpoint
    lambda sd: {"state_dict": {"model." + k: v for k, v in sd.items()}, "pytorch-lightning_version": "2.4.0"},  # Lightning
    lambda sd: {"teacher": {"module.backbone." + k: v for k, v in sd.items()}, "epoch": 100},  # DINO-style, nested
], ids=["mae-release", "ddp-module-prefix", "model-ema", "lightning-model-prefix", "nested-teacher"])
def test_checkpoints_saved_other_ways_load_the_same_weights(tmp_path, wrap):
    src = build_model(dnas.create_space("dario", **TINY).config, load=False)
    torch.save(wrap(src.state_dict()), tmp_path / "ckpt.pth")
    model = build_model(dnas.create_space("dario", **TINY, weights=str(tmp_path / "ckpt.pth")).config)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), src.eval()(x))


@pytest.mark.parametrize("timm_model", [True, False], ids=["timm", "factory"])
def test_a_file_holding_the_model_twice_asks_for_the_prefix_and_loads_the_one_named(tmp_path, timm_model):
    src = build_model(dnas.create_space("dario", **TINY).config, load=False)
    sd = src.state_dict()
    torch.save({**{"student.backbone." + k: v * 2 for k, v in sd.items()}, **{"teacher.backbone." + k: v for k, v in sd.items()}},
               tmp_path / "both.pth")
    spec = TINY if timm_model else {"model": "timm:create_model", "model_kwargs": {"model_name": "vit_tiny_patch16_224", **KW}}
    with pytest.raises(DnasError, match=r"hold the model 2 times, under student.backbone., teacher.backbone.; pick one with "
                                        r"--weights-prefix"):
        build_model(dnas.create_space("dario", **spec, weights=str(tmp_path / "both.pth")).config)
    model = build_model(dnas.create_space("dario", **spec, weights=str(tmp_path / "both.pth"), weights_prefix="teacher.backbone.").config)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), src.eval()(x))  # the teacher's tensors, not the student's (2x)
    with pytest.raises(DnasError, match=r"no tensor of weights .* is under the prefix 'ema.'"):
        build_model(dnas.create_space("dario", **spec, weights=str(tmp_path / "both.pth"), weights_prefix="ema.").config)
    if timm_model:  # the flag reaches the loader; a prefix without a file is refused
        from dnas.cli import main

        args = ["prune", "--model", "vit_tiny_patch16_224", *[f"--model-arg={k}={v}" for k, v in KW.items()], "--keep-blocks",
                "0,3", "--bench-batch", "1", "--no-progress", "--weights", str(tmp_path / "both.pth")]
        assert main(args + ["--weights-prefix", "teacher.backbone.", "--out", str(tmp_path / "p")]) == 0
        pruned = dnas.load_pruned(tmp_path / "p")
        assert torch.equal(pruned.blocks[1].mlp.fc1.weight, src.blocks[3].mlp.fc1.weight)
        assert main(args[:-2] + ["--weights-prefix", "teacher.", "--out", str(tmp_path / "q")]) == 2


def test_weights_that_do_not_fit_are_one_line_naming_tensors_and_shapes(tmp_path):
    from safetensors.torch import save_file

    other = build_model(dnas.create_space("dario", model="vit_tiny_patch16_224", model_kwargs={**KW, "embed_dim": 48}).config, load=False)
    save_file(other.state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(DnasError) as e:
        build_model(dnas.create_space("dario", **TINY, weights=str(tmp_path / "w.safetensors")).config)
    msg = str(e.value)
    assert "\n" not in msg and "do not fit model 'vit_tiny_patch16_224'" in msg
    assert "[1, 1, 48] in the file vs [1, 1, 24] in the model" in msg or "[48] in the file vs [24] in the model" in msg


@pytest.mark.parametrize("kind,says", [
    ("whole-model", "holds pickled Python objects (a whole model or custom classes), not only tensors; save model.state_dict()"),
    ("garbage", "neither a torch checkpoint nor a safetensors file"),
    ("truncated-safetensors", "corrupt or truncated"),
])
@pytest.mark.parametrize("model", ["timm", "factory"])
def test_unreadable_weights_are_one_line_that_says_why_and_write_nothing(tmp_path, capsys, kind, says, model):
    from safetensors.torch import save_file

    from dnas.cli import main

    args = ["--model", "vit_tiny_patch16_224"] + [f"--model-arg={k}={v}" for k, v in KW.items()] if model == "timm" \
        else ["--model", "dario_toy:toy", "--blocks", "layers", "--input-size", "1,1,2"]
    net = build_model(dnas.create_space("dario", **TINY).config, load=False)
    path = tmp_path / ("w.safetensors" if kind == "truncated-safetensors" else "w.pth")
    if kind == "whole-model":
        torch.save(net, path)  # the module itself, not its state dict
    elif kind == "garbage":
        path.write_bytes(b"this is not a checkpoint at all")
    else:
        save_file(net.state_dict(), str(path))
        path.write_bytes(path.read_bytes()[:1000])
    assert main(["prune", *args, "--weights", str(path), "--keep-blocks", "0", "--out", str(tmp_path / "p"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
    assert not (tmp_path / "p").exists()  # nothing written: the same --out works once the file is fixed


# -- factories and transformers ----------------------------------------------------------------------
def test_user_factories_are_not_called_under_the_meta_device():
    space = dnas.create_space("dario", model="dario_toy:real_tensors_only", blocks="layers", input_size=[1, 1, 2])
    assert len(space.decisions()) == 2  # the factory checks it is not on the meta device


def test_hf_folder_is_pruned_through_inputs_embeds(tmp_path):
    transformers = pytest.importorskip("transformers", reason="the optional 'hf' extra (transformers) is not installed")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=64, num_hidden_layers=6, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "bert")
    model = f"hf:{tmp_path / 'bert'}"
    space = dnas.create_space("dario", model=model, seq_len=8)
    assert len(space.decisions()) == 6  # encoder.layer found without --blocks
    net = space.supernet(space.tiny_task).eval()
    assert tuple(net.data_free_input().shape) == (1, 8, 64)
    with torch.no_grad():
        net.alphas["blocks"].fill_(math.inf)
        ref = net.model(inputs_embeds=torch.ones(1, 8, 64)).last_hidden_state
        assert torch.allclose(net(net.data_free_input()), ref, atol=1e-6)  # open gates: the model itself
    rep = prune(model, blocks="encoder.layer", seq_len=8, budget="blocks=3", iters=1, warm_start=1, out=tmp_path / "p", **QUIET)
    assert len(rep["blocks_kept"]) == 3 and rep["input_shape"] == [8, 64]
    pruned = dnas.load_pruned(tmp_path / "p")
    assert len(pruned.encoder.layer) == 3 and pruned.config.num_hidden_layers == 3
    assert pruned(inputs_embeds=torch.randn(2, 8, 64)).last_hidden_state.shape == (2, 8, 64)
    with pytest.raises(DnasError, match="not a folder with a config.json"):
        dnas.create_space("dario", model=f"hf:{tmp_path / 'nothing'}").decisions()
    with pytest.raises(DnasError, match="--seq-len 33 is more than the model's 32 positions"):
        prune(model, seq_len=33, budget="blocks=3", iters=1, warm_start=1, out=tmp_path / "q", **QUIET)


def test_hf_vision_model_takes_its_input_size_from_its_config(tmp_path):
    transformers = pytest.importorskip("transformers", reason="the optional 'hf' extra (transformers) is not installed")
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=48, num_hidden_layers=4,
                                 num_attention_heads=3, intermediate_size=96)
    transformers.ViTModel(cfg).save_pretrained(tmp_path / "vit")
    rep = prune(f"hf:{tmp_path / 'vit'}", budget="blocks=2", iters=1, warm_start=1, out=tmp_path / "p", **QUIET)
    assert rep["input_shape"] == [3, 32, 32] and len(rep["blocks_kept"]) == 2  # no --input-size needed
    pruned = dnas.load_pruned(tmp_path / "p")
    assert pruned.config.num_hidden_layers == 2
    assert pruned(pixel_values=torch.randn(2, 3, 32, 32)).last_hidden_state.shape == (2, 17, 48)


def test_hf_swin_stages_are_found_and_pruned_to_a_budget(tmp_path):
    """transformers' Swin: encoder.layers holds stages, so the blocks are each stage's `blocks`, without --blocks."""
    transformers = pytest.importorskip("transformers", reason="the optional 'hf' extra (transformers) is not installed")
    torch.manual_seed(0)
    cfg = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=4)
    transformers.SwinModel(cfg).save_pretrained(tmp_path / "swin")
    rep = prune(f"hf:{tmp_path / 'swin'}", budget="blocks=3", iters=1, warm_start=2, out=tmp_path / "p", **QUIET)
    assert rep["blocks_total"] == 4 and len(rep["blocks_kept"]) == 3 and "blocks_fixed" not in rep
    pruned = dnas.load_pruned(tmp_path / "p")
    assert [len(stage.blocks) for stage in pruned.encoder.layers] == [sum(b < 2 for b in rep["blocks_kept"]),
                                                                      sum(b >= 2 for b in rep["blocks_kept"])]
    assert pruned(pixel_values=torch.randn(1, 3, 32, 32)).last_hidden_state.shape == (1, 16, 32)  # 64 patches, merged once


def test_torchvision_vit_takes_its_input_size_and_its_own_state_dict(tmp_path):
    """A model from another library, with a checkpoint saved its own way: torchvision's ViT keeps
    its side in ``image_size`` (no --input-size needed) and its blocks in ``encoder.layers``."""
    from torchvision.models.vision_transformer import VisionTransformer

    kw = {"image_size": 32, "patch_size": 8, "num_layers": 4, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}
    torch.manual_seed(0)
    torch.save(VisionTransformer(**kw).state_dict(), tmp_path / "tv.pth")
    rep = prune("torchvision.models.vision_transformer:VisionTransformer", model_kwargs=kw, blocks="encoder.layers",
                weights=str(tmp_path / "tv.pth"), budget="blocks=2", iters=1, warm_start=1, out=tmp_path / "p", **QUIET)
    assert rep["input_shape"] == [3, 32, 32] and len(rep["blocks_kept"]) == 2
    pruned = dnas.load_pruned(tmp_path / "p")
    assert len(pruned.encoder.layers) == 2 and pruned(torch.randn(2, 3, 32, 32)).shape == (2, 1000)
    with pytest.raises(DnasError, match="no timm-style attention.*granularity=block"):
        prune("torchvision.models.vision_transformer:VisionTransformer", model_kwargs=kw, blocks="encoder.layers",
              granularity="head", iters=1, warm_start=1, out=tmp_path / "h", **QUIET)


def test_stages_that_change_the_shape_are_refused_and_their_blocks_gate(tmp_path):
    """A hierarchical model (Swin): its stages are no gateable blocks; the blocks inside each are,
    given as comma-separated containers, or found as every stage's `blocks`."""
    with pytest.raises(DnasError, match=r"every block in layers changes the hidden state's shape, so none can be gated .* "
                                        r"\(here: --blocks layers.0.blocks,layers.1.blocks\)"):
        dnas.create_space("dario", model="dario_toy:staged", blocks="layers", input_size=[1, 1, 4]).supernet(None)
    found = dnas.create_space("dario", model="dario_toy:staged", input_size=[1, 1, 4])
    assert found.num_blocks() == 4 and not found.fixed_blocks()  # layers.0.blocks, layers.1.blocks: no --blocks needed
    rep = prune("dario_toy:staged", blocks="layers.0.blocks,layers.1.blocks", input_size=[1, 1, 4], budget="blocks=3",
                iters=1, warm_start=2, out=tmp_path / "p", **QUIET)
    assert rep["blocks_total"] == 4 and len(rep["blocks_kept"]) == 3
    pruned = dnas.load_pruned(tmp_path / "p")
    assert [len(s.blocks) for s in pruned.layers] == [sum(b < 2 for b in rep["blocks_kept"]), sum(b >= 2 for b in rep["blocks_kept"])]
    assert pruned(torch.ones(1, 1, 1, 4)).shape == (1, 1, 1, 16)


def test_a_factory_checkpoint_of_another_depth_is_one_line_and_extra_modules_are_left_out(tmp_path):
    """A user factory's weights: tensors of the model's own modules it lacks (layers of a deeper build)
    are refused, not silently dropped; a module the model does not have at all (another head) is left out."""
    import importlib

    from dnas.spaces.dario import build_model

    deep = importlib.import_module("dario_toy").resnetish(4, 3)
    torch.save(deep.state_dict(), tmp_path / "deep.pth")
    kw = {"model": "dario_toy:resnetish", "input_size": [1, 1, 4]}
    with pytest.raises(DnasError, match=r"do not fit model 'dario_toy:resnetish' \(not in the model: layer1\.2\.fc\.weight"):
        build_model(dnas.create_space("dario", **kw, model_kwargs={"width": 4, "depth": 2}, weights=str(tmp_path / "deep.pth")).config)
    torch.save({**deep.state_dict(), "other_head.weight": torch.zeros(2)}, tmp_path / "extra.pth")
    m = build_model(dnas.create_space("dario", **kw, model_kwargs={"width": 4, "depth": 3}, weights=str(tmp_path / "extra.pth")).config)
    assert all(torch.equal(v, deep.state_dict()[k]) for k, v in m.state_dict().items())


def test_blocks_that_change_the_shape_stay_ungated_and_count_in_the_budget(tmp_path):
    """ResNet's layout (layer1, layer2, the first block of layer2 widening): found without --blocks; the
    widening block has no gate, is in every pruning, searched or random, and counts in blocks=K."""
    from dnas.tools.prune_quality import random_prunings, sample_same_budget

    kw = {"model": "dario_toy:resnetish", "model_kwargs": {"width": 4, "depth": 3}, "input_size": [1, 1, 4]}
    space = dnas.create_space("dario", **kw)
    assert space.num_blocks() == 6 and space.fixed_blocks() == {3}
    assert [d.name for d in space.block_decisions()] == ["block0", "block1", "block2", "block4", "block5"]
    net = space.supernet(None)
    assert net.alphas["blocks"].shape[0] == 5 and space.gated_blocks() == [0, 1, 2, 4, 5]
    with torch.no_grad():  # the gate of block 4 sits on α row 3: closing it makes block 4 the identity
        net.alphas["blocks"].fill_(30.0)
        net.alphas["blocks"][3] = -30.0
        x = torch.randn(2, 1, 1, 4)
        m = net.model
        want = m.layer2[2](m.layer2[0](m.layer1(x)))
        assert torch.allclose(net(x), want, atol=1e-5)
    with pytest.raises(DnasError, match=r"blocks=0: 1 blocks change the shape and are always kept; ask at least blocks=1"):
        prune(kw["model"], model_kwargs=kw["model_kwargs"], input_size=kw["input_size"], budget="blocks=0", out=tmp_path / "no", **QUIET)
    rep = prune(kw["model"], model_kwargs=kw["model_kwargs"], input_size=kw["input_size"], budget="blocks=3", iters=2, warm_start=2,
                out=tmp_path / "p", **QUIET)
    assert len(rep["blocks_kept"]) == 3 and 3 in rep["blocks_kept"] and rep["blocks_fixed"] == [3]
    pruned = dnas.load_pruned(tmp_path / "p")
    assert pruned(torch.ones(1, 1, 1, 4)).shape == (1, 1, 1, 8)  # the widening block is still there
    assert sum(len(c) for c in (pruned.layer1, pruned.layer2)) == 3
    heads = [0] * 6
    same = sample_same_budget(heads, [0, 3, 5], {}, "block", 6, fixed=frozenset({3}))
    assert len(same) == 6 and all(3 in b and len(b) == 3 for b, _ in same)
    assert all(3 in b and len(b) == 2 for b, _ in random_prunings(heads, "block", 5, 2, 0, fixed=frozenset({3})))
    assert all(3 in b for b, _ in random_prunings(heads, "block", 8, None, 1, fixed=frozenset({3})))


@pytest.mark.parametrize("model, paths, fixed", [
    ("resnet18", ["layer1", "layer2", "layer3", "layer4"], {2, 4, 6}),  # each later stage opens with a downsampling block
    ("convnext_atto", [f"stages.{i}.blocks" for i in range(4)], set()),
    ("swin_tiny_patch4_window7_224", [f"layers.{i}.blocks" for i in range(4)], set()),
])
def test_timm_models_in_stages_are_found_without_blocks(model, paths, fixed):
    """timm CNNs and hierarchical ViTs: their blocks found and the downsampling ones told apart, on the
    meta-device skeleton (no weights, no compute)."""
    from dnas.spaces.dario import find_blocks, model_skeleton

    space = dnas.create_space("dario", model=model)
    assert [p for p, _ in find_blocks(model_skeleton(space.config), None)] == paths
    assert set(space.fixed_blocks()) == fixed and len(space.block_decisions()) == space.num_blocks() - len(fixed)


def test_a_proxy_search_past_float32_runs_in_float64(tmp_path, capsys):
    """A deep net without normalisation (120 residual blocks on |θ|): R_SF ≈ 1e34, whose square overflows
    float32. Forced to float32 the search diverges; auto switches to float64, says so, ends with finite
    gates, and hands the model back in float32. A tiny ViT (LayerNorm) stays in float32."""
    kw = {"model_kwargs": {"width": 8, "depth": 60}, "input_size": [1, 1, 8], "iters": 3, "warm_start": 2}
    with pytest.raises(DnasError, match=r"diverged at iteration 1; .* or search in float64 \(strategy.precision=float64\)"):
        prune("dario_toy:resnetish", **kw, strategy_config={"precision": "float32"}, out=tmp_path / "f32", **QUIET)
    capsys.readouterr()
    rep = prune("dario_toy:resnetish", **kw, out=tmp_path / "auto", **QUIET)
    assert "proxy search in float64: R_SF is" in capsys.readouterr().err
    gates = json.loads((tmp_path / "auto" / "alphas.json").read_text())
    assert len(gates) == 119 and all(0 <= v <= 1 for v in gates.values()) and rep["blocks_kept"]
    space = dnas.create_space("dario", model="dario_toy:resnetish", **{k: kw[k] for k in ("model_kwargs", "input_size")})
    net = space.supernet(None)
    strat = dnas.create_strategy("proxy", iters=1, warm_start=0)
    from dnas.engine.run import Run

    strat.search(net, None, Run(tmp_path / "direct", progress=False))
    assert all(p.dtype == torch.float32 for p in net.parameters())
    vit = dnas.create_space("dario", **TINY).supernet(None)
    assert not strat._float64(vit.eval(), Run(tmp_path / "vit", progress=False))


def test_proxy_correlation_takes_the_proxies_in_float64_where_float32_overflows():
    """The thesis' correlation protocol on a deeper unnormalised net (160 blocks): in float32 some random
    prunings' proxies are NaN; auto takes them in float64, all finite, and says so."""
    from dnas.tools.prune_quality import proxy_correlation

    kw = {"data": "synthetic", "n": 5, "space_config": {"model_kwargs": {"width": 8, "depth": 80}, "input_size": [1, 1, 8]},
          "quality_config": {"eval_size": 20, "linear_epochs": 2}}
    narrow = proxy_correlation("dario_toy:resnetish", strategy_config={"precision": "float32"}, log=lambda s: None, **kw)
    assert any(math.isnan(m["proxy"]) for m in narrow["models"])
    lines = []
    wide = proxy_correlation("dario_toy:resnetish", log=lines.append, **kw)
    assert all(math.isfinite(m["proxy"]) for m in wide["models"]) and any("proxies in float64" in ln for ln in lines)


def test_a_proxy_that_is_nan_on_abs_weights_points_to_signed_synflow(tmp_path):
    kw = {"input_size": [1, 1, 2], "iters": 0, "warm_start": 8, **QUIET}
    with pytest.raises(DnasError, match=r"every one of the 8 random α samples gave a non-finite proxy .* synflow on signed weights "
                                        r"\(dnas prune --signed-synflow, strategy.abs_params=false\)"):
        prune("dario_toy:nan_on_abs", out=tmp_path / "abs", **kw)
    rep = prune("dario_toy:nan_on_abs", strategy_config={"abs_params": False}, out=tmp_path / "signed", **kw)
    assert rep["blocks_total"] == 2


def test_hf_without_transformers_is_one_line(monkeypatch, tmp_path):
    import builtins

    real = builtins.__import__

    def no_transformers(name, *a, **k):
        if name == "transformers":
            raise ImportError("no transformers")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    with pytest.raises(DnasError, match=r"pip install 'dnas\[hf\]'"):
        dnas.create_space("dario", model=f"hf:{tmp_path}").decisions()


# -- the finite-difference α-gradient ---------------------------------------------------------------
@pytest.mark.parametrize("proxy", ["var", "synflow"])
def test_fd_alpha_gradient_is_within_one_percent_of_the_exact_one(proxy):
    space = dnas.create_space("dario", **TINY, granularity="both")
    torch.manual_seed(0)
    net = space.supernet(space.tiny_task).eval()
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_()
    with unfused_attention(net):
        s_exact, exact = proxy_step(net.double(), ProxyConfig(proxy=proxy, alpha_grad="exact"))
    s_fd, fd = proxy_step(net.float(), ProxyConfig(proxy=proxy))
    e, f = torch.cat([g.flatten() for g in exact]).float(), torch.cat([g.flatten() for g in fd])
    assert float((e - f).norm() / e.norm()) < 0.01
    assert float(s_fd) == pytest.approx(float(s_exact), rel=1e-4)


# -- the proxy strategy on other spaces --------------------------------------------------------------
@pytest.mark.parametrize("space", ["darts", "nasiam-mlp"])
def test_proxy_search_runs_on_any_space_with_a_functional_forward(space, tmp_path):
    from dnas.api import search

    tiny = dnas.registry.SPACES.get(space).tiny_config
    res = search(config={"space": {"name": space, **tiny}, "strategy": {"name": "proxy", "iters": 2, "warm_start": 1},
                         "seed": 0}, out=tmp_path / "run", progress=False)
    g = dnas.load_genotype(tmp_path / "run" / "genotype.yaml")
    assert g == res.genotype and g.space == space
    space_obj = dnas.create_space(space, **tiny)
    space_obj.validate(g)
    hist = [h for h in res.history if h["phase"] == "gradient"]
    assert len(hist) == 2 and hist[0]["alphas"] != hist[1]["alphas"]  # the proxy's gradient reaches α
