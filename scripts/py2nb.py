"""Authoring helper: turn a py:percent draft into a clean nbs/ notebook.

    .venv/bin/python scripts/py2nb.py DRAFT.py nbs/NN_name.ipynb

Drafts are scratch files (keep them out of the repo); the .ipynb is the source of truth.
Needs `pip install jupytext` in the venv (an authoring tool, not a project dependency)."""
import json, subprocess, sys
from pathlib import Path

src, dst = map(Path, sys.argv[1:3])
subprocess.run([str(Path(sys.executable).parent / 'jupytext'), '--quiet', '--to', 'ipynb', '-o', str(dst), str(src)], check=True)
nb = json.loads(dst.read_text())
nb['metadata'] = {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}}
for c in nb['cells']:
    c['metadata'] = {}
    if c['cell_type'] == 'code': c['outputs'], c['execution_count'] = [], None
dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
subprocess.run([str(Path(sys.executable).parent / 'nbdev_clean'), '--fname', str(dst)], check=True)
