"""Every registered space × strategy (and the test-only plugin space ``toy-mlp``): one tiny search
runs end to end and writes a loadable genotype, or the pair is refused with a DnasError before any
data are loaded or a run folder made. No other exception escapes. The expectation comes from
``check_compatible``: whatever it accepts must really run."""
from __future__ import annotations

import pytest
import toyspace  # noqa: F401  (registers the plugin space toy-mlp)

import dnas
import dnas.api
from dnas.cli import main
from dnas.errors import DnasError
from dnas.registry import SPACES, STRATEGIES, create_space, create_strategy
from dnas.strategy import missing_capabilities
from dnas.testing import check_pair, check_strategy, tiny_strategy_config


def _ours(registry) -> list[str]:
    """Built-in entries and the plugin space (other tests register throwaway ones)."""
    return [n for n, cls in registry.items() if cls.__module__.startswith("dnas.") or cls.__module__ == "toyspace"]


PAIRS = [(sp, st) for sp in _ours(SPACES) for st in _ours(STRATEGIES)]
#: on top of each space's tiny_config: the cell spaces with one node per cell (and ColorNAS with one
#: colour group), so that the whole matrix stays within a minute on two cores
SMALLER = {"darts": {"nodes": 1}, "ddarts": {"nodes": 1}, "colornas": {"groups": ["rgb"], "nodes": 1}}


def test_the_matrix_covers_every_space_strategy_and_the_plugin():
    assert "toy-mlp" in _ours(SPACES) and {"darts", "ddarts", "dario", "nasiam-mlp"} <= set(_ours(SPACES))
    assert {"darts", "fairdarts", "shapley", "proxy", "tpe", "random"} <= set(_ours(STRATEGIES))


@pytest.mark.parametrize("space,strategy", PAIRS, ids=[f"{a}-x-{b}" for a, b in PAIRS])
def test_pair_runs_or_is_refused_before_any_work(space, strategy, tmp_path, monkeypatch):
    loads = []
    real = dnas.api.load_datasets
    monkeypatch.setattr(dnas.api, "load_datasets", lambda cfg, given=None: loads.append(cfg) or real(cfg, given))
    sp = create_space(space, **{**SPACES.get(space).tiny_config, **SMALLER.get(space, {})})
    accepted = not missing_capabilities(create_strategy(strategy, **tiny_strategy_config(strategy)), sp)
    # check_pair asserts the contract (accepted -> runs, refused -> before any work); other exceptions escape
    status, result = check_pair(space, strategy, tmp_path / "run", space_config=SMALLER.get(space))
    assert status == ("ran" if accepted else "refused"), result
    if status == "refused":
        assert not loads and "\n" not in result and result.startswith(f"strategy '{strategy}' needs ")
    else:
        assert result.space == space and (tmp_path / "run" / "genotype.yaml").is_file()


def test_darts_with_shapley_is_refused_with_the_option_that_gives_one_alpha_per_cell(tmp_path, capsys):
    code = main(["search", "--space", "darts", "--strategy", "shapley", "--out", str(tmp_path / "r")])
    assert code == 2 and not (tmp_path / "r").exists()
    assert capsys.readouterr().err.strip() == (
        "dnas: error: strategy 'shapley' needs one α per cell (alpha_per_cell); space 'darts' offers it with "
        "space.individual=true; spaces that offer it: ddarts"
    )
    status, _ = check_pair("darts", "shapley", tmp_path / "ok", space_config={"individual": True, "nodes": 1})
    assert status == "ran"  # the hint works


def test_check_strategy_runs_each_builtin_and_refuses_what_it_cannot_search():
    g = check_strategy("fairdarts", space="toy-mlp")
    assert g.space == "toy-mlp"

    class NeedsCells(dnas.GradientStrategy):
        name = "needs-cells-only"
        needs = frozenset({"alpha", "data", "cells"})

    with pytest.raises(DnasError, match=r"needs cells \(cells\), which space 'toy-mlp' does not offer; spaces that offer it: "
                                        r"darts, ddarts"):
        NeedsCells().check_compatible(create_space("toy-mlp"))


def test_list_pairs_prints_the_matrix(capsys):
    from dnas.cli.list import pair_matrix

    assert main(["list", "--pairs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    spaces, strategies, missing = pair_matrix()
    assert lines[0].split() == ["space", "\\", "strategy", *strategies]
    row = {line.split()[0]: line for line in lines[1:] if line and not line.startswith("note")}
    assert set(row) == set(spaces)
    assert "alpha_per_cell" in row["darts"] and "note: darts offers alpha_per_cell with space.individual=true" in lines
    assert missing["dario", "darts"] == ["data"] and not missing["ddarts", "shapley"]


def test_search_takes_space_and_strategy_objects(tmp_path):
    space = dnas.create_space("toy-mlp", width=4, layers=1)
    strategy = dnas.create_strategy("darts", epochs=1)
    r = dnas.search(space, strategy, "synthetic", data_config={"batch_size": 16, "subset": 0.125}, out=tmp_path / "r",
                    progress=False)
    assert r.genotype.space == "toy-mlp" and dict(r.genotype.config)["width"] == 4
    saved = (tmp_path / "r" / "config.yaml").read_text()
    assert "width: 4" in saved and "epochs: 1" in saved


def test_config_file_errors_name_the_file(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("space: {name: darts, CC: 4}\n")
    assert main(["search", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dnas: error: {cfg} (with the command-line options): unknown option 'CC' for space 'darts'")


def test_options_lists_every_option_with_paper_and_code_defaults(capsys):
    assert main(["search", "--space", "ddarts", "--strategy", "shapley", "--options"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ") and "." in line.split()[0]}
    assert rows["space.C"][1:] == ["int", "16", "32"]  # type, default, the authors' code
    assert rows["strategy.w01"][1:] == ["float", "8.0", "9.0"] and rows["strategy.wAB"][1:] == ["float", "0.5", "0.7"]
    assert rows["strategy.ablation"][1:] == ["input|random", "input", "random"]
    assert "data.batch_size" in rows and "strategy.epochs" in rows and "space.individual" in rows
