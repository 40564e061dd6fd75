"""TPE and random search: categorical encodings, the CSNAS loss by hand, reproducibility,
several workers on one SQLite study, and resume after SIGKILL."""
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import dnas
from dnas import DnasError, create_space, create_strategy
from dnas.engine.fitness import ContrastiveNet, csnas_loss, ema_update_, nce_loss, negatives_for
from dnas.registry import SPACES
from dnas.tools.report import best_curve, read_trials

TINY = ["--space", "darts", "--data", "synthetic", "--set", "space.C=4", "--set", "space.layers=3", "--set", "space.nodes=2",
        "--set", "space.auxiliary=false", "--set", "data.batch_size=8", "--set", "strategy.subset=0.5", "--set", "strategy.batch_size=8",
        "--set", "strategy.lr=0.025", "--no-progress"]
TPE = ["--strategy", "tpe", "--set", "strategy.n_ei_candidates=24"]  # the paper's 20,000 candidates take ~0.6 s a trial
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}


def _study(url, name="dnas"):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=url)


def _darts_structure_ok(space, g):
    """DARTS cells: every node keeps exactly 2 incoming edges, one non-none op each."""
    for key in space.cell_keys():
        for i in range(space.config.nodes):
            kept = [g.choices[f"{key}.node{i}.edge{j}"] for j in range(2 + i)]
            if sum(1 for k in kept if k) != 2 or any(len(k) > 1 or "none" in k for k in kept):
                return False
    return True


# -- encodings ----------------------------------------------------------------------------------


def test_darts_encoding_is_a_bijection_onto_valid_cells():
    space = create_space("darts", C=4, layers=1, nodes=2)  # one cell key: every sample of it can be listed
    params = space.categorical()
    seen = set()
    for values in itertools.product(*params.values()):
        g = space.from_categorical(dict(zip(params, values)))
        assert _darts_structure_ok(space, g)
        seen.add(g)
    n = math.prod(len(v) for v in params.values())
    assert len(seen) == n == space.space_size()  # injective, and as many as DARTS eq. (4.1) counts


@pytest.mark.parametrize("name", ["darts", "ddarts", "nasiam-mlp", "dario", "colornas"])
@pytest.mark.parametrize("strategy", ["tpe", "random"])
def test_sampling_respects_constraints(name, strategy):
    if name not in SPACES:
        pytest.skip(f"space '{name}' is not registered in this tree")
    import optuna

    space = create_space(name, **SPACES.get(name).tiny_config)
    tpe = {"n_startup_trials": 3, "n_ei_candidates": 24}
    sampler = create_strategy(strategy, **tpe).sampler(0) if strategy == "tpe" else create_strategy(strategy).sampler(0)
    study = optuna.create_study(sampler=sampler)
    params, accepted, rejected = space.categorical(), 0, 0
    for _ in range(15):
        t = study.ask()
        sample = {k: t.suggest_categorical(k, list(v)) for k, v in params.items()}
        try:
            g = space.from_categorical(sample)
        except DnasError:
            rejected += 1
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
            continue
        space.validate(g)
        if name in ("darts", "ddarts"):
            assert _darts_structure_ok(space, g)
        accepted += 1
        study.tell(t, float(len(str(sorted(g.choices.items())))))  # any deterministic value
    assert accepted >= 6
    if name in ("darts", "ddarts", "colornas"):
        assert rejected == 0  # the DARTS encoding (per branch for colornas) only yields valid cells


def test_random_inputs_are_uniform():
    import optuna

    space = create_space("darts", C=4, layers=3, nodes=2)
    study = optuna.create_study(sampler=create_strategy("random").sampler(1))
    counts: dict[str, int] = {}
    for _ in range(600):
        t = study.ask()
        v = t.suggest_categorical("normal.node1.inputs", list(space.categorical()["normal.node1.inputs"]))
        counts[v] = counts.get(v, 0) + 1
        study.tell(t, 0.0)
    assert sorted(counts) == ["0+1", "0+2", "1+2"]
    assert all(150 <= c <= 250 for c in counts.values()), counts  # 200 expected each (±~5 σ)


