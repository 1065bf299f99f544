"""Bad input to `vits-nb synth` / `export-onnx` / `info` (issue 15), through the console script's `main()` with
its own stdin, stdout and stderr: in this process (a child costs seconds of torch import per case), and in a
child process as a user runs it where the operating system takes part (a closed pipe) or to prove the two agree.

Every case: status != 0 (or 0 where the command did its job), stderr is one line that names the problem, no
traceback, and the files that were there before are byte-identical after, with nothing left behind."""
import hashlib, io, json, os, stat, subprocess, sys, threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vits_nb.models import model_from_config, save_checkpoint, tiny_config

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, '-c', 'import sys; from vits_nb.cli import main; sys.exit(main(sys.argv[1:]))']
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}


def child(*argv, stdin=b'', timeout=300, cwd=None):
    "Run the console script in a child process."
    return subprocess.run(CLI + [str(a) for a in argv], input=stdin, capture_output=True, timeout=timeout,
                          env=ENV, cwd=cwd)


def run(*argv, stdin=b'', child_process=False, **kw):
    """`main(argv)` with its own byte streams: a CompletedProcess-like result. An exception that escapes
    `main` is a bug: its traceback lands on stderr (so `one_line_error` fails), status 1."""
    import contextlib, traceback
    from vits_nb.cli import main
    if child_process: return child(*argv, stdin=stdin, **kw)
    streams = [io.TextIOWrapper(io.BytesIO(b), encoding='utf-8', write_through=True) for b in (stdin, b'', b'')]
    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = streams
    try:
        try: rc = main([str(a) for a in argv])
        except SystemExit as e: rc = e.code if isinstance(e.code, int) else 1
        except BaseException: traceback.print_exc(); rc = 1
        for f in streams[1:]: f.flush()
    finally: sys.stdin, sys.stdout, sys.stderr = old
    return subprocess.CompletedProcess(argv, rc, streams[1].buffer.getvalue(), streams[2].buffer.getvalue())


def one_line_error(p, *says):
    "rc != 0, stderr is one line (warnings aside) naming `says`, no traceback."
    err = p.stderr.decode('utf-8', 'replace')
    lines = [l for l in err.splitlines() if l.strip() and 'Warning' not in l and not l.startswith('  ')]
    assert p.returncode != 0, (p.returncode, err)
    assert 'Traceback' not in err, err
    assert len(lines) == 1, err
    for s in says: assert s in lines[0], (s, lines[0])
    return lines[0]


def snapshot(folder):
    "{relative path: sha256} of every file below `folder` (FIFOs by type only)."
    out = {}
    for p in sorted(Path(folder).rglob('*')):
        if p.is_fifo(): out[str(p.relative_to(folder))] = 'fifo'
        elif p.is_file(): out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    "A tiny random generator checkpoint with its config.json beside it, and one with NaN weights."
    d = tmp_path_factory.mktemp('ckpt')
    torch.manual_seed(0)
    hps = tiny_config()
    save_checkpoint(model_from_config(hps), None, 2e-4, 1, d / 'G_1.pth')
    (d / 'config.json').write_text(json.dumps(hps.to_dict()))
    bad = d / 'nan'; bad.mkdir()
    m = model_from_config(hps)
    with torch.no_grad(): m.dec.conv_post.weight_v.fill_(float('nan')) if hasattr(m.dec.conv_post, 'weight_v') \
        else m.dec.conv_post.weight.fill_(float('nan'))
    save_checkpoint(m, None, 2e-4, 1, bad / 'G_1.pth')
    (bad / 'config.json').write_text(json.dumps(hps.to_dict()))
    return d


@pytest.fixture
def out(tmp_path):
    "An output folder holding one existing WAV the commands must not harm."
    sf.write(tmp_path / 'keep.wav', np.zeros(100, np.float32), 22050)
    return tmp_path


def synth(ckpt, *argv, **kw):
    return run('synth', '-k', ckpt / 'G_1.pth', '--noise-scale', '0', *argv, **kw)


@pytest.mark.parametrize('flag, value, says', [
    ('--length-scale', '0', 'length_scale must be in [0.1, 10], got 0'),
    ('--length-scale', '-1', 'length_scale must be in [0.1, 10], got -1'),
    ('--length-scale', '1e6', 'length_scale must be in [0.1, 10]'),
    ('--length-scale', 'inf', 'length_scale must be finite'),
    ('--noise-scale', 'nan', 'noise_scale must be finite'),
    ('--noise-scale-w', 'nan', 'noise_scale_w must be finite'),
    ('--noise-scale-w', '-0.5', 'noise_scale_w must be in [0, 3]'),
])
def test_bad_scales_are_named_and_write_nothing(ckpt, out, flag, value, says):
    before = snapshot(out)
    p = synth(ckpt, '-t', 'Hello there.', flag, value, '-o', out / 'x.wav')
    one_line_error(p, says)
    assert snapshot(out) == before


