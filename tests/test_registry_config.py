import re
import warnings

import pytest

import dnas
from dnas import DnasError
from dnas.api import merge_config, parse_set, resolve


def test_unknown_names_list_the_choices():
    with pytest.raises(DnasError, match=r"unknown space 'dart'.*did you mean 'darts'.*choose one of: .*darts"):
        dnas.create_space("dart")
    with pytest.raises(DnasError, match=r"unknown strategy 'nope'; choose one of: .*darts"):
        dnas.create_strategy("nope")


def test_unknown_and_mistyped_options():
    with pytest.raises(DnasError, match=r"unknown option 'chanels' for space 'darts'"):
        dnas.create_space("darts", chanels=8)
    with pytest.raises(DnasError, match=r"option 'order' of strategy 'darts' must be one of 1, 2, got 3"):
        dnas.create_strategy("darts", order=3)
    with pytest.raises(DnasError, match=r"space 'darts': C, layers"):
        dnas.create_space("darts", C=0)
    assert dnas.create_space("darts", C=None).config.C == 16  # None keeps the default


def test_register_twice_warns_and_user_strategy_is_created():
    @dnas.register_strategy("user-first-order")
    class UserStrategy(dnas.GradientStrategy):
        pass

    assert isinstance(dnas.create_strategy("user-first-order", epochs=1), UserStrategy)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        dnas.register_strategy("user-first-order")(type("Other", (dnas.GradientStrategy,), {}))
    assert any("registered twice" in str(x.message) for x in w)


def test_incompatible_pair_fails_before_any_work():
    @dnas.register_strategy("needs-cells")
    class NeedsCells(dnas.GradientStrategy):
        needs = frozenset({"alpha", "data", "alpha_per_cell"})

    with pytest.raises(DnasError, match=r"^strategy 'needs-cells' needs one α per cell \(alpha_per_cell\); space 'darts' "
                                        r"offers it with space.individual=true; spaces that offer it: ddarts$"):
        resolve({"space": {"name": "darts"}, "strategy": {"name": "needs-cells"}})
    resolve({"space": {"name": "ddarts"}, "strategy": {"name": "needs-cells"}})  # ddarts offers one α per cell
    resolve({"space": {"name": "darts", "individual": True}, "strategy": {"name": "needs-cells"}})  # so does darts, individual
    with pytest.raises(DnasError, match=r"needs cell ablation \(ablation\) and one α per cell \(alpha_per_cell\), which "
                                        r"space 'mlp-depth' does not offer; spaces that offer them: ddarts, darts \(with space.individual=true\)"):
        resolve({"space": {"name": "mlp-depth"}, "strategy": {"name": "shapley"}})


def test_config_merge_and_set_parsing():
    sets = parse_set(["space.C=8", "strategy.a_betas=[0.9, 0.99]", "seed=3", "data.name=synthetic"])
    assert sets == {"space": {"C": 8}, "strategy": {"a_betas": [0.9, 0.99]}, "seed": 3, "data": {"name": "synthetic"}}
    r = resolve(sets)
    assert r.config["space"]["C"] == 8 and r.config["space"]["layers"] == 8
    assert r.config["strategy"]["w_lr"] == 0.025 and r.config["strategy"]["a_betas"] == [0.9, 0.99]
    with pytest.raises(DnasError, match=r"unknown key 'sede'.*did you mean 'seed'"):
        merge_config({}, {"sede": 1})
    with pytest.raises(DnasError, match="--set expects key=value"):
        parse_set(["space.C"])
    # 3e-4 is a number, as a user writes it (PyYAML alone reads YAML 1.1's '3e-4' as a string)
    assert parse_set(["strategy.a_lr=3e-4", "strategy.w_lr=1E-2", "space.name=1e"]) == {
        "strategy": {"a_lr": 3e-4, "w_lr": 0.01}, "space": {"name": "1e"}}
    assert resolve(parse_set(["strategy.a_lr=3e-4"])).strategy.config.a_lr == 3e-4
    # another component's name resets that section to its defaults
    assert merge_config({"space": {"name": "darts", "C": 4}}, {"space": {"name": "ddarts"}})["space"] == {"name": "ddarts"}


def test_config_file_reads_exponents_as_numbers(tmp_path):
    from dnas.api import load_config_file

    (tmp_path / "c.yaml").write_text("strategy: {name: darts, a_lr: 6e-4, a_betas: [5e-1, 0.999]}\n")
    cfg = load_config_file(tmp_path / "c.yaml")
    assert cfg["strategy"]["a_lr"] == 6e-4 and cfg["strategy"]["a_betas"] == [0.5, 0.999]


def test_darts_defaults_follow_formulas():
    c = dnas.create_strategy("darts").config
    assert (c.epochs, c.w_lr, c.w_lr_min, c.w_momentum, c.w_weight_decay, c.grad_clip) == (50, 0.025, 0.001, 0.9, 3e-4, 5.0)
    assert (c.a_lr, tuple(c.a_betas), c.a_weight_decay) == (3e-4, (0.5, 0.999), 1e-3)
    s = dnas.create_space("darts").config
    assert (s.C, s.layers, s.nodes) == (16, 8, 4)


@pytest.mark.parametrize("value, says", [
    ({"epochs": "abc"}, "option 'epochs' of strategy 'darts' must be an integer, got 'abc'"),
    ({"w_lr": "fast"}, "option 'w_lr' of strategy 'darts' must be a number, got 'fast'"),
    ({"order": 1.5}, "must be one of 1, 2, got 1.5"),
])
def test_a_wrong_type_is_named_in_words(value, says):
    with pytest.raises(DnasError, match=re.escape(says)):
        dnas.create_strategy("darts", **value)


@pytest.mark.parametrize("name, says", [
    ("mps", "device 'mps' was asked for but this torch has no usable MPS"),
    ("cuda:3", "device 'cuda:3' was asked for but no GPU is visible"),
    ("gpu", "unknown device 'gpu'; use cpu, cuda, cuda:N, mps or auto"),
    ("meta", "device 'meta' is not one dnas runs on"),
])
def test_a_device_this_machine_lacks_is_one_line(name, says):
    import torch

    from dnas.engine.distributed import resolve_device

    if torch.cuda.is_available() or (name == "mps" and torch.backends.mps.is_available()):
        pytest.skip("this machine has the device")
    with pytest.raises(DnasError, match=re.escape(says)):
        resolve_device(name)


def test_values_that_would_train_silently_wrong_are_refused_up_front():
    """NaN/inf in any float option, a negative grad_clip (clip_grad_norm_ flips the gradient) and a
    seed torch cannot take are one line before any work."""
    with pytest.raises(DnasError, match="option 'a_lr' of strategy 'darts' must be a finite number, got nan"):
        resolve(parse_set(["strategy.a_lr=.nan"]))
    with pytest.raises(DnasError, match="option 'a_betas' .* must be a finite number"):
        resolve(parse_set(["strategy.a_betas=[0.5, .inf]"]))
    with pytest.raises(DnasError, match="grad_clip must be >= 0"):
        resolve(parse_set(["strategy.grad_clip=-1"]))
    with pytest.raises(DnasError, match=r"seed must be in \[0, 2\^63\)"):
        resolve({"seed": 10**20})
    from dnas.config import make_config
    from dnas.evaluate.supervised import TrainConfig

    with pytest.raises(DnasError, match="grad_clip must be >= 0"):
        make_config(TrainConfig, {"grad_clip": -1.0}, "train")
    assert make_config(TrainConfig, {"grad_clip": 0}, "train").grad_clip == 0.0  # 0 = off, still fine