# -- the CSNAS loss -----------------------------------------------------------------------------


def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def test_nce_loss_is_csnas_eq_2_by_hand():
    # seed 0, B = 3, K = 5, D = 8: anchors z_i, positives z_i^t, negatives X' (K per sample)
    torch.manual_seed(0)
    z, zt, neg = torch.randn(3, 8), torch.randn(3, 8), torch.randn(3, 5, 8)
    tau = 0.07
    total = 0.0
    for i in range(3):
        # eq. (1): ℓ(z_i, z) = exp(s(z_i, z)/τ) / Σ over {z_i^t} ∪ X' of exp(s(z_i, ·)/τ), all against z_i
        e_pos = math.exp(_cos(z[i], zt[i]) / tau)
        e_neg = [math.exp(_cos(z[i], neg[i, k]) / tau) for k in range(5)]
        denom = e_pos + sum(e_neg)
        # eq. (2): −log ℓ(z_i, z_i^t) − Σ_{x'∈X'} log[1 − ℓ(z_i, z')]
        total += -math.log(e_pos / denom) - sum(math.log(1 - e / denom) for e in e_neg)
    paper = float(nce_loss(z, zt, neg, tau))
    assert abs(paper - total / 3) < 1e-4 * abs(total / 3)
    assert abs(paper - 13.7222) < 1e-3
    # the authors' code: softmax cross-entropy, the negatives compared with the positive's view
    code = 0.0
    for i in range(3):
        e_pos = math.exp(_cos(z[i], zt[i]) / tau)
        code += -math.log(e_pos / (e_pos + sum(math.exp(_cos(zt[i], neg[i, k]) / tau) for k in range(5))))
    assert abs(float(nce_loss(z, zt, neg, tau, "code")) - code / 3) < 1e-4 and abs(code / 3 - 9.2897) < 1e-3
    with pytest.raises(DnasError, match="unknown NCE form"):
        nce_loss(z, zt, neg, tau, "pirl")


def test_csnas_loss_eq_3_with_the_papers_in_batch_negatives():
    # B = 3 samples: each has 2(B − 1) = 4 in-batch negatives, both views of the 2 others
    g = torch.Generator().manual_seed(5)
    bank = torch.randn(6, 4, generator=g)
    index = torch.tensor([0, 2, 5])
    z = torch.randn(3, 4, generator=g, requires_grad=True)
    zt = torch.randn(3, 4, generator=g, requires_grad=True)
    tau, lam = 0.1, 0.5

    def l_nce(anchor, pos):
        total = 0.0
        for i in range(3):
            others = [z[j].detach() for j in range(3) if j != i] + [zt[j].detach() for j in range(3) if j != i]
            e_pos = math.exp(_cos(anchor[i], pos[i]) / tau)
            e_neg = [math.exp(_cos(anchor[i], o) / tau) for o in others]
            d = e_pos + sum(e_neg)
            total += -math.log(e_pos / d) - sum(math.log(1 - e / d) for e in e_neg)
        return total / 3

    m = bank[index]
    expect = lam * l_nce(m, zt.detach()) + (1 - lam) * l_nce(m, z.detach())  # eq. (3)
    got = csnas_loss(m, z, zt, index, bank, tau, lam)
    assert abs(float(got.detach()) - expect) < 1e-4
    got.backward()
    assert float(z.grad.abs().sum()) > 0 and float(zt.grad.abs().sum()) > 0  # negatives carry gradient too
    # the authors' code: 2(B − 1) random bank rows outside the batch, the same for every sample
    got = csnas_loss(m, z.detach(), zt.detach(), index, bank, tau, lam, generator=torch.Generator().manual_seed(0),
                     nce="code", negatives="bank")
    assert math.isfinite(float(got))
    with pytest.raises(DnasError, match="unknown negatives"):
        csnas_loss(m, z, zt, index, bank, negatives="memory")


