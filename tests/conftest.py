"""Shared fixtures: the repository root, the reference facts in ../shared, seeded RNGs."""
import os, random, sys
from pathlib import Path
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# numba's on-disk cache is not safe for processes that compile different signatures of one function at once: each
# picks the first free slot file, the last index written wins, and a later load runs another signature's machine
# code (a segfault, seen with librosa's pyin helpers when two workers first ran it in a fresh venv; the poisoned
# cache then crashed every run). Each pytest worker, and every process it starts, caches in a folder of its own.
os.environ['NUMBA_CACHE_DIR'] = str(ROOT / '.cache' / 'numba' / os.environ.get('PYTEST_XDIST_WORKER', 'main'))
assert 'numba' not in sys.modules, 'numba was imported before conftest could set NUMBA_CACHE_DIR'

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
