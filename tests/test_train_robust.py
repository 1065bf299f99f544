"""Training that nothing a user feeds it can crash, corrupt or lose (issue 15, the training half).

Pruning with unreadable checkpoints, rows with more text tokens than frames (train and validation), SIGTERM,
a full disk, a read-only run folder, `--max-steps 0`, and a kill-and-resume that gives the same losses, bit for
bit, as the run that was never stopped. Tiny config, the 4+1-utterance toy corpus of `test_train.py`, and
generator-only training where the discriminator is not the point (it is 46.7M parameters on a CPU)."""
import errno, hashlib, json, os, signal, subprocess, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np
import pytest
import soundfile as sf
import torch

import vits_nb.train as T
from vits_nb.train import (Trainer, TrainError, train, train_main, checkpoint_steps, prune_checkpoints,
                           drop_unalignable, rng_state, set_rng_state, _Indexed)
from vits_nb.data import TextAudioLoader, atomic_torch_save
from vits_nb.models import read_checkpoint
from test_train import corpus, _hps, _first_batch, ROOT          # noqa: F401 (the session corpus fixture)

QUIET = dict(progress=False, tensorboard=False)


def _digest(d):
    "File name -> sha256 of every file in `d` (what 'intact' means)."
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(d).iterdir()) if p.is_file()}


def _garbage_pair(run, step):
    for n in 'GD': (run / f'{n}_{step}.pth').write_bytes(b'PK\x03\x04 this is not a checkpoint')


def _cfg(corpus, tmp_path, **train_over):
    path = tmp_path / 'c.json'
    path.write_text(json.dumps(_hps(corpus, **train_over).to_dict()))
    return str(path)


def _one_error_line(err):
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith('vits-nb train: error: '), err
    assert 'Traceback' not in err
    return lines[0]


# ---------------------------------------------------------------- pruning

def test_prune_fault_injection_unreadable_checkpoints(tmp_path):
    "Unreadable files never count as kept; protected steps are never deleted; no readable pair: delete nothing."
    run = tmp_path / 'run'; run.mkdir()
    def good(step):
        for n in 'GD': atomic_torch_save({'model': {'w': torch.full((2,), float(step))}, 'iteration': 1},
                                         run / f'{n}_{step}.pth')
    for s in (1, 2, 4): good(s)
    _garbage_pair(run, 3); _garbage_pair(run, 5)
    (run / 'D_6.pth').write_bytes(b'')                        # D of a pair unreadable, its G fine
    atomic_torch_save({'model': {}}, run / 'G_6.pth')
    (run / 'G_0.pth').write_bytes(b'orphan')                  # an old G without its D
    assert prune_checkpoints(run, keep=0) == [] and prune_checkpoints(run, keep=None) == []
    # keep 1: the newest readable pair is 4 (5 and 6 are unreadable); 2 is protected (resumed from)
    gone = prune_checkpoints(run, keep=1, protect={2, None})
    assert gone == ['D_1.pth', 'D_3.pth', 'G_0.pth', 'G_1.pth', 'G_3.pth']
    assert checkpoint_steps(run) == [2, 4, 5, 6]              # unreadable pairs newer than a kept one stay
    for s in (2, 4): read_checkpoint(run / f'G_{s}.pth'); read_checkpoint(run / f'D_{s}.pth')
    # every pair unreadable: nothing is deleted, whatever keep says
    bad = tmp_path / 'bad'; bad.mkdir()
    for s in (7, 8): _garbage_pair(bad, s)
    before = _digest(bad)
    assert prune_checkpoints(bad, keep=1) == [] and _digest(bad) == before
    # a file replaced by garbage after it was checked is re-checked (the cache keys on size and mtime)
    (run / 'G_4.pth').write_bytes(b'x')
    assert not T._readable(run / 'G_4.pth')


