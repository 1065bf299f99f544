"""A reader's Run All, as a test: every chapter in nbs/ runs top to bottom in a real Jupyter kernel.

Each notebook is executed by nbclient in a fresh `python3` kernel (ipykernel, the inline matplotlib backend a
reader gets), with the working directory nbs/, every code cell in order, *including* the cells that
`nbdev_test` skips (`eval: false`, `slow`): a reader's Run All runs them too. `VITS_NB_QUICK=1` is set, so slow
cells take their reduced scale (the same code at seconds instead of minutes). A cell fails the test when it
raises, exits (`SystemExit` from a CLI entry point left runnable in a kernel) or prints a traceback; a figure
fails it when its PNG is smaller than the figure standard in CONTRIBUTING.md (figsize >= (8, 3) at dpi >= 100).

One pytest item per notebook, so `pytest -n 2` spreads them over the cores. Per-cell times are written to
`.cache/runall/<notebook>.json` (git-ignored), the executed notebook to `.cache/runall/<notebook>.ipynb`."""
import base64, json, os, re, struct, time
from pathlib import Path
import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(p for p in (ROOT / 'nbs').glob('*.ipynb') if not p.name.startswith('_'))
OUT = ROOT / '.cache' / 'runall'
# figsize (8, 3) at dpi 100 is 800 x 300 px; the inline backend crops the figure to its tight bounding box, which
# takes off part of the margins, so the check allows for that (an (8, 3) figure at dpi 60 is 480 x 180 px)
MIN_PNG = (720, 270)


def png_size(b64):
    "Width and height of a base64-encoded PNG (from its IHDR chunk)."
    head = base64.b64decode(b64[:64])
    return struct.unpack('>II', head[16:24])


def run_all(nb, path, timeout=600):
    "Execute notebook `nb` (read from `path`) in place as Run All does, cwd its folder; return the wall seconds."
    client = nbclient.NotebookClient(nb, timeout=timeout, startup_timeout=180, kernel_name='python3',
                                     resources={'metadata': {'path': str(path.parent)}}, record_timing=True)
    t0 = time.perf_counter()
    try:
        client.execute()
    finally:
        secs = time.perf_counter() - t0
    return secs


def problems(nb):
    "What a reader would see go wrong: tracebacks printed to a stream, figures below the standard."
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != 'code': continue
        for o in cell.get('outputs', []):
            if o.get('output_type') == 'stream' and 'Traceback (most recent call last)' in o.get('text', ''):
                out.append(f'cell {i} printed a traceback:\n{o["text"][-2000:]}')
            png = o.get('data', {}).get('image/png') if o.get('output_type') in ('display_data', 'execute_result') else None
            if png:
                w, h = png_size(png)
                if w < MIN_PNG[0] or h < MIN_PNG[1]:
                    out.append(f'cell {i}: a {w} x {h} px figure, below the figure standard (figsize >= (8, 3) at '
                               f'dpi >= 100; see CONTRIBUTING.md):\n{"".join(cell.source)[:300]}')
    return out


def cell_seconds(nb):
    "Seconds each executed code cell took, from nbclient's timing metadata: [(cell index, seconds, first line)]."
    from datetime import datetime
    rows = []
    for i, cell in enumerate(nb.cells):
        t = cell.get('metadata', {}).get('execution', {})
        if cell.cell_type == 'code' and 'iopub.execute_input' in t and 'shell.execute_reply' in t:
            a, b = (datetime.fromisoformat(t[k].replace('Z', '+00:00')) for k in ('iopub.execute_input', 'shell.execute_reply'))
            rows.append((i, round((b - a).total_seconds(), 2), ''.join(cell.source).split('\n')[0][:60]))
    return rows


@pytest.mark.parametrize('path', NBS, ids=[p.stem for p in NBS])
def test_run_all(path, monkeypatch):
    monkeypatch.setenv('VITS_NB_QUICK', '1')
    monkeypatch.delenv('MPLBACKEND', raising=False)      # the inline backend, as in Jupyter
    for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):      # one thread per kernel: pytest workers fill the cores
        monkeypatch.setenv(k, os.environ.get(k, '1'))
    OUT.mkdir(parents=True, exist_ok=True)
    nb, err = nbformat.read(path, as_version=4), None
    try:
        secs = run_all(nb, path)
    except nbclient.exceptions.CellExecutionError as e:
        err = e
    if err is not None:
        nbformat.write(nb, OUT / path.name)
        msg = re.sub(r'\x1b\[[0-9;]*m', '', str(err))     # IPython's colours
        raise AssertionError(f'{path.name}: Run All stopped at a cell that raised or exited:\n{msg[-4000:]}')
    rows = cell_seconds(nb)
    (OUT / f'{path.stem}.json').write_text(json.dumps(
        {'notebook': path.name, 'wall_seconds': round(secs, 1), 'cells': rows}, indent=0))
    slow = sorted(rows, key=lambda r: -r[1])[:3]
    print(f'{path.name}: {secs:.1f} s; slowest cells: {slow}')
    bad = problems(nb)
    nbformat.write(nb, OUT / path.name)                   # the executed notebook, to look at
    assert not bad, f'{path.name}:\n' + '\n\n'.join(bad)
