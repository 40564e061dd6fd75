import torch

from dnas.parsers import argmax_parser, darts_parser, edge_parser, sparse_parser, threshold_parser
from dnas.space import Decision

OPS = ("none", "skip_connect", "sep_conv_3x3")


def node(n_in, node_id=0):
    return [Decision(f"c.node{node_id}.edge{j}", OPS, group=f"c.node{node_id}", cell="c", max_options=3, min_options=0) for j in range(n_in)]


def test_darts_parser_keeps_top2_edges_by_best_non_none_weight():
    ds = node(3)
    w = {
        # edge0: none dominates but the best real op is weak (0.2): must not be kept
        "c.node0.edge0": torch.tensor([0.7, 0.2, 0.1]),
        "c.node0.edge1": torch.tensor([0.1, 0.3, 0.6]),
        "c.node0.edge2": torch.tensor([0.2, 0.5, 0.3]),
    }
    out = darts_parser(ds, w)
    assert out == {"c.node0.edge0": [], "c.node0.edge1": ["sep_conv_3x3"], "c.node0.edge2": ["skip_connect"]}


def test_darts_parser_k_and_ties_go_to_earlier_edge():
    ds = node(3)
    w = {d.name: torch.tensor([0.0, 0.5, 0.5]) for d in ds}
    out = darts_parser(ds, w, k=1)
    assert out["c.node0.edge0"] == ["skip_connect"]  # first of the tied ops, first of the tied edges
    assert out["c.node0.edge1"] == [] and out["c.node0.edge2"] == []


def test_argmax_drops_an_edge_whose_best_option_is_none():
    ds = node(2)
    w = {"c.node0.edge0": torch.tensor([0.9, 0.05, 0.05]), "c.node0.edge1": torch.tensor([0.1, 0.2, 0.7])}
    assert argmax_parser(ds, w) == {"c.node0.edge0": [], "c.node0.edge1": ["sep_conv_3x3"]}


def test_sigmoid_parsers_threshold_and_caps():
    ds = node(2)
    w = {"c.node0.edge0": torch.tensor([0.99, 0.9, 0.95]), "c.node0.edge1": torch.tensor([0.1, 0.86, 0.2])}
    assert sparse_parser(ds, w) == {"c.node0.edge0": ["sep_conv_3x3"], "c.node0.edge1": ["skip_connect"]}
    assert edge_parser(ds, w) == {"c.node0.edge0": ["sep_conv_3x3", "skip_connect"], "c.node0.edge1": ["skip_connect"]}
    assert threshold_parser(ds, w, threshold=0.5) == edge_parser(ds, w, threshold=0.5)
    assert sparse_parser(ds, w, threshold=0.9) == {"c.node0.edge0": ["sep_conv_3x3"], "c.node0.edge1": []}


def test_sigmoid_parser_never_leaves_a_node_empty():
    ds = node(2)
    w = {"c.node0.edge0": torch.tensor([0.5, 0.3, 0.2]), "c.node0.edge1": torch.tensor([0.5, 0.1, 0.4])}
    # nothing reaches 0.85: the node keeps its single best real op (edge1's sep_conv at 0.4)
    assert sparse_parser(ds, w) == {"c.node0.edge0": [], "c.node0.edge1": ["sep_conv_3x3"]}
