"""The inference chapter in a real browser: JupyterLab on 127.0.0.1, headless Debian Chromium driven by Playwright.

The test copies nbs/14_inference.ipynb (which builds its own tiny random checkpoint in a temp folder) into a
fresh server root, runs all cells from the Run menu, types a new sentence into the first panel, presses
Synthesize, and waits until the page's <audio> element holds a new WAV whose decoded duration is exactly the
frame count the panel reports times hop/sr. A screenshot goes to the test's tmp folder (and to
$VITS_NB_ARTIFACTS when set). Needs `chromium` (apt) and `playwright` (pip); no browser is downloaded.

After Run All, the figures of three chapters (09 duration, 12 model, 14 inference) are photographed as a reader
sees them at 1280 px: the top of the notebook and every cell with an image, into `.cache/screenshots/<chapter>/`
(git-ignored), so a person can look at them."""
import json, os, re, secrets, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / 'nbs' / '14_inference.ipynb'
SCREENSHOTS = ROOT / '.cache' / 'screenshots'
# photographed here (with cells whose output shows these texts); 14_inference by the panel test
SHOT_CHAPTERS = {'09_duration': ('gap bound',), '12_model': ('total generator loss', 'config(s) that fit it')}
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
    # the notebooks served are copies, but nothing should be written back while cells run
    _write(settings / '@jupyterlab' / 'docmanager-extension' / 'plugin.jupyterlab-settings', {'autosave': False})
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONFAULTHANDLER='1', JUPYTER_CONFIG_DIR=str(home / 'config'),
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


_PROMPTS = "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent.trim())"
_ERRORS = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]'
_STATUS = "() => { const e = document.querySelector('.jp-Notebook-ExecutionIndicator'); return e ? e.dataset.status : null; }"


def _wait_kernel_idle(page, timeout):
    "Wait until the notebook's execution indicator reports an idle kernel (`data-status` is set by JupyterLab 4)."
    page.wait_for_function(f"() => ({_STATUS})() === 'idle'", timeout=timeout * 1000)


def _diagnose(page, home, why):
    "A failure message that says what the page showed: cell prompts, any dialog, the server's last log lines."
    dialogs = page.locator('.jp-Dialog')
    dialog = dialogs.first.inner_text()[:500] if dialogs.count() else None
    status = page.evaluate(_STATUS)
    log = (home / 'jupyter.log').read_text(errors='replace')[-3000:]
    return f'{why}\nprompts: {page.evaluate(_PROMPTS)}\nkernel: {status}\ndialog: {dialog}\njupyter.log tail:\n{log}'


def _dismiss_dialogs(page):
    "Cancel every open dialog (each queued cell may have asked for a kernel) until none shows for a second."
    quiet = 0
    while quiet < 4:
        if page.locator('.jp-Dialog').count():
            page.locator('.jp-Dialog .jp-mod-reject').first.click(); quiet = 0
        else: quiet += 1
        page.wait_for_timeout(250)


def _run_all_cells(page, n_code, home, timeout, runs_max=3):
    """Run ▸ Run All Cells, then wait until every code cell shows an execution count; fail at once, with the
    traceback, when a cell raises. Run All can race the kernel's start on a loaded machine: JupyterLab then either
    asks for a kernel (one dialog per queued cell) or silently clears the queue. So dialogs are cancelled (the kernel
    starts on its own), and when the kernel sits idle for 10 s with nothing queued or running, Run All is pressed
    again, at most `runs_max` times in all."""
    deadline, runs, stalled = time.monotonic() + timeout, 0, 0
    while True:
        if page.locator('.jp-Dialog').count(): _dismiss_dialogs(page); stalled = 20
        errors = page.locator(_ERRORS)
        if errors.count(): raise AssertionError(errors.first.inner_text()[:3000])
        prompts = page.evaluate(_PROMPTS)
        if len(prompts) == n_code and all(re.fullmatch(r'\[\d+\]:?', p) for p in prompts): return
        idle = page.evaluate(_STATUS) == 'idle' and not any('*' in p for p in prompts)
        stalled = stalled + 1 if idle else 0
        if runs == 0 or stalled >= 20:
            if runs == runs_max: raise AssertionError(_diagnose(page, home, f'Run All pressed {runs} times, cells did not run'))
            _wait_kernel_idle(page, timeout=120)
            page.locator('.lm-MenuBar-itemLabel', has_text=re.compile(r'^Run$')).click()
            page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$')).click()
            runs, stalled = runs + 1, 0
        if time.monotonic() > deadline:
            raise AssertionError(_diagnose(page, home, f'not every code cell ran within {timeout} s'))
        page.wait_for_timeout(500)


