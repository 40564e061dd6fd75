"""Cell genotypes as the DARTS code writes them: read with ast, never executed, into darts genotypes."""
import pytest
import torch

import dnas
from dnas.cli import main
from dnas.errors import DnasError
from dnas.genotype import genotype_label, load_genotype
from dnas.space import Task

# written as the DARTS code prints a derived cell: two (op, input) pairs per node, node after node
CELL = ("Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('dil_conv_3x3', 2), "
        "('sep_conv_5x5', 1), ('sep_conv_5x5', 1), ('avg_pool_3x3', 0), ('skip_connect', 3)], normal_concat=range(2, 6), "
        "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), "
        "('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])")


# FairDARTS' sparse cells: (op, to, input) triples, any number per node (to = 2 + node)
SPARSE = ("Genotype(normal=[('sep_conv_3x3', 2, 0), ('sep_conv_3x3', 2, 1), ('dil_conv_3x3', 3, 1), ('skip_connect', 4, 3), "
          "('sep_conv_5x5', 5, 1), ('max_pool_3x3', 5, 4), ('dil_conv_5x5', 5, 0)], normal_concat=range(2, 6), "
          "reduce=[('max_pool_3x3', 2, 0), ('avg_pool_3x3', 3, 1), ('skip_connect', 4, 2), ('sep_conv_3x3', 5, 1)], "
          "reduce_concat=range(2, 6))")


def test_fairdarts_triples_give_each_node_its_own_edges():
    g = load_genotype(SPARSE)
    c = g.choices
    assert dict(g.config) == {"nodes": 4, "ops": "darts"}
    assert c["normal.node0.edge0"] == c["normal.node0.edge1"] == ("sep_conv_3x3",)
    assert c["normal.node1.edge1"] == ("dil_conv_3x3",) and c["normal.node2.edge3"] == ("skip_connect",)
    assert [c[f"normal.node3.edge{j}"] for j in range(5)] == [("dil_conv_5x5",), ("sep_conv_5x5",), (), (), ("max_pool_3x3",)]
    assert sum(len(v) for v in c.values()) == 7 + 4  # one op per triple


