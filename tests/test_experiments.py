"""Every experiment YAML validates at paper scale and at its `small` preset; the presets run (slow)."""
from pathlib import Path

import pytest

from dnas.api import apply_preset, load_config_file, resolve
from dnas.cli import main

YAMLS = sorted((Path(__file__).parent.parent / "experiments").glob("*.yaml"))


def test_every_paper_experiment_has_a_config():
    names = {p.stem for p in YAMLS}
    expected = {"darts_cifar10", "darts_cifar10_2nd", "fairdarts_cifar10", "ddarts_lt_cifar10", "ddarts_lf_cifar10",
                "dartopti_resnet18", "nasiam_simsiam_cifar10", "nasiam_simclr_cifar10", "nasiam_mocov2_cifar10",
                "nasiam_s_prime", "dario_mae_vit_base", "dario_mobilevit_s", "csnas_tpe", "csnas_random",
                "activation_search", "colornas_rgb_cifar10", "colornas_rb_cifar10", "colornas_rgby_cifar10"}
    assert expected <= names


@pytest.mark.parametrize("path", YAMLS, ids=[p.stem for p in YAMLS])
def test_experiment_validates_at_both_scales(path):
    cfg = load_config_file(path)
    full = resolve(cfg).config
    small = resolve(apply_preset(cfg, {"preset": "small"})).config
    assert full != small  # the preset changes something
    if "cifar10" in path.stem:
        assert full["data"]["name"] == "cifar10" and small["data"]["name"] in ("digits", "synthetic")


def test_paper_settings_in_the_experiments():
    by_name = {p.stem: load_config_file(p) for p in YAMLS}
    # D-DARTS: the thesis searches CIFAR-10 with batch 128
    assert by_name["ddarts_lt_cifar10"]["data"]["batch_size"] == 128 == by_name["ddarts_lf_cifar10"]["data"]["batch_size"]
    # CSNAS: K = 150 per batch, the paper's TPE defaults (no override at paper scale), contrastive fitness
    for name in ("csnas_tpe", "csnas_random"):
        r = resolve(by_name[name])
        assert r.strategy.config.batch_size == 150 and r.strategy.config.fitness == "contrastive"
        assert (r.strategy.config.nce, r.strategy.config.negatives, r.strategy.config.lr) == ("paper", "batch", 0.001)
    tpe = resolve(by_name["csnas_tpe"]).strategy.config
    assert (tpe.n_startup_trials, tpe.n_ei_candidates, tpe.gamma) == (20, 20000, 0.2)
    # ColorNAS: one network per channel of RGB / RB / RGBY, beta-DARTS' decay on
    for model, n in (("rgb", 3), ("rb", 2), ("rgby", 4)):
        r = resolve(by_name[f"colornas_{model}_cifar10"])
        assert r.space.config.model == model and r.space.config.per_channel and len(r.space.branches()) == n
        assert r.strategy.config.beta_decay > 0 and r.space.default_parser == "colornas"


def test_preset_order_explicit_options_win(tmp_path):
    cfg = load_config_file(next(p for p in YAMLS if p.stem == "darts_cifar10"))
    out = apply_preset(cfg, {"preset": "small", "strategy": {"epochs": 7}})
    assert out["strategy"]["epochs"] == 7 and out["data"]["name"] == "digits"
    from dnas import DnasError

    with pytest.raises(DnasError, match="unknown preset 'smal'.*did you mean 'small'"):
        apply_preset(cfg, {"preset": "smal"})


@pytest.mark.slow
@pytest.mark.parametrize("path", YAMLS, ids=[p.stem for p in YAMLS])
def test_small_preset_runs(path, tmp_path):
    assert main(["search", "--config", str(path), "--set", "preset=small", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert (tmp_path / "run" / "genotype.yaml").is_file()
