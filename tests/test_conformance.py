"""The conformance suite over the whole registry, and the suite itself catching broken spaces."""
import pytest
import torch

import dnas
from dnas.testing import check_space


@pytest.mark.parametrize("name", dnas.list_spaces())
def test_every_registered_space_conforms(name):
    g = check_space(name)
    assert g.space == name


@pytest.mark.parametrize("config", [dict(individual=True), dict(ops="darts-o"), dict(nodes=3, layers=4)])
def test_darts_variants_conform(config):
    check_space("darts", **config)


def test_plugin_space_conforms():
    import toyspace  # noqa: F401

    g = check_space("toy-mlp")
    assert set(g.choices) == {"layer0", "layer1"}


def test_suite_catches_a_weight_without_gradient():
    import toyspace

    class Broken(toyspace.ToySupernet):
        def __init__(self, space, task):
            super().__init__(space, task)
            self.unused = torch.nn.Linear(2, 2)  # never called: gets no gradient

    @dnas.register_space("toy-broken")
    class BrokenSpace(toyspace.ToySpace):
        def supernet(self, task):
            return Broken(self, task)

    with pytest.raises(AssertionError, match="unused.weight"):
        check_space("toy-broken")


def test_darts_supernet_shapes_and_arch_parameter_order():
    space = dnas.create_space("darts", C=4, layers=5, nodes=3)
    net = space.supernet(dnas.Task((3, 8, 8), 7))
    assert [n for n, _ in net.named_arch_parameters()] == ["normal", "reduce"]
    assert net.alphas["normal"].shape == (2 + 3 + 4, 8)  # 9 edges for 3 nodes, 8 ops of S
    assert space.reduction_layers() == {1, 3}
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 7)
    ind = dnas.create_space("darts", C=4, layers=5, nodes=3, individual=True).supernet(dnas.Task((3, 8, 8), 7))
    assert [n for n, _ in ind.named_arch_parameters()] == [f"cell{i}" for i in range(5)]
    assert list(ind.arch_groups()) == [f"cell{i}" for i in range(5)]


def test_evaluation_network_aux_head_and_drop_path():
    space = dnas.create_space("darts", C=4, layers=6, nodes=2)
    import random

    g = space.random_genotype(random.Random(1))
    net = space.build_network(g, dnas.Task((3, 16, 16), 5))
    net.train()
    logits, aux = net(torch.randn(3, 3, 16, 16))
    assert logits.shape == aux.shape == (3, 5)
    net.eval()
    assert net(torch.randn(3, 3, 16, 16)).shape == (3, 5)
    from dnas.spaces.darts import drop_path

    torch.manual_seed(0)
    x = torch.ones(4000, 1, 1, 1)
    y = drop_path(x, 0.25)
    kept = y.flatten() != 0
    assert torch.allclose(y.flatten()[kept], torch.full((int(kept.sum()),), 1 / 0.75))
    assert abs(kept.float().mean().item() - 0.75) < 0.03


def test_relaxations_are_one_line_switches():
    net = dnas.create_space("darts", C=4, layers=3, nodes=2).supernet(dnas.Task((3, 8, 8), 4))
    a = net.alphas["normal"]
    assert torch.allclose(net.mixing_weights("normal").sum(-1), torch.ones(a.shape[0]))
    net.relaxation = "sigmoid"
    assert torch.allclose(net.mixing_weights("normal"), torch.sigmoid(a))
    net.relaxation = "gumbel"
    net.train()
    w = net.mixing_weights("normal")
    assert torch.allclose(w.sum(-1), torch.ones(a.shape[0]), atol=1e-6)
    with pytest.raises(dnas.DnasError, match="unknown relaxation 'sigmod'.*did you mean 'sigmoid'"):
        net.relaxation = "sigmod"