def test_pruning_keeps_resumed_and_written_pairs(corpus, tmp_path):
    "The issue's repro: G_12/D_12 good, G_14/D_14 unreadable, --keep 1 --max-steps 13."
    hps, run = _hps(corpus), tmp_path / 'run'
    tr = Trainer(hps, adversarial=False, log=lambda *a: None)
    tr.step = 12; tr.save(run)
    _garbage_pair(run, 14)
    g12 = _digest(run)['G_12.pth']
    with pytest.warns(UserWarning, match='cannot resume from G_14.pth'):
        s = train(hps, run, max_steps=13, keep=1, adversarial=False, eval_interval=10**9, **QUIET)
    assert s['resumed_from'].endswith('G_12.pth') and s['step'] == 13
    assert checkpoint_steps(run) == [12, 13, 14]              # resumed-from and just-written kept; 14 not counted
    assert _digest(run)['G_12.pth'] == g12
    assert read_checkpoint(run / 'G_13.pth')[1]['step'] == 13
    # every older checkpoint unreadable: the pair just written survives its own pruning
    run2 = tmp_path / 'run2'; run2.mkdir(); _garbage_pair(run2, 14)
    with pytest.warns(UserWarning, match='cannot resume'):
        s = train(hps, run2, max_steps=1, keep=1, adversarial=False, eval_interval=10**9, **QUIET)
    assert s['resumed_from'] is None and checkpoint_steps(run2) == [1, 14]
    read_checkpoint(run2 / 'G_1.pth'); read_checkpoint(run2 / 'D_1.pth')


# ---------------------------------------------------------------- rows that cannot align

def _unalignable_row(tmp_path):
    "Half a second of audio (43 frames) under 100 phonemes (201 tokens with blanks)."
    wav = tmp_path / 'short.wav'
    t = np.arange(11025) / 22050
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050, subtype='PCM_16')
    return f'{wav}|{"ə" * 100}\n'


def test_unalignable_rows_skipped_in_train_and_validation(corpus, tmp_path):
    bad = _unalignable_row(tmp_path)
    (tmp_path / 'train.txt').write_text(corpus[0].read_text() + bad)                 # line 5
    (tmp_path / 'val.txt').write_text(bad + corpus[1].read_text())                   # line 1
    hps = _hps(corpus)
    hps.data.training_files, hps.data.validation_files = str(tmp_path / 'train.txt'), str(tmp_path / 'val.txt')
    logged = []
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        s = train(hps, tmp_path / 'run', max_steps=2, adversarial=False, eval_interval=2,
                  callback=lambda i: logged.append(i['event']), **QUIET)
    msgs = [str(x.message) for x in w]
    assert any('line 5' in m and '201 text tokens but only 43 frames' in m for m in msgs), msgs
    assert any('line 1' in m and 'unalignable' in m for m in msgs), msgs
    assert (s['step'], s['n_bad_rows'], s['n_bad_val_rows'], s['n_skipped']) == (2, 1, 1, 0)
    assert 'eval' in logged and checkpoint_steps(tmp_path / 'run') == [2]           # evaluated, then saved


def test_the_batch_path_never_raises_for_one_item(corpus, tmp_path):
    (tmp_path / 'train.txt').write_text(corpus[0].read_text() + _unalignable_row(tmp_path))
    hps = _hps(corpus)
    with pytest.warns(UserWarning):
        raw = TextAudioLoader(tmp_path / 'train.txt', hps.data)           # not filtered: the loader's check
        ix = _Indexed(raw)
        items = [ix[i] for i in range(len(raw))]
    assert len(items) == 5 and [r[0] for r in raw.skipped] == [5]
    assert all(it[0].size(0) <= it[1].size(1) for it in items)
    assert [it[-1] for it in items] == list(range(5))                  # each keeps the index it was asked for
    with pytest.warns(UserWarning, match='skipped 1 unalignable'):
        assert len(drop_unalignable(TextAudioLoader(tmp_path / 'train.txt', hps.data))) == 4
    # a collated batch with one unalignable item: the step is skipped and counted, nothing raises
    x, x_len, spec, spec_len, y, y_len = _first_batch(hps)
    n = int(spec_len[0]) + 1
    x = torch.cat([x, torch.ones(x.size(0), max(0, n - x.size(1)), dtype=x.dtype)], 1); x_len = x_len.clone()
    x_len[0] = n
    tr = Trainer(hps, adversarial=False, log=lambda *a: None)
    assert tr.train_step((x, x_len, spec, spec_len, y, y_len)) == {'skipped': 'input'}
    assert tr.counters['n_skipped_input'] == 1