def test_the_pairs_become_one_decision_per_edge(tmp_path):
    (tmp_path / "g.txt").write_text(CELL + "\n")
    g = load_genotype(tmp_path / "g.txt")
    assert g.space == "darts" and dict(g.config) == {"nodes": 4, "ops": "darts"}
    c = g.choices
    # node 0 <- inputs 1 and 0; node 1 <- 0 and node 0 (input 2); node 2 <- input 1 twice, the same op: one op
    assert c["normal.node0.edge0"] == ("sep_conv_3x3",) and c["normal.node0.edge1"] == ("sep_conv_3x3",)
    assert c["normal.node1.edge0"] == ("skip_connect",) and c["normal.node1.edge2"] == ("dil_conv_3x3",)
    assert c["normal.node1.edge1"] == () and c["normal.node2.edge1"] == ("sep_conv_5x5",)
    assert c["normal.node3.edge0"] == ("avg_pool_3x3",) and c["normal.node3.edge3"] == ("skip_connect",)
    assert c["reduce.node3.edge0"] == ("avg_pool_3x3",) and c["reduce.node3.edge2"] == ("skip_connect",)
    assert sum(len(v) for v in c.values()) == 15  # 16 pairs, one repeated on its edge
    assert len(c) == 2 * (2 + 3 + 4 + 5)  # every edge of both cells is a decision, kept or not
    # the network builds and runs; it is the one the same genotype in YAML builds
    yaml_copy = g.save(tmp_path / "g.yaml")
    space = dnas.create_space("darts", C=8, layers=3, nodes=4)
    a, b = (space.build_network(x, Task((3, 16, 16), 10)) for x in (g, load_genotype(yaml_copy)))
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    assert a.eval()(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_a_genotypes_file_a_log_and_the_pasted_text(tmp_path):
    other = CELL.replace("('avg_pool_3x3', 0)], reduce_concat", "('sep_conv_3x3', 1)], reduce_concat")
    py = tmp_path / "genotypes.py"
    py.write_text("from collections import namedtuple\nGenotype = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat')\n"
                  f"MINE = {CELL}\nOTHER = Genotype(\n  normal={CELL.split('normal=')[1].split(', normal_concat')[0]},\n"
                  f"  normal_concat=[2, 3, 4, 5],\n  reduce={other.split('reduce=')[1]}\n")
    with pytest.raises(DnasError, match=r"holds 2 genotypes \(MINE, OTHER\); pick one as .*genotypes.py:NAME"):
        load_genotype(py)
    assert load_genotype(f"{py}:OTHER")["reduce.node3.edge1"] == ("sep_conv_3x3",)
    assert load_genotype(f"{py}:MINE") == load_genotype(f"{py}:1") == load_genotype(CELL)
    with pytest.raises(DnasError, match=r"no genotype 'DARTS_V2' \(named: MINE, OTHER; or a position 1 to 2, or last\)"):
        load_genotype(f"{py}:DARTS_V2")
    log = tmp_path / "search.log"  # a search log prints one per epoch, after a timestamp
    log.write_text(f"12/01 10:00:01 epoch 0\n12/01 10:00:02 genotype = {CELL}\n12/01 10:09:00 genotype = {other}\n")
    with pytest.raises(DnasError, match=r"holds 2 genotypes \(#1, #2\); pick one as .*search.log:N \(1-based\) or"):
        load_genotype(log)
    assert load_genotype(f"{log}:last") == load_genotype(f"{py}:OTHER")
    assert genotype_label(f"{py}:OTHER") == "OTHER" and genotype_label(CELL) == "darts-genotype"
    assert genotype_label(tmp_path / "g.yaml") == "g"


@pytest.mark.parametrize("text, message", [
    (CELL.replace("normal_concat=range(2, 6)", "normal_concat=[4, 5]"), r"normal_concat is \[4, 5\], but a dnas cell outputs every node"),
    (CELL.replace("normal_concat=range(2, 6)", "normal_concat=4"), r"normal_concat is 4, but a dnas cell outputs every node"),
    (CELL.replace("('dil_conv_3x3', 2)", "('sep_conv_7x7', 2)"), r"op\(s\) sep_conv_7x7 are not in the DARTS op sets"),
    (CELL.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 3)"), r"normal entry \('dil_conv_3x3', 3\) feeds node 1 from input 3; a cell "
                                                                 r"of 4 nodes has nodes 0 to 3, and node k takes inputs 0 to k \+ 1"),
    (SPARSE.replace("('skip_connect', 4, 3)", "('skip_connect', 4, 4)"), r"entry \('skip_connect', 4, 4\) feeds node 2 from input 4"),
    (SPARSE.replace("('dil_conv_3x3', 3, 1)", "('dil_conv_3x3', 2, 1)"), r"node 'normal.node1' has no incoming op"),
    (CELL.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 2, 0)"), r"must list \('op', input\) pairs, .* or FairDARTS' \('op', to, input\)"),
    (CELL.replace("('skip_connect', 3)]", "]"), r"normal has 7 pairs; a DARTS cell has two per node"),
    (CELL.replace("('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ", "", 1), r"normal has 3 nodes and reduce 4"),
    (CELL.replace("('dil_conv_3x3', 2)", "('none', 2)"), r"keeps the 'none' op"),
    ("Genotype(normal=__import__('os').system('touch pwned'), normal_concat=[2], reduce=[], reduce_concat=[2])",
     r"normal is not a literal"),
    ("Genotype(normal=[('sep_conv_3x3', 0)", r"no complete Genotype\(...\)"),
])
def test_what_is_not_a_darts_cell_is_one_line(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.py").write_text(text)
    with pytest.raises(DnasError, match=message):
        load_genotype(tmp_path / "g.py")
    assert not (tmp_path / "pwned").exists()  # nothing in the text ran


def test_dnas_train_takes_a_genotype_of_a_darts_genotypes_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "genotypes.py").write_text(f"DARTS_MINE = {CELL}\n")
    assert main(["show", "genotypes.py:DARTS_MINE"]) == 0
    assert "node1: skip_connect <- c_{k-2}, dil_conv_3x3 <- node0" in capsys.readouterr().out
    assert main(["train", "--genotype", "genotypes.py:DARTS_MINE", "--data", "synthetic", "--epochs", "1",
                 "--set", "space.C=4", "--set", "space.layers=3", "--set", "space.auxiliary=false"]) == 0
    assert (tmp_path / "runs" / "train-DARTS_MINE" / "genotype.yaml").is_file()
    assert load_genotype(tmp_path / "runs" / "train-DARTS_MINE" / "genotype.yaml") == load_genotype(CELL)
