"""The inference chapter in a real browser: JupyterLab on 127.0.0.1, headless Debian Chromium driven by Playwright.

The test copies nbs/14_inference.ipynb (which builds its own tiny random checkpoint in a temp folder) into a
fresh server root, runs all cells from the Run menu, types a new sentence into the first panel, presses
Synthesize, and waits until the page's <audio> element holds a new WAV whose decoded duration is exactly the
frame count the panel reports times hop/sr. A screenshot goes to the test's tmp folder (and to
$VITS_NB_ARTIFACTS when set). Needs `chromium` (apt) and `playwright` (pip); no browser is downloaded."""
import json, os, re, secrets, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / 'nbs' / '14_inference.ipynb'
CHROMIUM = os.environ.get('VITS_NB_CHROMIUM', '/usr/bin/chromium')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage']

if not Path(CHROMIUM).exists():
    pytest.skip(f'no Chromium at {CHROMIUM} (apt-get install chromium)', allow_module_level=True)
sync_api = pytest.importorskip('playwright.sync_api', reason='playwright is not installed (pip install playwright)')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True); path.write_text(json.dumps(obj))


def _start_lab(root, home, port, token):
    "JupyterLab on 127.0.0.1 with user dirs inside `home`: no terminals, no extension manager, no news, no windowing."
    settings = home / 'lab-settings'
    _write(settings / '@jupyterlab' / 'notebook-extension' / 'tracker.jupyterlab-settings', {'windowingMode': 'none'})
    _write(settings / '@jupyterlab' / 'apputils-extension' / 'notification.jupyterlab-settings',
           {'fetchNews': 'false', 'checkForUpdates': False})
    env = dict(os.environ, OMP_NUM_THREADS='1', JUPYTER_CONFIG_DIR=str(home / 'config'),
               JUPYTER_RUNTIME_DIR=str(home / 'runtime'), IPYTHONDIR=str(home / 'ipython'),
               JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(home / 'workspaces'))
    env.pop('MPLBACKEND', None)
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ip=127.0.0.1', f'--port={port}',
           f'--IdentityProvider.token={token}', '--allow-root', f'--ServerApp.root_dir={root}', '--ServerApp.port_retries=0',
           '--ServerApp.terminals_enabled=False', '--LabApp.extension_manager=readonly', '--LabApp.news_url=None',
           '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate',
           f'--LabServerApp.user_settings_dir={settings}', f'--LabServerApp.workspaces_dir={home / "workspaces"}']
    log = open(home / 'jupyter.log', 'wb')
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}/api/status?token={token}'
    for _ in range(240):
        if proc.poll() is not None: break
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200: return proc
        except OSError: time.sleep(.25)
    proc.kill()
    raise RuntimeError(f'JupyterLab did not start:\n{(home / "jupyter.log").read_text()[-3000:]}')


def _stop(proc):
    proc.terminate()
    try: proc.wait(10)
    except subprocess.TimeoutExpired: proc.kill(); proc.wait(5)


def test_inference_notebook_synthesizes_in_chromium(tmp_path):
    root, home = tmp_path / 'root', tmp_path / 'home'
    root.mkdir(); home.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    port, token = _free_port(), secrets.token_hex(16)
    shot = tmp_path / 'inference_ui.png'
    proc = _start_lab(root, home, port, token)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={'width': 1280, 'height': 1000})
                page.set_default_timeout(120_000)   # generous: CI shares 2 cores with another pytest worker
                page.goto(f'http://127.0.0.1:{port}/lab/tree/{NOTEBOOK.name}?token={token}')
                page.wait_for_selector('.jp-Notebook .jp-Cell')
                page.wait_for_function("() => [...document.querySelectorAll('.jp-Notebook-ExecutionIndicator, "
                                       ".jp-KernelStatus, .jp-Toolbar-kernelStatus')].length > 0")
                page.wait_for_timeout(500)
                # Run ▸ Run All Cells
                page.locator('.lm-MenuBar-itemLabel', has_text=re.compile(r'^Run$')).click()
                page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$')).click()
                n_code = json.loads(NOTEBOOK.read_text())['cells']
                n_code = sum(c['cell_type'] == 'code' for c in n_code)
                # every code cell has run: its prompt shows a number, none shows [*] or is empty
                page.wait_for_function(
                    """n => { const ps = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
                             return ps.length === n && ps.every(p => /\\[\\d+\\]/.test(p.textContent)); }""",
                    arg=n_code, timeout=300_000)
                errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')
                assert errors.count() == 0, errors.first.inner_text()[:2000]
                # the first panel (single speaker): new text, press Synthesize
                panel = page.locator('.vits-ui').first
                panel.scroll_into_view_if_needed()
                audio, status = panel.locator('audio.vits-audio'), panel.locator('.vits-status')
                before, old_status = audio.get_attribute('src'), status.inner_text()
                panel.locator('textarea').fill('Hello from a headless browser, with a longer sentence than before.')
                panel.locator('button', has_text='Synthesize').click()
                # a new WAV arrives and the browser decodes it; the status reports the model's frame count
                page.wait_for_function(
                    "([el, old]) => el.src && el.src !== old && el.readyState >= 1 && isFinite(el.duration) && el.duration > 0",
                    arg=[audio.element_handle(), before], timeout=120_000)
                page.wait_for_function("([el, old]) => el.innerText !== old && /frames/.test(el.innerText)",
                                       arg=[status.element_handle(), old_status])
                duration, new_status = audio.evaluate('el => el.duration'), status.inner_text()
                frames = int(re.search(r'→ (\d+) frames', new_status).group(1))
                assert abs(duration - frames * 256 / 22050) < 1e-3, (duration, new_status)   # exactly the synthesized samples
                assert audio.get_attribute('src').startswith('blob:')
                assert panel.locator('img.vits-plot').evaluate('el => el.naturalWidth') > 100   # alignment + mel PNG
                assert 'bɹˈaʊzɚ' in panel.locator('.vits-phonemes').inner_text()                # the new text was spoken
                panel.screenshot(path=str(shot))
            except Exception:
                page.screenshot(path=str(tmp_path / 'failure.png'), full_page=True)
                raise
            finally:
                browser.close()
    finally:
        _stop(proc)
    assert shot.stat().st_size > 10_000
    if os.environ.get('VITS_NB_ARTIFACTS'):
        dest = Path(os.environ['VITS_NB_ARTIFACTS']); dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, dest / shot.name)