def _screenshot_chapter(page, name, max_figures=8, texts=()):
    """Photograph a notebook after Run All: the top of the page, then each code cell with an image output
    and each whose output shows one of `texts` (scrolled into view, the cell only), into SCREENSHOTS/name/.
    Returns the paths written."""
    dest = SCREENSHOTS / name
    shutil.rmtree(dest, ignore_errors=True); dest.mkdir(parents=True)
    page.locator('.jp-Notebook .jp-Cell').first.scroll_into_view_if_needed()
    shots = [dest / '00_top.png']
    page.screenshot(path=str(shots[0]))
    cells = page.locator('.jp-Notebook .jp-CodeCell').filter(has=page.locator('.jp-OutputArea-output img'))
    for k in range(min(cells.count(), max_figures)):
        cell = cells.nth(k)
        cell.scroll_into_view_if_needed()
        shots.append(dest / f'{k + 1:02d}_figure.png')
        cell.screenshot(path=str(shots[-1]))
    for k, text in enumerate(texts):
        cell = page.locator('.jp-Notebook .jp-CodeCell').filter(
            has=page.locator('.jp-OutputArea-output', has_text=text)).first
        cell.scroll_into_view_if_needed()
        shots.append(dest / f'{k + 1:02d}_output.png')
        cell.screenshot(path=str(shots[-1]))
    return shots


def _repo_like_root(root, notebooks):
    "A server root laid out like the repository: copies of `notebooks` in nbs/, configs/ tests/ data/ linked."
    (root / 'nbs').mkdir(parents=True)
    for nb in notebooks: shutil.copy(nb, root / 'nbs' / nb.name)
    for d in ('configs', 'tests', 'data'): (root / d).symlink_to(ROOT / d, target_is_directory=True)
    return root / 'nbs'


def test_chapters_run_all_in_chromium_with_screenshots(tmp_path):
    "Run All in JupyterLab for each of SHOT_CHAPTERS: no cell errors; the figures are photographed."
    home = tmp_path / 'home'; home.mkdir()
    nbs = _repo_like_root(tmp_path / 'repo', [ROOT / 'nbs' / f'{c}.ipynb' for c in SHOT_CHAPTERS])
    port, token = _free_port(), secrets.token_hex(16)
    proc = _start_lab(nbs, home, port, token)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                for name in SHOT_CHAPTERS:
                    page = browser.new_page(viewport={'width': 1280, 'height': 1000})
                    page.set_default_timeout(120_000)
                    # a workspace per chapter: the default one would reopen the previous chapter's tab
                    page.goto(f'http://127.0.0.1:{port}/lab/workspaces/{name}/tree/{name}.ipynb'
                              f'?reset&token={token}')
                    page.wait_for_selector('.jp-Notebook .jp-Cell')
                    _wait_kernel_idle(page, timeout=240)
                    n_code = sum(c['cell_type'] == 'code'
                                 for c in json.loads((nbs / f'{name}.ipynb').read_text())['cells'])
                    try:
                        _run_all_cells(page, n_code, home, timeout=300)
                        errors = page.locator(_ERRORS)
                        assert errors.count() == 0, errors.first.inner_text()[:2000]
                        shots = _screenshot_chapter(page, name, texts=SHOT_CHAPTERS[name])
                    except Exception:
                        page.screenshot(path=str(tmp_path / f'failure_{name}.png'), full_page=True)
                        raise
                    assert len(shots) >= 3 and all(s.stat().st_size > 10_000 for s in shots), shots
                    page.close()
            finally:
                browser.close()
    finally:
        _stop(proc)


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
                # Run All only once the page's kernel is up and idle: clicked earlier (a slow, loaded machine), the
                # notebook has "No Kernel" yet, JupyterLab opens a Select Kernel dialog and clears the queued cells.
                _wait_kernel_idle(page, timeout=240)
                n_code = sum(c['cell_type'] == 'code' for c in json.loads(NOTEBOOK.read_text())['cells'])
                _run_all_cells(page, n_code, home, timeout=300)
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
                _screenshot_chapter(page, NOTEBOOK.stem)
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
