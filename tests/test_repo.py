"""Repository hygiene: the library is exactly what the notebooks export, notebooks are clean and small, the test
run isolates its numba caches."""
import hashlib, json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MAX_OUTPUT_BYTES = 100_000


def _digest(paths):
    return {str(p.relative_to(ROOT)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(paths)}


def test_export_and_clean_change_nothing():
    "`nbdev_export` and `nbdev_clean` are no-ops on the committed tree."
    before = _digest(list((ROOT / 'vits_nb').glob('*.py')) + list((ROOT / 'nbs').glob('*.ipynb')))
    for tool in ('nbdev_export', 'nbdev_clean'):
        subprocess.run([str(BIN / tool)], cwd=ROOT, check=True, capture_output=True)
    after = _digest(list((ROOT / 'vits_nb').glob('*.py')) + list((ROOT / 'nbs').glob('*.ipynb')))
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f'export/clean changed {changed}: run `make export` and commit'


def test_notebooks_have_no_widget_state_or_big_outputs():
    for nb in sorted((ROOT / 'nbs').glob('*.ipynb')):
        d = json.loads(nb.read_text())
        assert 'widgets' not in d.get('metadata', {}), f'{nb.name} carries widget state'
        for i, cell in enumerate(d['cells']):
            size = len(json.dumps(cell.get('outputs', [])))
            assert size <= MAX_OUTPUT_BYTES, f'{nb.name} cell {i}: output of {size} bytes'


def test_notebook_list_matches_the_map():
    "Every chapter notebook is linked from index.ipynb, so the map stays true."
    index = (ROOT / 'nbs' / 'index.ipynb').read_text()
    for nb in sorted((ROOT / 'nbs').glob('[0-9]*.ipynb')):
        assert nb.stem in index, f'{nb.name} is missing from the map in index.ipynb'


def test_numba_caches_in_a_folder_per_worker():
    "conftest gives each pytest worker (and what it starts) its own numba cache: concurrent cache writes corrupt it."
    import numba
    want = str(ROOT / '.cache' / 'numba' / os.environ.get('PYTEST_XDIST_WORKER', 'main'))
    assert numba.config.CACHE_DIR == want
    child = subprocess.run([sys.executable, '-c', 'import numba; print(numba.config.CACHE_DIR)'],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert child == want