def test_projection_heads_map_to_p_and_combine_m_views():
    from torch import nn

    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 6))  # f: no classifier, its output is the feature
    x = [torch.randn(4, 3, 2, 2) for _ in range(3)]
    for projection, n_params in (("mlp", (6 * 6 + 6) + (6 * 5 + 5) + (3 * 5 * 5 + 5) + (5 * 5 + 5)),
                                 ("linear", (6 * 5 + 5) + (3 * 5 * 5 + 5))):
        head = ContrastiveNet(net, 6, proj_dim=5, views=3, projection=projection)
        assert sum(p.numel() for p in head.parameters()) - sum(p.numel() for p in net.parameters()) == n_params
        assert head.embed(x[0]).shape == (4, 5) and head.embed_views(x).shape == (4, 5)
        # z^t = l([g(f(x^{t_1})); g(f(x^{t_2})); g(f(x^{t_3}))])
        assert torch.allclose(head.embed_views(x), head.l(torch.cat([head.g(net(v)) for v in x], 1)))
    none = ContrastiveNet(net, 6, views=3, projection="none")
    assert torch.allclose(none.embed_views(x), torch.stack([net(v) for v in x]).mean(0))
    with pytest.raises(DnasError, match="combines 3 views"):
        none.embed_views(x[:2])


def test_csnas_loss_code_negatives_match_hand_computation():
    g = torch.Generator().manual_seed(3)
    bank = torch.randn(5, 3, generator=g)
    index = torch.tensor([1, 3])
    f = torch.randn(2, 3, generator=g, requires_grad=True)
    gv = torch.randn(2, 3, generator=g)
    tau, lam = 0.2, 0.3

    def l_nce(q):
        total = 0.0
        for b in range(2):
            pos = math.exp(_cos(bank[index[b]], q[b]) / tau)
            negs = [math.exp(_cos(q[b], bank[j]) / tau) for j in range(5) if j != index[b]]
            negs += [math.exp(_cos(q[b], q[k]) / tau) for k in range(2) if k != b]
            total += -math.log(pos / (pos + sum(negs)))
        return total / 2

    expect = lam * l_nce(gv.detach()) + (1 - lam) * l_nce(f.detach())
    got = csnas_loss(bank[index], f, gv, index, bank, tau, lam, nce="code", negatives="bank+batch")
    assert abs(float(got.detach()) - expect) < 1e-5
    got.backward()
    assert f.grad is not None and float(f.grad.abs().sum()) > 0  # the view gets a gradient, the bank none
    # a capped bank: k random rows outside the batch, the same for both samples
    negs = negatives_for(index, bank, f.detach(), k=2, generator=torch.Generator().manual_seed(0))
    assert negs.shape == (2, 3, 3) and torch.equal(negs[0, :2], negs[1, :2])
    rows = {tuple(r.tolist()) for r in negs[0, :2]}
    assert rows <= {tuple(bank[j].tolist()) for j in (0, 2, 4)}
    # the memory bank's EMA
    before = bank.clone()
    ema_update_(bank, index, f, 0.5)
    assert torch.allclose(bank[index], 0.5 * before[index] + 0.5 * f.detach())
    assert torch.equal(bank[[0, 2, 4]], before[[0, 2, 4]])


def test_tpe_defaults_are_csnas_and_optunas_are_options():
    from dnas.strategies.tpe import good_trials

    s = create_strategy("tpe")
    c = s.config
    assert (c.n_startup_trials, c.n_ei_candidates, c.gamma) == (20, 20000, 0.2)
    assert (c.batch_size, c.lr, c.momentum, c.tau, c.nce_weight) == (150, 0.001, 0.9, 0.07, 0.5)
    assert 2 * (c.batch_size - 1) == 298  # in-batch negatives per sample
    assert (c.nce, c.negatives, c.projection) == ("paper", "batch", "mlp")
    sampler = s.sampler(0)
    assert sampler._n_startup_trials == 20 and sampler._n_ei_candidates == 20000
    assert [sampler._gamma(n) for n in (1, 10, 11, 100, 1000)] == [1, 2, 3, 20, 200]  # the best 20 %, ⌈0.2 n⌉
    assert good_trials(150, 0.2) == 30
    optuna_like = create_strategy("tpe", n_startup_trials=10, n_ei_candidates=24, gamma="optuna").sampler(0)
    assert optuna_like._gamma is None and optuna_like._n_ei_candidates == 24  # optuna's default rule
    import dataclasses

    meta = {f.name: dict(f.metadata) for f in dataclasses.fields(type(c))}
    assert meta["n_startup_trials"] == {"paper": 20, "code": 20, "optuna": 10}
    assert meta["n_ei_candidates"]["optuna"] == 24 and meta["batch_size"] == {"paper": 150, "code": 256}
    with pytest.raises(DnasError, match="gamma must be in"):
        create_strategy("tpe", gamma=1.5)