# ---------------------------------------------------------------- signals, full disk, read-only, max-steps 0

SIGTERM_DRIVER = r'''
import pathlib, sys
import vits_nb.train as T
orig = T.Trainer.train_step
def step(self, batch):
    out = orig(self, batch)
    if self.step >= 1: pathlib.Path('stepped').touch()       # the second step has run
    return out
T.Trainer.train_step = step
sys.exit(T.train_main(sys.argv[1:]))
'''


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(corpus, tmp_path):
    (tmp_path / 'driver.py').write_text(SIGTERM_DRIVER)
    run = tmp_path / 'run'
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    p = subprocess.Popen([sys.executable, 'driver.py', '-c', _cfg(corpus, tmp_path), '-m', str(run),
                          '--max-steps', '100000', '--no-adversarial', '--no-progress'], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while not (tmp_path / 'stepped').exists():
        assert p.poll() is None, p.stdout.read()[-3000:]
        assert time.time() - t0 < 300, 'training never reached its second step'
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out[-3000:]
    assert 'Traceback' not in out and 'SIGTERM: stopping at step' in out and 'stopped by SIGTERM' in out
    steps = checkpoint_steps(run)
    assert len(steps) == 1 and steps[0] >= 2, steps
    _, meta = read_checkpoint(run / f'G_{steps[0]}.pth')
    assert meta['step'] == steps[0] and meta['rng']['world'] == 1
    assert not any(f.name.endswith('.tmp') for f in run.iterdir())


def test_full_disk_names_the_run_folder_and_keeps_the_previous_pair(corpus, tmp_path, monkeypatch, capsys):
    run = tmp_path / 'run'; run.mkdir()
    for n in 'GD': atomic_torch_save({'model': {'w': torch.ones(1)}, 'iteration': 1}, run / f'{n}_1.pth')
    before = _digest(run)                               # a stand-in previous pair (the resume skips it, warning)
    real = T.atomic_torch_save
    def full(obj, path, _before_replace=None):
        if Path(path).name.startswith('D_'): return real({'partial': 1}, path)      # D fits, G does not
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(T, 'atomic_torch_save', full)
    tr = Trainer(_hps(corpus), adversarial=False, log=lambda *a: None)
    tr.step = 2
    with pytest.raises(TrainError, match='no space left on device') as e:
        tr.save(run)
    assert str(run) in str(e.value) and 'previous checkpoint (step 1) is intact' in str(e.value)
    assert _digest(run) == before                       # D_2 taken back, the previous pair untouched
    # PyTorch's own report of a full disk is a RuntimeError ('enforce fail ... file write failed')
    def enforce(obj, path, _before_replace=None): raise RuntimeError('[enforce fail at inline_container.cc:603] . '
                                                                      'PytorchStreamWriter failed writing file')
    monkeypatch.setattr(T, 'atomic_torch_save', enforce)
    monkeypatch.setattr(T.shutil, 'disk_usage', lambda p: type('U', (), {'free': 1024})())
    with pytest.raises(TrainError, match='no space left'): tr.save(run)
    # through the command line: one line, status 1, the run folder named, nothing else changed
    monkeypatch.setattr(T, 'atomic_torch_save', full)
    cfg = _cfg(corpus, tmp_path)
    (run / 'config.json').write_text(json.dumps(json.loads(Path(cfg).read_text()), indent=2) + '\n')
    before = _digest(run)
    with pytest.warns(UserWarning, match='cannot resume from G_1.pth'):
        rc = train_main(['-c', cfg, '-m', str(run), '--max-steps', '2', '--no-adversarial', '--no-progress'])
    assert rc == 1
    line = _one_error_line(capsys.readouterr().err)
    assert 'no space left on device' in line and str(run) in line
    pth = lambda d: {k: v for k, v in d.items() if k.endswith('.pth')}       # logs and config may be new
    assert pth(_digest(run)) == pth(before) and not list(run.glob('.*.tmp'))


@pytest.fixture
def read_only(monkeypatch):
    "Make a folder read-only; as root (where permissions do not bind) refuse file creation in it instead."
    made = []
    def make(d):
        d = Path(d); os.chmod(d, 0o555); made.append(d)
        if os.access(d, os.W_OK):
            def deny(where):
                if Path(where).resolve().parent == d.resolve():
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(where))
            real_replace, real_write, real_mkstemp = os.replace, Path.write_text, tempfile.mkstemp
            monkeypatch.setattr(os, 'replace', lambda a, b: (deny(b), real_replace(a, b))[1])
            monkeypatch.setattr(Path, 'write_text', lambda self, *a, **k: (deny(self), real_write(self, *a, **k))[1])
            monkeypatch.setattr(tempfile, 'mkstemp', lambda *a, dir=None, **k: (
                deny(Path(dir) / 'x') if dir else None, real_mkstemp(*a, dir=dir, **k))[1])
        return d
    yield make
    for d in made: os.chmod(d, 0o755)


