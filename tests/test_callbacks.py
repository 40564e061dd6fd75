"""The gradient loop's callbacks (dnas/engine/callbacks.py): hooks, built-ins, config, checkpoints."""
import copy
import math

import pytest
import torch

import dnas
from dnas import DnasError
from dnas.api import merge_config, parse_set, resolve, DEFAULTS
from dnas.engine.callbacks import Callback, LoopState, resolve_callbacks, upgrade_config
from dnas.engine.data import DataConfig, SearchData, synthetic_dataset
from dnas.engine.loop import MAX_REPLAYS, Diverged, GradientStrategy, upgrade_checkpoint
from dnas.engine.run import Run
from dnas.registry import create_callback
from dnas.strategy import Strategy

TINY = dict(C=4, layers=3, nodes=2)


def _search(tmp_path, callbacks=None, strategy="darts", epochs=2, net_hook=None, **cfg):
    space = dnas.create_space("darts", **TINY)
    data = SearchData(synthetic_dataset(), DataConfig(name="synthetic", batch_size=64), seed=0)
    torch.manual_seed(0)
    net = space.supernet(data.task)
    if net_hook:
        net_hook(net)
    strat = dnas.create_strategy(strategy, epochs=epochs, **cfg)
    with Run(tmp_path, progress=False) as run:
        return strat.search(net, data, run, callbacks), run.history(), net


class Recorder(Callback):
    """Writes down every hook call (an unregistered callback handed to search directly)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def on_search_start(self, state):
        self.calls.append(("start", state.epoch, state.resumed, state.start_genotype is None))

    def on_epoch_start(self, state):
        self.calls.append(("epoch_start", state.epoch))

    def on_epoch_end(self, state, record):
        self.calls.append(("epoch_end", state.epoch, record["epoch"], len(state.history)))
        record["recorded"] = state.epoch

    def should_stop(self, state):
        self.calls.append(("should_stop", state.epoch, len(state.history)))
        return None

    def on_search_end(self, state, genotype):
        self.calls.append(("end", state.epoch, genotype.space))


# -- the abstract Strategy ------------------------------------------------------------------------
def test_strategy_is_an_abc_that_documents_its_call_order():
    import inspect

    assert inspect.isabstract(Strategy)
    with pytest.raises(TypeError, match="abstract"):
        Strategy()

    class NoSearch(Strategy):
        Config = dnas.engine.loop.GradientConfig

    with pytest.raises(TypeError, match="search"):
        NoSearch()
    doc = Strategy.__doc__
    order = doc[doc.index("1. "):]
    assert order.index("check_compatible") < order.index("default_callbacks") < order.index(":meth:`search`") < order.index("state_dict")
    assert GradientStrategy.uses_callbacks and not dnas.create_strategy("tpe").uses_callbacks


def test_gradient_strategies_keep_no_hidden_loop_state():
    s = dnas.create_strategy("fairdarts", beta_decay=0.1)
    net = dnas.create_space("darts", **TINY).supernet(dnas.create_space("darts", **TINY).tiny_task)
    state = s.init_state(net)
    b = dnas.create_space("darts", **TINY).example_batch(net.task, 4)
    s.step(net, b, b, state)
    assert not [k for k in vars(s) if k.startswith("_")]  # no _start_choices, _scalers, _epoch
    assert s.state_dict() == {}


# -- hooks: order and what the state says --------------------------------------------------------
def test_hooks_are_called_in_the_documented_order(tmp_path):
    rec = Recorder()
    g, hist, _ = _search(tmp_path, [rec])
    assert rec.calls == [
        ("start", 0, False, True),  # start genotype derived after on_search_start (after any warm start)
        ("epoch_start", 0), ("epoch_end", 1, 1, 0), ("should_stop", 1, 1),
        ("epoch_start", 1), ("epoch_end", 2, 2, 1), ("should_stop", 2, 2),
        ("end", 2, "darts"),
    ]
    assert [h["recorded"] for h in hist] == [1, 2]  # a key added in on_epoch_end reaches history.jsonl
    assert "distance_prev" not in hist[0]  # an explicit list replaces the defaults


def test_callback_state_is_checkpointed_and_restored_on_resume(tmp_path):
    class Counter(Callback):
        def __init__(self):
            super().__init__()
            self.n = 0

        def on_epoch_end(self, state, record):
            self.n += 1
            record["count"] = self.n

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, state):
            self.n = state["n"]

    _search(tmp_path, [Counter()], epochs=2)
    ckpt = Run(tmp_path, progress=False).load_checkpoint()
    assert ckpt["callbacks"] == {"Counter": {"n": 2}} and ckpt["epoch"] == 2 and ckpt["start_genotype"]
    again = Counter()
    _, hist, _ = _search(tmp_path, [again, Recorder()], epochs=3)  # resume: one more epoch
    assert [h["count"] for h in hist] == [1, 2, 3] and again.n == 3


def test_a_callback_stops_the_search_with_its_reason(tmp_path, capsys):
    class StopAt(Callback):
        def should_stop(self, state):
            return "enough" if state.epoch == 2 else None

    _, hist, _ = _search(tmp_path, [StopAt()], epochs=5)
    assert len(hist) == 2 and "early stop after epoch 2: enough" in capsys.readouterr().err


# -- rollback and on_divergence ---------------------------------------------------------------------
def _nan_on(calls):
    def hook(net):
        real, count = net.loss, {"n": 0}

        def loss(batch):
            count["n"] += 1
            out = real(batch)
            if count["n"] in calls:
                out["loss"] = out["loss"] * float("nan")
            return out

        net.loss = loss

    return hook


def test_without_rollback_a_divergence_stops_in_one_line(tmp_path):
    with pytest.raises(DnasError, match=r"^the search diverged at epoch 1 \(val_loss = nan\); start it again with lower learning rates \(--set strategy.w_lr=\.\.\. "):
        _search(tmp_path, [], net_hook=_nan_on({3}))


def test_a_user_on_divergence_replaces_the_rollback(tmp_path, monkeypatch):
    class Replay(Callback):
        """Restores the epoch's start and replays it without touching the learning rates."""

        def __init__(self):
            super().__init__()
            self.seen = []

        def on_epoch_start(self, state):
            self.snapshot = copy.deepcopy(state.state_dict())

        def on_divergence(self, state, error):
            self.seen.append((state.epoch, error.term))
            state.load_state_dict(self.snapshot)
            state.events.append("replayed")
            return True

    cb = Replay()
    _, hist, _ = _search(tmp_path / "a", [cb], net_hook=_nan_on({3}))
    assert cb.seen == [(0, "val_loss = nan")] and hist[0]["events"] == ["replayed"]
    _, clean, _ = _search(tmp_path / "b", [])
    assert hist[0]["w_lr"] == clean[0]["w_lr"]  # no lr change, unlike the rollback

    class Blind(Callback):
        def on_divergence(self, state, error):
            return True  # claims to repair but does not: the loop gives up after MAX_REPLAYS

    assert MAX_REPLAYS >= 2
    import dnas.engine.loop as loop

    monkeypatch.setattr(loop, "MAX_REPLAYS", 2)  # the same guard, reached sooner
    with pytest.raises(DnasError, match="diverged at epoch 1 .* after 2 replays"):
        _search(tmp_path / "c", [Blind()], epochs=1, net_hook=_nan_on({3}))


