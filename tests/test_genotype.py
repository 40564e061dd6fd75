import json
import random

import pytest
import yaml

import dnas
from dnas import DnasError, Genotype, load_genotype
from dnas.cli import main

from conftest import TINY_DARTS


def darts_genotype(seed=0, **cfg):
    space = dnas.create_space("darts", **{**TINY_DARTS, **cfg})
    return space.random_genotype(random.Random(seed))


def test_yaml_and_json_round_trip(tmp_path):
    g = darts_genotype()
    for name in ("g.yaml", "g.json"):
        g.save(tmp_path / name)
        back = load_genotype(tmp_path / name)
        assert back == g
        assert back.choices["normal.node0.edge0"] == g.choices["normal.node0.edge0"]
    assert json.loads((tmp_path / "g.json").read_text())["space"] == "darts"
    assert yaml.safe_load((tmp_path / "g.yaml").read_text())["version"] == 1


def test_genotype_is_frozen():
    g = darts_genotype()
    with pytest.raises(TypeError):
        g.choices["normal.node0.edge0"] = ("skip_connect",)
    with pytest.raises(AttributeError):
        g.space = "other"


def _write(tmp_path, data, name="g.yaml"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d.update(version=99), "version 99 is not supported"),
        (lambda d: d.update(space="nope"), "unknown space 'nope'"),
        (lambda d: d["choices"].update({"normal.node0.edge0": ["conv_9x9"]}), "op 'conv_9x9'"),
        (lambda d: d["choices"].pop("reduce.node1.edge2"), "decision 'reduce.node1.edge2' is missing"),
        (lambda d: d["choices"].update({"normal.node7.edge0": []}), "does not exist in space"),
        (lambda d: d.pop("choices"), "missing key(s) choices"),
        (lambda d: d.update(extra=1), "unknown key(s) 'extra'"),
        (lambda d: d["choices"].update({"normal.node0.edge0": [3]}), "must list option names"),
        (lambda d: d["config"].update(layers="three"), "option 'layers' of space 'darts' must be an integer"),
        (lambda d: [d["choices"].update({f"normal.node1.edge{j}": []}) for j in range(3)], "has no incoming op"),
    ],
)
def test_bad_genotype_files_fail_in_one_clear_line(tmp_path, mutate, expected):
    d = darts_genotype().to_dict()
    mutate(d)
    p = _write(tmp_path, d)
    with pytest.raises(DnasError) as e:
        load_genotype(p)
    msg = str(e.value)
    assert expected in msg
    assert "\n" not in msg and str(p) in msg


@pytest.mark.parametrize("text", ["space: [unclosed", "- just\n- a list\n", ""])
def test_malformed_files(tmp_path, text):
    with pytest.raises(DnasError) as e:
        load_genotype(_write(tmp_path, text))
    assert "\n" not in str(e.value)


def test_missing_file_and_builtin_fallback(tmp_path):
    with pytest.raises(DnasError, match="not found"):
        load_genotype(tmp_path / "absent.yaml")
    with pytest.raises(DnasError, match=r"not found, and no built-in genotype has that name \(did you mean 'resnet18'\?\)"):
        load_genotype("resnet19")
    with pytest.raises(DnasError, match="not found"):  # a name no file can have (e.g. YAML text pasted in): no OSError
        load_genotype("space: darts\n" + "x" * 300)


def test_cli_reports_bad_genotype_as_one_line(tmp_path, capsys):
    d = darts_genotype().to_dict()
    d["version"] = 7
    code = main(["show", str(_write(tmp_path, d))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("dnas: error:") and "version 7" in err[0]


def test_space_size_matches_eq_4_1():
    # s(K, L) = Π_{i=1..L} ((i+1)i/2) K², K = 7, L = 4: 180 · 7^8 per cell, squared for normal + reduce
    space = dnas.create_space("darts")
    per_cell = 1 * 3 * 6 * 10 * 7**8
    assert space.space_size() == pytest.approx(per_cell**2)
    assert 1e9 < per_cell < 1.1e9


def test_replace_keeps_other_fields():
    g = darts_genotype()
    h = g.replace(config={**g.config, "C": 36})
    assert h.config["C"] == 36 and h.choices == g.choices and g.config["C"] == 4
    assert isinstance(h, Genotype)


def test_a_run_folder_stands_for_its_genotype(tmp_path, capsys):
    g = dnas.create_space("darts", C=4, layers=3, nodes=2).random_genotype(random.Random(0))
    (tmp_path / "run").mkdir()
    g.save(tmp_path / "run" / "genotype.yaml")
    assert dnas.load_genotype(tmp_path / "run") == g
    assert main(["distance", str(tmp_path / "run"), str(tmp_path / "run" / "genotype.yaml")]) == 0
    assert float(capsys.readouterr().out.strip().splitlines()[-1]) == 0.0
    (tmp_path / "running").mkdir()
    with pytest.raises(DnasError, match="run folder .* has no genotype.yaml yet"):
        dnas.load_genotype(tmp_path / "running")
    from dnas.tools.show import show

    with pytest.raises(DnasError, match="'.*running' is not a dnas run folder \\(no genotype.yaml, no config.yaml\\)"):
        show(str(tmp_path / "running"))
    (tmp_path / "running" / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(DnasError, match="run folder .* has no genotype.yaml yet"):
        show(str(tmp_path / "running"))