# -- searches -----------------------------------------------------------------------------------


def _search(out, *extra, seed=0):
    from dnas.cli import main

    assert main(["search", *TINY, *TPE, "--out", str(out), "--seed", str(seed), *extra]) == 0


def test_fixed_seed_reproduces_the_trial_sequence(tmp_path, capsys):
    args = ("--trials", "3", "--set", "strategy.n_startup_trials=1", "--set", "strategy.epochs=1")
    _search(tmp_path / "a", *args)
    _search(tmp_path / "b", *args)
    a, b = read_trials(tmp_path / "a"), read_trials(tmp_path / "b")
    assert len(a) == 3 and all(r["state"] == "COMPLETE" for r in a)
    assert [(r["genotype"], r["fitness"]) for r in a] == [(r["genotype"], r["fitness"]) for r in b]
    assert len({json.dumps(r["genotype"], sort_keys=True) for r in a}) > 1
    best = min(a, key=lambda r: r["fitness"])
    assert dnas.load_genotype(tmp_path / "a" / "genotype.yaml").choices == {k: tuple(v) for k, v in best["genotype"].items()}
    xs, ys = best_curve(a)
    assert xs == [1, 2, 3] and ys == sorted(ys, reverse=True) and ys[-1] == best["fitness"]
    from dnas.tools.show import show

    text = show(str(tmp_path / "a"))
    assert "3 complete" in text and (tmp_path / "a" / "plots" / "fitness.png").is_file()


def _cli(out, *extra):
    cmd = [sys.executable, "-m", "dnas", "search", *TINY, *TPE, "--out", str(out), *extra]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return False


def _completed(url, name="dnas"):
    try:
        return sum(t.state.name == "COMPLETE" for t in _study(url, name).get_trials())
    except Exception:  # noqa: BLE001  (not created yet)
        return -1