def test_rollback_hooks_restore_the_epoch_start_and_scale_every_lr(tmp_path):
    space = dnas.create_space("darts", **TINY)
    net = space.supernet(space.tiny_task)
    s = dnas.create_strategy("darts", a_lr=0.1)
    state = s.init_state(net)
    cb = create_callback("rollback", lr_factor=0.5, max_divergences=1)
    cb.on_epoch_start(state)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    b = space.example_batch(space.tiny_task, 4)
    s.step(net, b, b, state)
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    lrs = [g["lr"] for o in [state.optimizers.weights, *state.optimizers.arch.values()] for g in o.param_groups]
    assert cb.on_divergence(state, Diverged("loss = nan")) is True
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert [g["lr"] for o in [state.optimizers.weights, *state.optimizers.arch.values()] for g in o.param_groups] == [x * 0.5 for x in lrs]
    assert state.events == ["diverged (loss = nan): restarted epoch 1 with learning rates × 0.5"]
    assert cb.state_dict() == {"divergences": 1}
    with pytest.raises(DnasError, match="diverged again at epoch 1 \\(loss = inf\\)"):
        cb.on_divergence(state, Diverged("loss = inf"))


# -- the other built-ins through their hooks ---------------------------------------------------------
def test_dominant_ops_counts_sigma_above_the_threshold_per_cell():
    space = dnas.create_space("ddarts", **TINY)
    net = space.supernet(space.tiny_task)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.fill_(-5.0)
        d = space.decisions()[0]
        net.decision_alpha(d.name)[d.options.index("sep_conv_3x3")] = 5.0  # σ = 0.993
        net.decision_alpha(d.name)[d.options.index("none")] = 5.0  # none never counts
    record = {}
    create_callback("dominant_ops").on_epoch_end(LoopState(net, None, None), record)
    assert record["dominant_ops"] == 1 and record["dominant_ops_by_cell"][d.cell] == 1
    assert sum(record["dominant_ops_by_cell"].values()) == 1
    record = {}
    create_callback("dominant_ops", threshold=0.999).on_epoch_end(LoopState(net, None, None), record)
    assert record["dominant_ops"] == 0  # σ(5) = 0.9933 < 0.999