def test_output_a_folder_or_below_a_file(ckpt, out):
    before = snapshot(out)
    one_line_error(synth(ckpt, '-t', 'Hello.', '-o', out), 'is a folder, not a file')
    one_line_error(synth(ckpt, '-t', 'Hello.', '-o', out / 'keep.wav' / 'x.wav'), 'keep.wav')
    assert snapshot(out) == before
    p = synth(ckpt, '-t', 'Hello.', '-o', out / 'new' / 'x.wav')        # a missing folder is made
    assert p.returncode == 0 and sf.read(out / 'new' / 'x.wav')[1] == 22050, p.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_output_into_a_read_only_folder(ckpt, out):
    ro = out / 'ro'; ro.mkdir(); (ro / 'old.wav').write_bytes(b'old')
    ro.chmod(0o500)
    try:
        one_line_error(synth(ckpt, '-t', 'Hello.', '-o', ro / 'old.wav'), 'ro')
        assert (ro / 'old.wav').read_bytes() == b'old' and sorted(os.listdir(ro)) == ['old.wav']
    finally: ro.chmod(0o700)


def test_a_fifo_is_written_in_place(ckpt, out):
    fifo = out / 'pipe'; os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, 'rb').read())); reader.start()
    p = synth(ckpt, '-t', 'Hello there.', '-o', fifo)
    reader.join(60)
    assert p.returncode == 0, p.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)              # still a FIFO: never renamed over
    audio, sr = sf.read(io.BytesIO(got[0]))
    assert sr == 22050 and len(audio) > 0
    assert sorted(os.listdir(out)) == ['keep.wav', 'pipe']    # no temporary file beside it


def test_dash_output_is_standard_output(ckpt, out):
    p = synth(ckpt, '-t', 'Hello there.', '--noise-scale-w', '0', '-o', '-')
    assert p.returncode == 0, p.stderr
    audio, sr = sf.read(io.BytesIO(p.stdout))
    q = synth(ckpt, '-t', 'Hello there.', '--noise-scale-w', '0', '-o', out / 'a.wav')
    assert q.returncode == 0 and sr == 22050
    np.testing.assert_array_equal(audio, sf.read(out / 'a.wav')[0])   # the same WAV, noise off


