"""Authoring helper: turn a py:percent draft into a clean nbs/ notebook.

    .venv/bin/python scripts/py2nb.py DRAFT.py nbs/NN_name.ipynb

Drafts are scratch files (keep them out of the repo); the .ipynb is the source of truth.
Needs `pip install jupytext` in the venv (an authoring tool, not a project dependency)."""
import json, subprocess, sys
from pathlib import Path

src, dst = map(Path, sys.argv[1:3])
# cells whose text is unchanged keep their ids, so a re-conversion only shows real edits in the diff
old_ids = {}
if dst.exists():
    for c in json.loads(dst.read_text()).get('cells', []):
        if 'id' in c: old_ids.setdefault(''.join(c['source']), []).append(c['id'])
subprocess.run([str(Path(sys.executable).parent / 'jupytext'), '--quiet', '--to', 'ipynb', '-o', str(dst), str(src)], check=True)
nb = json.loads(dst.read_text())
nb['metadata'] = {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}}
taken = set()
for c in nb['cells']:
    c['metadata'] = {}
    same = [i for i in old_ids.get(''.join(c['source']), []) if i not in taken]
    if same: c['id'] = same[0]
    taken.add(c.get('id'))
    if c['cell_type'] == 'code': c['outputs'], c['execution_count'] = [], None
dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
subprocess.run([str(Path(sys.executable).parent / 'nbdev_clean'), '--fname', str(dst)], check=True)