def test_init_genotype_sets_alpha_on_a_fresh_run_only():
    g = dnas.load_genotype("resnet18")
    space = dnas.create_space("ddarts", **{k: g.config[k] for k in ("ops", "layers", "nodes", "reductions")}, C=2)
    net = space.supernet(space.tiny_task)
    cb = create_callback("init_genotype", genotype="resnet18")
    before = [a.detach().clone() for a in net.arch_parameters()]
    cb.on_search_start(LoopState(net, None, None, resumed=True))
    assert all(torch.equal(a, b) for a, b in zip(net.arch_parameters(), before))
    cb.on_search_start(LoopState(net, None, None))
    vals = torch.cat([a.detach().flatten() for a in net.arch_parameters()])
    assert set(vals.tolist()) == {3.0, -3.0}
    with pytest.raises(DnasError, match="callback 'init_genotype'.*genotype"):
        create_callback("init_genotype")
    with pytest.raises(DnasError, match="callback 'init_genotype'"):
        create_callback("init_genotype", genotype="no-such-genotype")


# -- the callbacks section of a config ------------------------------------------------------------------
def test_defaults_then_the_config_section_in_order():
    space = dnas.create_space("ddarts", **TINY)
    defaults = dnas.create_strategy("fairdarts").default_callbacks(space)
    assert list(defaults) == ["rollback", "param_free_ops", "distance", "dominant_ops"]
    assert list(dnas.create_strategy("shapley").default_callbacks(space)) == ["rollback", "param_free_ops", "distance", "dominant_ops"]
    assert list(dnas.create_strategy("darts").default_callbacks(dnas.create_space("nasiam-mlp"))) == ["rollback", "param_free_ops"]
    cbs, section = resolve_callbacks(defaults, {"distance": False, "dominant_ops": {"threshold": 0.8}, "distance_stop": True})
    assert [c.name for c in cbs] == ["rollback", "param_free_ops", "dominant_ops", "distance_stop"]
    assert section["distance"] is False and section["dominant_ops"] == {"threshold": 0.8}
    assert section["distance_stop"] == {"on": "previous", "patience": 5, "from_epoch": 10, "tol": 0.0}
    with pytest.raises(DnasError, match="unknown callback 'distanse'.*did you mean 'distance'"):
        resolve_callbacks(defaults, {"distanse": {}})
    with pytest.raises(DnasError, match="unknown option 'patiense' for callback 'distance_stop'"):
        resolve_callbacks(defaults, {"distance_stop": {"patiense": 3}})


def test_resolved_config_lists_every_callback_and_refuses_them_for_trial_strategies():
    r = resolve({"space": {"name": "ddarts", **TINY}, "strategy": "fairdarts", "callbacks": {"distance_stop": {"patience": 3}}})
    assert r.config["callbacks"]["distance_stop"]["patience"] == 3
    assert list(r.config["callbacks"]) == ["rollback", "param_free_ops", "distance", "dominant_ops", "distance_stop"]
    assert resolve(merge_config(DEFAULTS, r.config)).config == r.config  # run/config.yaml resolves to itself
    with pytest.raises(DnasError, match="strategy 'tpe' runs no epoch loop"):
        resolve({"strategy": "tpe", "callbacks": {"distance_stop": {}}})
    assert resolve({"strategy": "tpe"}).config["callbacks"] == {}


def test_set_and_merge_of_the_callbacks_section():
    assert parse_set(["callbacks.distance_stop.patience=4", "callbacks.distance=false"]) == {
        "callbacks": {"distance_stop": {"patience": 4}, "distance": False}}
    cfg = merge_config(DEFAULTS, {"callbacks": {"distance_stop": {"patience": 4}}})
    cfg = merge_config(cfg, {"callbacks": {"distance_stop": {"tol": 0.1}, "init_genotype": None}})
    assert cfg["callbacks"] == {"distance_stop": {"patience": 4, "tol": 0.1}, "init_genotype": {}}
    with pytest.raises(DnasError, match="callbacks.distance must be a mapping"):
        merge_config(DEFAULTS, {"callbacks": {"distance": 3}})