def test_stream_into_a_closed_pipe_ends_quietly(ckpt):
    "`vits-nb synth --stream | head -c 100`: the reader leaves early; no BrokenPipeError traceback."
    text = ' '.join(['This sentence is long enough to need several chunks of audio.'] * 20)
    head = subprocess.Popen(['head', '-c', '100'], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    p = subprocess.run(CLI + ['synth', '-k', str(ckpt / 'G_1.pth'), '-t', text, '--stream'], stdout=head.stdin,
                       stderr=subprocess.PIPE, env=ENV, timeout=300)
    head.stdin.close(); head.wait(30)
    # status 1 and one line, the recipe of Python's signal docs (nbs/15_cli.ipynb, "Bad input ends as one
    # line"): not 0, since the text was not all spoken; not a silent SIGPIPE death (141) as `cat`'s
    one_line_error(p, 'standard output was closed early (broken pipe)')
    assert p.returncode == 1 and 'BrokenPipe' not in p.stderr.decode()


def test_nan_weights_are_refused_before_writing(ckpt, out):
    before = snapshot(out)
    p = run('synth', '-k', ckpt / 'nan' / 'G_1.pth', '-t', 'Hello there.', '-o', out / 'keep.wav')
    one_line_error(p, 'non-finite audio', 'nothing written')
    assert snapshot(out) == before                          # the old keep.wav is intact


def test_standard_input_must_be_utf8(ckpt, out):
    p = synth(ckpt, '-o', out / 'x.wav', stdin='Café naïve.'.encode('latin-1'), child_process=True)
    one_line_error(p, 'standard input is not UTF-8')
    assert not (out / 'x.wav').exists()


@pytest.mark.parametrize('text', ['🙂🙂🙂', '   '])
def test_unspeakable_text_is_one_message_about_the_input(ckpt, out, text):
    line = one_line_error(synth(ckpt, '-t', text, '-o', out / 'x.wav'))
    assert 'texts[0]' not in line and ('speak' in line or 'empty' in line), line
    assert not (out / 'x.wav').exists()


def test_stream_options_and_devices(ckpt, out):
    one_line_error(synth(ckpt, '-t', 'Hi.', '--stream', '--chunk-frames', '0'), '--chunk-frames must be at least 1')
    if not torch.cuda.is_available():
        one_line_error(synth(ckpt, '-t', 'Hi.', '--device', 'cuda', '-o', out / 'x.wav'), 'CUDA is not available')
    one_line_error(synth(ckpt, '-t', 'Hi.', '--device', 'nonsense', '-o', out / 'x.wav'), 'nonsense')
    assert not (out / 'x.wav').exists()


def test_missing_checkpoint_is_named_as_a_checkpoint(out):
    missing = out / 'no_such_run' / 'G_1.pth'
    line = one_line_error(run('synth', '-k', missing, '-t', 'Hi.', '-o', out / 'x.wav', child_process=True),
                          'checkpoint not found')
    assert 'config' not in line.split('checkpoint not found')[0]


def test_bad_config_is_named(ckpt, out):
    c = json.loads((ckpt / 'config.json').read_text())
    del c['model']; (out / 'no_model.json').write_text(json.dumps(c))
    one_line_error(synth(ckpt, '-c', out / 'no_model.json', '-t', 'Hi.', '-o', out / 'x.wav'), 'model')
    (out / 'broken.json').write_text('{"data": ')
    one_line_error(synth(ckpt, '-c', out / 'broken.json', '-t', 'Hi.', '-o', out / 'x.wav'), 'broken.json')
    assert not (out / 'x.wav').exists()


def test_export_onto_a_folder_or_missing_checkpoint(ckpt, out):
    before = snapshot(out)
    one_line_error(run('export-onnx', '-k', ckpt / 'G_1.pth', '-o', out), 'folder')
    one_line_error(run('export-onnx', '-k', out / 'missing' / 'G_1.pth', '-o', out / 'v.onnx'), 'not found')
    one_line_error(run('info', '-k', out / 'keep.wav'), 'cannot read checkpoint')
    assert snapshot(out) == before


def test_export_target_refused_before_the_export_runs(ckpt, out):
    "A path below a file, or a --piper voice whose .json would land on a folder: named before any work."
    before = snapshot(out)
    one_line_error(run('export-onnx', '-k', ckpt / 'G_1.pth', '-o', out / 'keep.wav' / 'v.onnx'),
                   'keep.wav is a file, not a folder')
    (out / 'v.onnx.json').mkdir()
    one_line_error(run('export-onnx', '-k', ckpt / 'G_1.pth', '--piper', '-o', out / 'v.onnx'),
                   'v.onnx.json is a folder, not a file')
    (out / 'v.onnx.json').rmdir()
    assert snapshot(out) == before


def test_onnx_path_checks_its_output_too(out):
    "`--onnx` runs without torch, with its own copy of the atomic writer: the same checks hold there."
    from vits_nb.piper import shipped_voice
    voice = ['synth', '--onnx', shipped_voice(), '--threads', '1', '--noise-scale', '0', '-t', 'Hi.']
    before = snapshot(out)
    one_line_error(run(*voice, '-o', out / 'keep.wav' / 'x.wav'), 'keep.wav is a file, not a folder')
    one_line_error(run(*voice, '-o', out), 'is a folder, not a file')
    assert snapshot(out) == before
    fifo = out / 'pipe'; os.mkfifo(fifo); got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, 'rb').read())); reader.start()
    p = run(*voice, '-o', fifo); reader.join(60)
    assert p.returncode == 0 and stat.S_ISFIFO(os.lstat(fifo).st_mode), p.stderr
    assert sf.read(io.BytesIO(got[0]))[1] == 22050 and sorted(os.listdir(out)) == ['keep.wav', 'pipe']


@pytest.mark.parametrize('onnx', [False, True])
def test_written_files_get_ordinary_permissions(ckpt, out, onnx):
    "The temporary file is made 0600 by mkstemp: a replaced WAV keeps its own mode, a new one 0666 & ~umask."
    from vits_nb.piper import shipped_voice
    how = ['--onnx', shipped_voice(), '--threads', '1'] if onnx else ['-k', ckpt / 'G_1.pth']
    (out / 'keep.wav').chmod(0o640)
    for name in ('keep.wav', 'new.wav'):
        p = run('synth', *how, '--noise-scale', '0', '-t', 'Hi.', '-o', out / name)
        assert p.returncode == 0, p.stderr
    mask = os.umask(0o022); os.umask(mask)              # the child inherits this process's umask
    assert stat.S_IMODE((out / 'keep.wav').stat().st_mode) == 0o640
    assert stat.S_IMODE((out / 'new.wav').stat().st_mode) == 0o666 & ~mask


def test_low_memory_is_opt_in_and_changes_no_sample(ckpt, out, monkeypatch):
    "--low-memory bounds the heap (a process-wide allocator setting: a child); without it nothing calls bound_heap."
    import soundfile as sf
    import vits_nb.onnx_synth as onnx_synth
    monkeypatch.setattr(onnx_synth, 'bound_heap', lambda *a, **k: pytest.fail('bound_heap without --low-memory'))
    p = synth(ckpt, '-t', 'Hello there.', '--seed', '0', '-o', out / 'plain.wav')
    assert p.returncode == 0, p.stderr
    p = synth(ckpt, '-t', 'Hello there.', '--seed', '0', '--low-memory', '-o', out / 'low.wav', child_process=True)
    assert p.returncode == 0, p.stderr
    a, b = sf.read(out / 'plain.wav', dtype='int16')[0], sf.read(out / 'low.wav', dtype='int16')[0]
    assert a.size > 0 and np.array_equal(a, b)