def test_two_processes_fill_one_sqlite_study(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    common = ("--trials", "6", "--storage", url, "--study", "s", "--set", "strategy.epochs=2", "--set", "strategy.n_startup_trials=2")
    other = _cli(tmp_path / "w1", *common, "--seed", "1")  # a second process, as on another machine
    assert _wait_for(lambda: _completed(url, "s") >= 0 and _study(url, "s").get_trials()), "the worker process never started a trial"
    _search(tmp_path / "w0", *common, seed=0)  # this process joins the same study
    _, err = other.communicate(timeout=240)
    assert other.returncode == 0, err[-2000:]
    trials = _study(url, "s").get_trials()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 6  # the budget, not more: none lost, none extra
    assert len({t.number for t in trials}) == len(trials)  # no duplicated trial
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING", "FAIL")]
    assert {t.user_attrs["pid"] for t in done} == {os.getpid(), other.pid}  # both processes contributed
    for w in ("w0", "w1"):  # each run folder holds the whole table and the same best genotype
        assert sum(r["state"] == "COMPLETE" for r in read_trials(tmp_path / w)) == 6
    assert (tmp_path / "w0" / "genotype.yaml").read_text() == (tmp_path / "w1" / "genotype.yaml").read_text()


def test_resume_after_sigkill(tmp_path, capsys):
    run = tmp_path / "run"
    url = f"sqlite:///{(run / 'study.db').resolve()}"
    # 20 epochs: a trial of ~2 s, so polling every 0.2 s finds the third one running (2 epochs took
    # 0.1 s a trial on an idle machine, and the whole search could end between two polls)
    args = ("--trials", "4", "--set", "strategy.epochs=20", "--set", "strategy.n_startup_trials=2")
    p = _cli(run, *args)

    def inside_third_trial():
        return _completed(url) >= 2 and any(t.state.name == "RUNNING" for t in _study(url).get_trials())

    assert _wait_for(inside_third_trial, timeout=240)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = _study(url).get_trials()
    done_before = {t.number: t.params for t in before if t.state.name == "COMPLETE"}
    running = [t for t in before if t.state.name == "RUNNING"]
    assert 2 <= len(done_before) < 4 and len(running) == 1
    _search(run, *args)  # the same command again (here in this process)
    after = _study(url).get_trials()
    done = [t for t in after if t.state.name == "COMPLETE"]
    assert len(done) == 4 and not [t for t in after if t.state.name in ("RUNNING", "WAITING")]
    assert {t.number: t.params for t in done if t.number in done_before} == done_before  # kept, not redone
    for t in running:  # the killed trial: failed, then retried with the parameters it had drawn
        assert after[t.number].state.name == "FAIL"
        retry = [r for r in after if r.system_attrs.get("failed_trial") == t.number]
        assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
        assert retry[0].params.items() >= t.params.items()
    assert (run / "genotype.yaml").is_file()


@pytest.mark.slow
def test_workers_flag_spawns_processes(tmp_path):
    _search(tmp_path / "run", "--trials", "6", "--workers", "2", "--set", "strategy.epochs=3")
    recs = read_trials(tmp_path / "run")
    assert sum(r["state"] == "COMPLETE" for r in recs) == 6
    assert {r["worker"] for r in recs if r["state"] == "COMPLETE"} == {0, 1}


def test_bad_inputs_fail_in_one_line(tmp_path):
    from dnas.api import resolve

    with pytest.raises(DnasError, match="unknown option 'trials' for strategy 'darts'"):
        resolve({"strategy": {"name": "darts", "trials": 3}})
    with pytest.raises(DnasError, match="subset must be in"):
        create_strategy("tpe", subset=0)
    with pytest.raises(DnasError, match="cannot open optuna storage 'nonsense'"):
        dnas.search("darts", "tpe", "synthetic", space_config={"C": 4, "layers": 1, "nodes": 1},
                    strategy_config={"storage": "nonsense"}, out=tmp_path / "u", progress=False)
    if "nasiam-mlp" in SPACES:  # no labels: a supervised fitness is refused before any work
        with pytest.raises(DnasError, match=r"needs labelled data \(labels\), which space 'nasiam-mlp' does not offer.*"
                                            r"strategy.fitness=contrastive"):
            dnas.search("nasiam-mlp", "random", "synthetic", space_config=SPACES.get("nasiam-mlp").tiny_config,
                        strategy_config={"trials": 1, "fitness": "supervised"}, out=tmp_path / "n", progress=False)
        assert not (tmp_path / "n").exists()


def test_trial_search_on_a_two_view_space_scores_with_the_contrastive_fitness(tmp_path):
    """fitness auto on a self-supervised space: CSNAS' NCE loss on the data's own two views."""
    from dnas.engine.trials import fitness_for
    from dnas.space import Task

    assert fitness_for(create_strategy("tpe").config, Task((1, 8, 8), 0, two_views=True)) == "contrastive"
    assert fitness_for(create_strategy("tpe").config, Task((1, 8, 8), 0)) == "contrastive"
    assert fitness_for(create_strategy("tpe").config, Task((1, 8, 8), 10)) == "supervised"
    assert fitness_for(create_strategy("tpe").config, Task((5,), 0, out_dim=2)) == "supervised"
    if "nasiam-mlp" not in SPACES:
        pytest.skip("nasiam-mlp not available")
    r = dnas.search("nasiam-mlp", "random", "synthetic", space_config=SPACES.get("nasiam-mlp").tiny_config,
                    strategy_config={"trials": 2, "epochs": 1, "max_steps": 2}, data_config={"batch_size": 8},
                    out=tmp_path / "n", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "n" / "trials.jsonl").read_text().splitlines()]
    assert sum(r_["state"] == "COMPLETE" for r_ in rows) == 2 and all(r_["fitness"] > 0 for r_ in rows if r_["fitness"])
    SPACES.get("nasiam-mlp")(**SPACES.get("nasiam-mlp").tiny_config).validate(r.genotype)


