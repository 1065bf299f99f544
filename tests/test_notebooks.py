"""Run every notebook in nbs/ through nbdev's notebook tester (cells flagged `slow`/`notest` skipped).

One pytest item per notebook, so the run ends with pytest's `N passed` line and xdist can
spread notebooks over the cores."""
import configparser
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(p for p in (ROOT / 'nbs').glob('*.ipynb') if not p.name.startswith('_'))
_cfg = configparser.ConfigParser(delimiters=['=']); _cfg.read(ROOT / 'settings.ini')
SKIP_FLAGS = _cfg['DEFAULT'].get('tst_flags', '').split()


@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_notebook(nb, monkeypatch):
    from nbdev.test import test_nb
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    ok, secs = test_nb(nb, skip_flags=SKIP_FLAGS, showerr=True)
    assert ok, f'{nb.name} failed (traceback above)'