def test_read_only_run_folder_is_one_error_line(corpus, tmp_path, read_only, capsys):
    cfg = _cfg(corpus, tmp_path)
    run = tmp_path / 'run'; run.mkdir()
    (run / 'notes.txt').write_text('mine')
    before = _digest(run)
    read_only(run)
    assert train_main(['-c', cfg, '-m', str(run), '--max-steps', '1', '--no-progress']) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f'cannot write to the run folder {run}' in line and 'Permission denied' in line
    os.chmod(run, 0o755)
    assert _digest(run) == before


def test_python_m_vits_nb_train_reports_an_os_error_in_one_line(corpus, tmp_path):
    (tmp_path / 'afile').write_text('not a folder')
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    p = subprocess.run([sys.executable, '-m', 'vits_nb.train', '-c', _cfg(corpus, tmp_path),
                        '-m', str(tmp_path / 'afile' / 'run'), '--max-steps', '1', '--no-progress'],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    line = _one_error_line(p.stderr)
    assert f"cannot write to the run folder {tmp_path / 'afile' / 'run'}" in line
    assert (tmp_path / 'afile').read_text() == 'not a folder'
    p = subprocess.run([sys.executable, '-m', 'vits_nb.train', '-c', 'c.json', '-m', 'r', '--max-steps', '-1'],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and 'expected a step count >= 0' in p.stderr and 'Traceback' not in p.stderr


def test_max_steps_zero_writes_nothing(corpus, tmp_path, capsys):
    cfg = _cfg(corpus, tmp_path)
    assert train_main(['-c', cfg, '-m', str(tmp_path / 'new'), '--max-steps', '0', '--no-progress']) == 0
    assert 'nothing written' in capsys.readouterr().out and not (tmp_path / 'new').exists()
    run = tmp_path / 'run'                                  # an existing run: untouched
    train(cfg, run, max_steps=1, adversarial=False, eval_interval=10**9, **QUIET)
    before = _digest(run)
    assert train_main(['-c', cfg, '-m', str(run), '--max-steps', '0', '--no-progress']) == 0
    assert _digest(run) == before
    with pytest.raises(ValueError, match='max_steps must be an integer >= 0'): train(cfg, run, max_steps=-1)
    bad = json.loads(Path(cfg).read_text()); bad['train']['eval_interval'] = 0
    Path(cfg).write_text(json.dumps(bad))
    assert train_main(['-c', cfg, '-m', str(run), '--max-steps', '2', '--no-progress']) == 1
    assert 'eval_interval' in _one_error_line(capsys.readouterr().err) and _digest(run) == before


# ---------------------------------------------------------------- exact resume

def test_rng_state_round_trip_is_weights_only(tmp_path):
    s = rng_state()
    atomic_torch_save({'rng': s}, tmp_path / 'r.pt')
    a = (torch.randn(4), np.random.standard_normal(3).tolist(), [__import__('random').random() for _ in range(2)])
    set_rng_state(torch.load(tmp_path / 'r.pt', weights_only=True)['rng'])
    b = (torch.randn(4), np.random.standard_normal(3).tolist(), [__import__('random').random() for _ in range(2)])
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_kill_and_resume_gives_the_same_losses_bit_for_bit(corpus, tmp_path):
    "6 steps in one go vs 3 (mid-epoch: 2 batches per epoch) and a resume to 6: the same losses, the same weights."
    hps = _hps(corpus)
    kw = dict(adversarial=False, eval_interval=10**9, keep=0, **QUIET)
    keys = ('loss_g', 'loss_mel', 'loss_kl', 'loss_dur', 'grad_norm_g')
    whole = train(hps, tmp_path / 'whole', max_steps=6, **kw)
    first = train(hps, tmp_path / 'split', max_steps=3, **kw)
    rest = train(hps, tmp_path / 'split', max_steps=6, **kw)
    assert rest['resumed_from'].endswith('G_3.pth') and (whole['epoch'], rest['epoch']) == (3, 3)
    a = [[h[k] for k in keys] for h in whole['history']]
    b = [[h[k] for k in keys] for h in first['history'] + rest['history']]
    assert len(a) == len(b) == 6 and a == b                  # float equality: bit for bit
    for x, y in zip(whole['trainer'].g.state_dict().values(), rest['trainer'].g.state_dict().values()):
        assert torch.equal(x, y)
    ck = torch.load(tmp_path / 'split' / 'G_3.pth', weights_only=True)
    assert {'model', 'iteration', 'optimizer', 'learning_rate', 'rng'} <= set(ck)


# ---------------------------------------------------------------- arguments and configs the trainer refuses

def test_device_cuda_without_cuda_is_one_error_line(corpus, tmp_path, capsys):
    if torch.cuda.is_available(): pytest.skip('this machine has CUDA')
    cfg, run = _cfg(corpus, tmp_path), tmp_path / 'run'
    assert train_main(['-c', cfg, '-m', str(run), '--device', 'cuda', '--max-steps', '1']) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert '--device cuda: CUDA is not available' in line and 'use --device cpu' in line
    assert train_main(['-c', cfg, '-m', str(run), '--device', 'gpu0', '--max-steps', '1']) == 1
    assert "--device 'gpu0' is not a device" in _one_error_line(capsys.readouterr().err)
    assert not run.exists()                                  # refused before anything was written


@pytest.mark.parametrize('edit, says', [
    (lambda c: c['train'].update(batch_size='2'), "train.batch_size must be an integer >= 1, got '2' (str)"),
    (lambda c: c['train'].update(eval_interval=0), 'train.eval_interval must be an integer >= 1, got 0 (int)'),
    (lambda c: c.pop('model'), 'section "model" is missing'),
    (lambda c: c['train'].pop('learning_rate'), 'train.learning_rate is missing (expected a number > 0)'),
    (lambda c: c['data'].update(training_files=None), 'data.training_files is missing')])
def test_config_errors_name_the_key_and_expected_type(corpus, tmp_path, capsys, edit, says):
    cfg = json.loads(Path(_cfg(corpus, tmp_path)).read_text()); edit(cfg)
    (tmp_path / 'c.json').write_text(json.dumps(cfg))
    run = tmp_path / 'run'; run.mkdir(); (run / 'notes.txt').write_text('mine'); before = _digest(run)
    assert train_main(['-c', str(tmp_path / 'c.json'), '-m', str(run), '--max-steps', '1']) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert says in line and str(tmp_path / 'c.json') in line, line
    assert _digest(run) == before and [p.name for p in run.iterdir()] == ['notes.txt']


def test_missing_init_from_checkpoint_is_named_as_a_checkpoint(corpus, tmp_path, capsys):
    cfg, run = _cfg(corpus, tmp_path), tmp_path / 'run'
    missing = tmp_path / 'no_such_folder' / 'G_100.pth'
    assert train_main(['-c', cfg, '-m', str(run), '--init-from', str(missing), '--max-steps', '1']) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f'checkpoint not found: {missing}' in line and 'does not exist' in line and 'config' not in line
    assert train_main(['-c', cfg, '-m', str(run), '--init-from', str(tmp_path), '--max-steps', '1']) == 1
    assert 'is a folder' in _one_error_line(capsys.readouterr().err)
    assert not run.exists()


def test_init_from_a_piper_voice_goes_through_vits_nb_finetune(corpus, tmp_path, monkeypatch, capsys):
    "The `.onnx` hook: the overrides before the model is built, the note logged once, the weights from the voice."
    import types
    voice = tmp_path / 'voice.onnx'; voice.write_bytes(b'onnx')
    monkeypatch.setitem(sys.modules, 'vits_nb.finetune', None)              # not installed
    with pytest.raises(TrainError, match=r'needs vits_nb\.finetune \(chapter 13a_finetune\)'):
        train(_hps(corpus), tmp_path / 'run', max_steps=0, init_from=voice, **QUIET)
    calls = []
    def voice_overrides(hps, path):
        calls.append(('overrides', Path(path).name)); hps.model.hidden_channels = 24    # a shape of the voice
        return hps, 'the voice sets hidden_channels 24'
    def init_from_voice(net_g, path):
        calls.append(('init', Path(path).name, net_g.enc_p.emb.weight.shape[1])); return path
    fake = types.ModuleType('vits_nb.finetune')
    fake.voice_overrides, fake.init_from_voice = voice_overrides, init_from_voice
    monkeypatch.setitem(sys.modules, 'vits_nb.finetune', fake)
    import vits_nb; monkeypatch.setattr(vits_nb, 'finetune', fake, raising=False)   # if already imported
    s = train(_hps(corpus), tmp_path / 'run', max_steps=0, init_from=voice, **QUIET)
    assert calls == [('overrides', 'voice.onnx'), ('init', 'voice.onnx', 24)]
    assert capsys.readouterr().out.count('the voice sets hidden_channels 24') == 1
    assert s['trainer'].hps.model.hidden_channels == 24


def test_run_config_resolves_from_any_working_directory(corpus, tmp_path, monkeypatch):
    "Filelists relative to the config; the run's copy holds them relative to the run; held-out from elsewhere."
    cfg_dir = tmp_path / 'cfgs'; cfg_dir.mkdir()
    c = _hps(corpus).to_dict()
    c['data']['training_files'] = os.path.relpath(corpus[0], cfg_dir)
    c['data']['validation_files'] = os.path.relpath(corpus[1], cfg_dir)
    (cfg_dir / 'c.json').write_text(json.dumps(c))
    elsewhere = tmp_path / 'elsewhere'; elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = tmp_path / 'runs' / 'r'
    train(str(cfg_dir / 'c.json'), run, max_steps=1, adversarial=False, **QUIET)
    copy = json.loads((run / 'config.json').read_text())['data']
    assert copy['validation_files'] == os.path.relpath(corpus[1], run)           # relative to the run folder
    (tmp_path / 'another').mkdir(); monkeypatch.chdir(tmp_path / 'another')
    res = T.synthesize_heldout(run, n=1)                       # config=None: the run's own config.json
    assert res['metrics']['step'] == 1 and len(res['wavs']) == 2 and Path(res['png']).is_file()
    s = train(str(run / 'config.json'), run, max_steps=2, adversarial=False, **QUIET)   # continue from it
    assert s['resumed_from'].endswith('G_1.pth') and s['step'] == 2
