"""Shared fixtures: the repository root, the reference facts in ../shared, seeded RNGs."""
import os, random
from pathlib import Path
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get('PYTEST_XDIST_WORKER'):
    # one torch thread per pytest worker: the workers already fill the cores, and oversubscribed
    # intra-op threads make small-tensor notebooks tens of times slower
    import torch
    torch.set_num_threads(1)
FIXTURES = ROOT / 'tests' / 'fixtures'


@pytest.fixture(autouse=True)
def _seed_everything():
    "Every test starts from the same random state."
    random.seed(0); np.random.seed(0)
    try:
        import torch
        torch.manual_seed(0)
    except ImportError:  # pragma: no cover
        pass
    yield


@pytest.fixture
def root(): return ROOT


@pytest.fixture
def fixtures(): return FIXTURES
