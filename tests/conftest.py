import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import dnas  # noqa: E402,F401  (registers the built-ins)

TINY_DARTS = dict(C=4, layers=3, nodes=2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "plugins"))

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, deadline=None)
settings.load_profile("ci")
