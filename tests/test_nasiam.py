"""NASiam: the nasiam-mlp space, the four frameworks' losses by hand, two-view data, SSL evaluation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnas.engine.data import DataConfig, TensorDataset, synthetic_dataset, two_view_datasets
from dnas.errors import DnasError
from dnas.genotype import load_genotype
from dnas.registry import create_space, create_strategy
from dnas.space import Task
from dnas.spaces.siamese import (byol_loss, collapse_std, enqueue, info_nce, momentum_update, neg_cosine, nt_xent, simsiam_loss,
                      std_warning)
from dnas.evaluate.ssl import cosine_matrix, knn_accuracy, linear_eval, mean_average_precision
from dnas.testing import check_space

TINY = dict(backbone="tiny", backbone_width=8, proj_layers=2, pred_layers=2, dim=16, pred_dim=8, queue_size=16)
TASK = Task((1, 8, 8), 0, two_views=True)
FRAMEWORKS = ["simsiam", "simclr", "mocov2", "byol"]


# -- conformance and decisions ------------------------------------------------------------------------
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_conformance(framework):
    g = check_space("nasiam-mlp", framework=framework)
    heads = {name.split(".")[0] for name in g.choices}
    assert heads == ({"projector", "predictor"} if framework in ("simsiam", "byol") else {"projector"})


def test_conformance_s_prime_and_resized_hidden():
    g = check_space("nasiam-mlp", ops="S'", proj_hidden=12)
    space = create_space("nasiam-mlp", **TINY, ops="S'")
    assert all("pool" not in op for d in space.decisions() for op in d.options)
    assert len(space.decisions()[0].options) == 5 and set(g.choices) == {d.name for d in space.decisions()}


def test_default_space_sizes_and_names():
    space = create_space("nasiam-mlp")
    names = [d.name for d in space.decisions()]
    assert names == [f"projector.layer{i}" for i in range(6)] + [f"predictor.layer{i}" for i in range(4)]
    assert len(space.decisions()[0].options) == 7
    assert space.space_size() == 7.0 ** 10
    assert "labels" not in space.capabilities() and "two_views" in space.capabilities()


# -- losses by hand -----------------------------------------------------------------------------------
def test_neg_cosine_by_hand():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[1.0, 1.0], [0.0, -3.0]])
    assert neg_cosine(p, z).item() == pytest.approx(-(1 / math.sqrt(2) + -1.0) / 2)


def test_simsiam_symmetric_and_stop_grad():
    g = torch.Generator().manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(5, 3, generator=g, requires_grad=True) for _ in range(4))
    loss = simsiam_loss(p1, p2, z1, z2)
    hand = 0.5 * -F.cosine_similarity(p1, z2).mean() + 0.5 * -F.cosine_similarity(p2, z1).mean()
    assert loss.item() == pytest.approx(hand.item(), abs=1e-6)
    assert simsiam_loss(p2, p1, z2, z1).item() == pytest.approx(loss.item(), abs=1e-6)  # symmetric in the views
    loss.backward()
    assert z1.grad is None and z2.grad is None  # stop-grad: nothing reaches the target branch
    assert p1.grad is not None and p1.grad.abs().sum() > 0


def test_nt_xent_by_hand():
    g = torch.Generator().manual_seed(1)
    z1, z2, t = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g), 0.5
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n, total = 3, 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        den = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / den)
    assert nt_xent(z1, z2, t).item() == pytest.approx(total / (2 * n), rel=1e-5)
    assert nt_xent(z2, z1, t).item() == pytest.approx(total / (2 * n), rel=1e-5)  # symmetric


def test_info_nce_by_hand_and_key_gets_no_gradient():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 3, generator=g, requires_grad=True)
    k = torch.randn(2, 3, generator=g, requires_grad=True)
    queue = F.normalize(torch.randn(4, 3, generator=g), dim=1)
    t = 0.1
    qn, kn = F.normalize(q.detach(), dim=1), F.normalize(k.detach(), dim=1)
    total = 0.0
    for i in range(2):
        logits = [float(qn[i] @ kn[i]) / t] + [float(qn[i] @ queue[j]) / t for j in range(4)]
        total += -logits[0] + math.log(sum(math.exp(x) for x in logits))
    loss = info_nce(q, k, queue, t)
    assert loss.item() == pytest.approx(total / 2, rel=1e-5)
    loss.backward()
    assert k.grad is None and q.grad is not None


def test_byol_loss_by_hand_and_stop_grad():
    g = torch.Generator().manual_seed(3)
    p1, p2, t1, t2 = (torch.randn(4, 3, generator=g, requires_grad=True) for _ in range(4))
    hand = (2 - 2 * F.cosine_similarity(p1, t2)).mean() + (2 - 2 * F.cosine_similarity(p2, t1)).mean()
    loss = byol_loss(p1, p2, t1, t2)
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)
    assert byol_loss(p2, p1, t2, t1).item() == pytest.approx(loss.item(), rel=1e-5)
    loss.backward()
    assert t1.grad is None and t2.grad is None


def test_momentum_update_formula():
    t, o = [torch.tensor([1.0, 2.0])], [torch.tensor([3.0, -2.0])]
    momentum_update(t, o, 0.9)
    assert torch.allclose(t[0], torch.tensor([0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * -2]))


def test_queue_is_fifo():
    queue, ptr = torch.zeros(4, 2), torch.zeros((), dtype=torch.long)
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    enqueue(queue, ptr, a)
    assert int(ptr) == 3 and torch.equal(queue[:3], a) and torch.equal(queue[3], torch.zeros(2))
    b = torch.tensor([[0.0, -2.0], [3.0, 0.0]])
    enqueue(queue, ptr, b)  # wraps: the oldest row (0) is overwritten second
    assert int(ptr) == 1
    assert torch.equal(queue[3], torch.tensor([0.0, -1.0])) and torch.equal(queue[0], torch.tensor([1.0, 0.0]))
    assert torch.equal(queue[1:3], a[1:])


@pytest.mark.parametrize("framework", ["byol", "mocov2"])
def test_momentum_target_in_the_model(framework):
    torch.manual_seed(0)
    space = create_space("nasiam-mlp", **TINY, framework=framework, momentum=0.5)
    net = space.supernet(TASK)
    batch = space.example_batch(TASK, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in net.online_parameters():
            p.add_(1.0)  # online and target now differ
    before_t = [p.clone() for p in net.target.parameters()]
    online = [p.detach().clone() for p in net.online_parameters()]
    ptr = int(net.queue_ptr) if framework == "mocov2" else None
    net.train()
    net.loss(batch)["loss"].backward()
    for t0, o, t1 in zip(before_t, online, net.target.parameters()):
        assert torch.allclose(t1, 0.5 * t0 + 0.5 * o)  # ξ ← m ξ + (1 − m) θ
        assert t1.grad is None  # no gradient reaches the target
    if framework == "mocov2":
        assert int(net.queue_ptr) == (ptr + 4) % 16


def test_simsiam_model_stop_grad_reaches_projector_only_through_predictor():
    torch.manual_seed(0)
    space = create_space("nasiam-mlp", **TINY)
    net = space.supernet(TASK)
    batch = space.example_batch(TASK, 4, generator=torch.Generator().manual_seed(0))
    x1, x2 = batch[0]
    z1, z2 = net.embed(x1), net.embed(x2)
    w = net.head_weights("predictor")
    p1, p2 = net.predictor(z1, w), net.predictor(z2, w)
    gz = torch.autograd.grad(simsiam_loss(p1, p2, z1, z2), z1, retain_graph=True)[0]
    gz_pred_only = torch.autograd.grad(0.5 * neg_cosine(p1, z2.detach()), z1)[0]
    assert torch.allclose(gz, gz_pred_only, atol=1e-7)


# -- search -------------------------------------------------------------------------------------------
def test_a_darts_step_moves_alpha():
    torch.manual_seed(0)
    space = create_space("nasiam-mlp", **TINY)
    net = space.supernet(TASK)
    strategy = create_strategy("darts", epochs=1, a_lr=0.1)
    strategy.check_compatible(space)
    state = strategy.init_state(net)
    gen = torch.Generator().manual_seed(0)
    tb, vb = space.example_batch(TASK, 8, generator=gen), space.example_batch(TASK, 8, generator=gen)
    before = {k: a.detach().clone() for k, a in net.named_arch_parameters()}
    metrics = strategy.step(net, tb, vb, state)
    assert set(before) == {"projector", "predictor"}
    for k, a in net.named_arch_parameters():
        assert not torch.allclose(a, before[k]), k
    assert "train_std" in metrics and torch.isfinite(metrics["train_loss"])


def test_labelled_strategy_cannot_pair():
    from dnas.strategy import Strategy

    space = create_space("nasiam-mlp", **TINY)

    s = create_strategy("darts")
    s.needs = frozenset({"labels"})
    with pytest.raises(DnasError, match="labels"):
        Strategy.check_compatible(s, space)


def test_search_on_digits_serves_two_views(tmp_path):
    from dnas.api import search

    r = search("nasiam-mlp", "darts", "digits", space_config={**TINY, "backbone_width": 8},
               strategy_config={"epochs": 1}, data_config={"subset": 0.1, "batch_size": 32}, out=tmp_path / "run", progress=False)
    assert set(r.genotype.choices) == {"projector.layer0", "projector.layer1", "predictor.layer0", "predictor.layer1"}
    assert "train_std" in r.history[0] and -1 <= r.history[0]["train_loss"] <= 1  # a negative cosine


# -- heads --------------------------------------------------------------------------------------------
def _linears(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_derived_genotype_builds_heads_with_the_right_widths():
    space = create_space("nasiam-mlp", **{**TINY, "proj_layers": 3, "pred_layers": 3, "proj_hidden": 12, "dim": 20, "pred_dim": 6})
    choices = {"projector.layer0": ["linear_silu"], "projector.layer1": ["identity"], "projector.layer2": ["linear_elu"],
               "predictor.layer0": ["avg_pool_3"], "predictor.layer1": ["linear_hardswish"], "predictor.layer2": ["identity"]}
    net = space.build_network(space.genotype(choices), TASK)
    assert _linears(net.projector) == [(8, 12), (12, 12), (12, 20)]  # feature width 8 -> hidden 12 -> dim 20
    assert _linears(net.predictor) == [(6, 6), (6, 20)]  # the pool resizes 20 -> 6 (no weights), output 6 -> 20
    assert isinstance(net.projector.out[-1], nn.BatchNorm1d)  # projector output: linear + BN
    assert not any(isinstance(m, nn.BatchNorm1d) for m in net.predictor.out)  # predictor's last layer: no BN
    x = torch.randn(4, 1, 8, 8)
    net.eval()
    z = net.embed(x)
    assert z.shape == (4, 20) and net.predictor(z).shape == (4, 20) and net(x).shape == (4, 8)


def test_baseline_simsiam_genotype():
    g = load_genotype("simsiam")
    space = create_space("nasiam-mlp", **{**dict(g.config), "backbone": "tiny", "backbone_width": 8, "dim": 32, "pred_dim": 4})
    net = space.build_network(g, TASK)
    assert _linears(net.projector) == [(8, 8), (8, 8), (8, 32)]  # SimSiam: 3-layer projector
    assert _linears(net.predictor) == [(32, 4), (4, 32)]  # 2-layer bottleneck predictor
    acts = {type(m) for m in [*net.projector.modules(), *net.predictor.modules()] if isinstance(m, (nn.ReLU, nn.SiLU, nn.ELU, nn.Hardswish))}
    assert acts == {nn.ReLU}
    assert dict(g.config)["dim"] == 2048 and dict(g.config)["pred_dim"] == 512


def test_mixed_layer_is_the_weighted_sum():
    torch.manual_seed(0)
    space = create_space("nasiam-mlp", **TINY, framework="simclr")
    net = space.supernet(TASK).eval()
    h = torch.randn(4, 8)
    w = torch.softmax(torch.randn(2, 7), dim=1)
    layer0 = net.projector.layers[0]
    x1 = sum(w[0, k] * op(h) for k, op in enumerate(layer0))  # eq. (5.3)
    x2 = sum(w[1, k] * op(x1) for k, op in enumerate(net.projector.layers[1]))
    assert torch.allclose(net.projector(h, w), net.projector.out(x2), atol=1e-6)


# -- data ---------------------------------------------------------------------------------------------
def test_two_view_data():
    from dnas.engine.data import Datasets

    x = torch.rand(6, 3, 32, 32)

    base = Datasets(TensorDataset(x, torch.arange(6)), TensorDataset(x, torch.arange(6)), Task((3, 32, 32), 6))
    torch.manual_seed(0)
    on = two_view_datasets(base, DataConfig(name="synthetic"))
    (v1, v2), y = on.train[0]
    assert on.task.two_views and v1.shape == (3, 32, 32) and int(y) == 0 and not torch.equal(v1, v2)
    off = two_view_datasets(base, DataConfig(name="synthetic", augment=False))
    (w1, w2), _ = off.train[2]
    assert torch.equal(w1, x[2]) and torch.equal(w2, x[2])


# -- evaluation ---------------------------------------------------------------------------------------
def test_linear_eval_on_separable_synthetic_data():
    d = synthetic_dataset(n_train=256, n_test=128, classes=4)
    tr, te = d.train.tensors, d.test.tensors
    r = linear_eval(tr[0].flatten(1), tr[1], te[0].flatten(1), te[1], epochs=30, lr=0.1, batch_size=64)
    assert r["top1"] >= 0.95 and r["top5"] == 1.0


def test_knn_accuracy_by_hand():
    train_f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    train_y = torch.tensor([0, 0, 1])
    test_f = torch.tensor([[1.0, 0.05], [0.1, 1.0]])
    assert knn_accuracy(train_f, train_y, test_f, torch.tensor([0, 1]), k=1) == 1.0
    assert knn_accuracy(train_f, train_y, test_f, torch.tensor([1, 1]), k=1) == 0.5


def test_cosine_eq_5_5_and_map_by_hand():
    a = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    b = torch.tensor([[6.0, 8.0], [4.0, -3.0]])
    sim = cosine_matrix(a, b)
    assert torch.allclose(sim[0], torch.tensor([1.0, 0.0])) and torch.equal(sim[1], torch.zeros(2))  # max(‖x1‖‖x2‖, 1e-8)
    q, qy = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    g = torch.tensor([[1.0, 0.1], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]])  # ranked 0, 1, 2, 3
    gy = torch.tensor([0, 1, 0, 1])
    assert mean_average_precision(q, qy, g, gy) == pytest.approx((1 / 1 + 2 / 3) / 2)
    # τ = 0.8 keeps items 0 and 1 (cos 0.995, 0.894); item 2 (cos 0.707) is not retrieved
    assert mean_average_precision(q, qy, g, gy, threshold=0.8) == pytest.approx((1 / 1) / 2)
    with pytest.raises(DnasError):
        mean_average_precision(q, torch.tensor([5]), g, gy)


def test_collapse_monitor():
    z = torch.ones(8, 4) * torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert collapse_std(z).item() == 0.0 and std_warning(0.0, 4) is not None
    spread = torch.randn(512, 16, generator=torch.Generator().manual_seed(0))
    assert collapse_std(spread).item() == pytest.approx(1 / math.sqrt(16), rel=0.15) and std_warning(collapse_std(spread).item(), 16) is None


def test_ssl_train_then_retrieve(tmp_path):
    from dnas.evaluate.ssl import retrieve, ssl_train

    logs = []
    r = ssl_train("simsiam", data="digits", space_config={**TINY, "backbone_width": 8, "proj_layers": 6, "pred_layers": 4},
                  train_config={"epochs": 2, "batch_size": 128, "linear_epochs": 5, "knn_k": 20},
                  out=tmp_path / "ssl", log=logs.append)
    assert len(r["history"]) == 2 and all("knn_top1" in h and "std" in h for h in r["history"])
    assert r["history"][1]["lr"] < r["history"][0]["lr"]  # cosine schedule
    assert 0.0 <= r["top1"] <= r["top5"] <= 1.0 and r["top1"] > 0.3  # well above chance (0.1)
    m = retrieve(tmp_path / "ssl", data="digits")
    assert 0.1 < m["mAP"] <= 1.0 and m["queries"] > 0
    with pytest.raises(DnasError, match="supervised"):
        ssl_train("resnet18", data="digits", train_config={"epochs": 0})
    from dnas.api import train

    train("resnet18", "digits", train_config={"epochs": 0}, space_config={"C": 4}, out=tmp_path / "sup", log=logs.append)
    with pytest.raises(DnasError, match="holds a network of space 'ddarts' \\(supervised evaluation\\); retrieval ranks"):
        retrieve(tmp_path / "sup", data="digits")  # a supervised training: said so, not "weights do not fit"


def test_cli_train_ssl_and_retrieve(tmp_path, capsys):
    from dnas.cli import main

    out = tmp_path / "c"
    rc = main(["train", "--genotype", "simsiam", "--ssl", "--epochs", "1", "--set", "space.backbone=tiny", "--set", "space.dim=16",
               "--set", "space.pred_dim=4", "--set", "train.batch_size=256", "--set", "train.linear_epochs=2", "--out", str(out)])
    assert rc == 0 and (out / "model.safetensors").is_file() and '"top1"' in capsys.readouterr().out
    assert main(["retrieve", str(out)]) == 0 and '"mAP"' in capsys.readouterr().out
    assert main(["retrieve", str(tmp_path / "missing")]) == 2


def test_fairdarts_pairs_with_nasiam():
    torch.manual_seed(0)
    space = create_space("nasiam-mlp", **TINY, framework="byol")
    net = space.supernet(TASK)
    strategy = create_strategy("fairdarts", a_lr=0.1)
    strategy.check_compatible(space)
    net.relaxation = strategy.relaxation
    state = strategy.init_state(net)
    gen = torch.Generator().manual_seed(1)
    before = net.alphas["predictor"].detach().clone()
    metrics = strategy.step(net, space.example_batch(TASK, 8, generator=gen), space.example_batch(TASK, 8, generator=gen), state)
    assert net.relaxation == "sigmoid" and not torch.allclose(net.alphas["predictor"], before)
    assert "zero_one" in metrics  # the zero-one loss term is part of the α step


def test_supervised_train_of_a_nasiam_genotype_is_refused():
    from dnas.api import train  # without an override, dnas.train picks SSL (tests/test_evaluation.py)

    with pytest.raises(DnasError, match="evaluated by 'ssl'"):
        train("simsiam", data="digits", train_config={"epochs": 0}, evaluation="supervised")


def test_two_view_data_on_pil_images():
    from torchvision.datasets import FakeData

    from dnas.engine.data import Datasets

    fake = FakeData(size=4, image_size=(3, 32, 32), num_classes=2, random_offset=0)  # PIL images, as CIFAR-10
    base = Datasets(fake, fake, Task((3, 32, 32), 2))
    torch.manual_seed(0)
    (v1, v2), y = two_view_datasets(base, DataConfig(name="cifar10")).train[0]
    assert v1.shape == v2.shape == (3, 32, 32) and v1.dtype == torch.float32 and not torch.equal(v1, v2)
    assert v1.min() < 0  # normalised with the CIFAR-10 mean/std after the augmentation