def test_old_strategy_keys_are_translated_to_callbacks():
    old = {"strategy": {"name": "fairdarts", "epochs": 3, "init_genotype": "resnet18", "early_stop": "distance",
                        "early_stop_on": "start", "early_stop_patience": 4, "early_stop_from": 1, "early_stop_tol": 0.001,
                        "divergence_lr_factor": 0.5, "max_divergences": 2}}
    new = upgrade_config(old)
    assert new["strategy"] == {"name": "fairdarts", "epochs": 3}
    assert new["callbacks"] == {"distance_stop": {"on": "start", "patience": 4, "from_epoch": 1, "tol": 0.001},
                                "init_genotype": {"genotype": "resnet18"}, "rollback": {"lr_factor": 0.5, "max_divergences": 2}}
    assert "callbacks" not in old  # the input is left as it is
    # a resolved run/config.yaml of an older dnas: early_stop none and init_genotype null switch nothing on
    resolved_old = {"strategy": {"name": "darts", "early_stop": "none", "early_stop_patience": 5, "init_genotype": None,
                                 "divergence_lr_factor": 0.1, "max_divergences": 1}}
    assert upgrade_config(resolved_old)["callbacks"] == {"rollback": {"lr_factor": 0.1, "max_divergences": 1}}
    # explicit callbacks options win over old keys
    both = upgrade_config({**old, "callbacks": {"distance_stop": {"patience": 9}, "rollback": False}})
    assert both["callbacks"]["distance_stop"]["patience"] == 9 and both["callbacks"]["rollback"] is False
    r = resolve({"space": {"name": "ddarts", **TINY}, **old})
    assert [c.name for c in r.callbacks] == ["rollback", "param_free_ops", "distance", "dominant_ops", "distance_stop", "init_genotype"]
    assert r.callbacks[0].config.lr_factor == 0.5 and "early_stop" not in r.config["strategy"]


def test_old_checkpoints_are_upgraded():
    old = {"epoch": 3, "strategy": {"start_genotype": {"x": ["a"]}, "grad_scalers": {"arch": {"scale": 2.0}}}, "divergences": 1}
    new = upgrade_checkpoint(old)
    assert new["start_genotype"] == {"x": ["a"]} and new["grad_scalers"] == {"arch": {"scale": 2.0}}
    assert new["strategy"] == {} and new["callbacks"] == {"rollback": {"divergences": 1}} and "divergences" not in new


def test_cli_early_stop_none_switches_off_a_config_files_stop(tmp_path):
    from dnas.cli import build_parser
    from dnas.cli.search import _search_overlay

    p = tmp_path / "run.yaml"
    p.write_text("space: {name: ddarts, C: 4, layers: 3, nodes: 2}\nstrategy: fairdarts\ncallbacks: {distance_stop: {patience: 2}}\n")
    args = build_parser().parse_args(["search", "--config", str(p), "--early-stop", "none"])
    assert resolve(_search_overlay(args)).config["callbacks"]["distance_stop"] is False
    args = build_parser().parse_args(["search", "--config", str(p), "--early-stop", "distance"])
    assert resolve(_search_overlay(args)).config["callbacks"]["distance_stop"]["patience"] == 2


def test_a_registered_user_callback_through_the_api(tmp_path):
    from dataclasses import dataclass

    from dnas.registry import register_callback

    @dataclass
    class Opts:
        factor: float = 1.0

    @register_callback("test-scaled-loss")
    class Scaled(Callback):
        Config = Opts

        def on_epoch_end(self, state, record):
            record["scaled_loss"] = self.config.factor * record["train_loss"]

    r = dnas.search("darts", "darts", "synthetic", space_config=TINY, strategy_config={"epochs": 1},
                    callbacks={"test-scaled-loss": {"factor": 2.0}}, data_config={"batch_size": 64},
                    out=tmp_path / "run", progress=False)
    h = r.history[0]
    assert math.isclose(h["scaled_loss"], 2 * h["train_loss"]) and "distance_prev" in h
    import yaml

    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["callbacks"]["test-scaled-loss"] == {"factor": 2.0}
