"""Data-parallel search on CPU with gloo: 2 ranks = 1 process on the concatenated batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

PLUGINS = str(Path(__file__).parent / "plugins")


@pytest.mark.parametrize("order", [1, 2])
def test_two_gloo_ranks_take_the_single_process_step(tmp_path, order):
    import ddp_worker

    out = tmp_path / "rank0.pt"
    mp.start_processes(ddp_worker.worker, args=(2, str(tmp_path / "store"), str(out), order), nprocs=2, start_method="spawn")
    two = torch.load(out, weights_only=True)
    train, val = ddp_worker.global_batches()
    one = ddp_worker.one_step(order, train, val)
    assert one.keys() == two.keys()
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-5, rtol=0), k
    assert not torch.allclose(one["alphas.layers"], torch.zeros_like(one["alphas.layers"]))


def test_torchrun_search_matches_one_process_with_the_global_batch(tmp_path):
    env = {**os.environ, "PYTHONPATH": PLUGINS, "OMP_NUM_THREADS": "1"}
    common = ["--plugin", "toyspace", "search", "--space", "toy-mlp", "--strategy", "darts", "--data", "synthetic",
              "--epochs", "2", "--no-progress"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "dnas", *common, "--batch-size", "16", "--out", str(tmp_path / "ddp")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([sys.executable, "-m", "dnas", *common, "--batch-size", "32", "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    from dnas._io import safe_torch_load

    a, b = safe_torch_load(tmp_path / "ddp" / "alphas.pt"), safe_torch_load(tmp_path / "one" / "alphas.pt")
    assert torch.allclose(a["layers"], b["layers"], atol=1e-5)
    hist = (tmp_path / "ddp" / "history.jsonl").read_text().splitlines()
    assert len(hist) == 2  # one writer: no duplicated records
    h1 = [json.loads(x) for x in (tmp_path / "one" / "history.jsonl").read_text().splitlines()]
    assert json.loads(hist[-1])["train_loss"] == pytest.approx(h1[-1]["train_loss"], abs=1e-5)