def test_default_encoding_rejects_invalid_samples_without_counting_them(tmp_path):
    """A user space with a constraint and no encoding of its own: exactly one of three optional
    decisions kept. Samples breaking it are pruned, never counted, never the result."""
    from torch import nn

    from dnas import Decision, SearchSpace, Supernet, register_space
    from dnas.registry import SPACES

    class OneOf(SearchSpace):
        def decisions(self):
            return [Decision(f"d{i}", ("keep",), min_options=0) for i in range(3)]

        def validate(self, g):
            super().validate(g)
            if sum(bool(v) for v in g.choices.values()) != 1:
                raise DnasError("keep exactly one decision")

        def build_network(self, g, task):
            self.validate(g)
            return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(task.input_shape), task.num_classes))

        def supernet(self, task):
            return Supernet(self, task)  # trial strategies use only its space and task

    from dataclasses import dataclass

    OneOf.Config = dataclass(type("OneOfConfig", (), {}))
    register_space("one-of-test")(OneOf)
    try:
        assert OneOf().categorical() == {f"d{i}": ("keep", OneOf.DROP) for i in range(3)}
        dnas.search("one-of-test", "random", "synthetic", strategy_config={"trials": 4, "epochs": 1}, out=tmp_path / "r", progress=False)
    finally:
        SPACES._items.pop("one-of-test")
    recs = read_trials(tmp_path / "r")
    done = [r for r in recs if r["state"] == "COMPLETE"]
    assert len(done) == 4 and all(sum(bool(v) for v in r["genotype"].values()) == 1 for r in done)
    invalid = [r for r in recs if r["state"] == "PRUNED"]
    assert invalid and all(r["note"].startswith("invalid") and r["genotype"] is None for r in invalid)


def test_contrastive_fitness_reads_no_labels():
    from torch.utils.data import TensorDataset

    from dnas.engine.fitness import TrainSpec, train_and_score

    space = create_space("darts", C=4, layers=2, nodes=1, auxiliary=False)
    g = space.random_genotype(__import__("random").Random(0))
    x = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    spec = TrainSpec(fitness="contrastive", epochs=2, batch_size=8, tau=0.1, views=2)
    scores = []
    for y in (torch.zeros(24, dtype=torch.long), torch.randint(0, 4, (24,))):
        torch.manual_seed(0)
        model = space.build_network(g, dnas.Task((3, 8, 8), 4))
        scores.append(train_and_score(model, TensorDataset(x[:12], y[:12]), TensorDataset(x[12:], y[12:]), spec, seed=1,
                                      device=torch.device("cpu")))
    assert scores[0] == scores[1]
    assert "accuracy" not in scores[0] and scores[0]["steps"] == 2  # 12 images, batches of 8 (last dropped), 2 epochs
    assert math.isfinite(scores[0]["fitness"]) and scores[0]["fitness"] > 0


@pytest.mark.parametrize("fitness", ["supervised", "contrastive"])
def test_max_steps_caps_training_across_epochs(fitness):
    from torch.utils.data import TensorDataset

    from dnas.engine.fitness import TrainSpec, train_and_score

    space = create_space("darts", C=4, layers=2, nodes=1, auxiliary=False)
    model = space.build_network(space.random_genotype(__import__("random").Random(0)), dnas.Task((3, 8, 8), 4))
    ds = TensorDataset(torch.randn(24, 3, 8, 8), torch.randint(0, 4, (24,)))  # 3 batches of 8 per epoch
    out = train_and_score(model, ds, ds, TrainSpec(fitness=fitness, epochs=3, max_steps=4, batch_size=8), 0, torch.device("cpu"), 4)
    assert out["steps"] == 4


def test_timeout_before_any_trial_is_one_clear_error(tmp_path, capsys):
    from dnas.cli import main

    assert main(["search", *TINY, "--strategy", "random", "--out", str(tmp_path / "r"), "--trials", "3", "--timeout", "1e-9"]) == 2
    err = capsys.readouterr().err
    assert "no trial of study 'dnas' completed (timeout too short?)" in err and "Traceback" not in err
