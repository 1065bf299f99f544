"""The GPU proof script (issue 17) works before it meets a GPU: its CPU dry run and its fallbacks.

`benchmarks/gpu_proof.py --dry-run` runs every step on the CPU at tiny sizes and writes the json
the GPU call will write; the GPU machine lacks librosa and may lack numba or soundfile, so the
shims that replace them (Slaney mel filterbank, the MAS kernel as plain Python) and the installer
of carried wheels are checked against the real thing here."""
import importlib.util, json, math, os, subprocess, sys, zipfile
from pathlib import Path
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'benchmarks' / 'gpu_proof.py'


def _load():
    spec = importlib.util.spec_from_file_location('gpu_proof', SCRIPT)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m


gp = _load()


@pytest.fixture(scope='module')
def dry(tmp_path_factory):
    "One dry run (no carried assets or wheels, as in CI): its json and output folder."
    out = tmp_path_factory.mktemp('gpu_out')
    none = tmp_path_factory.mktemp('no_assets') / 'absent'
    env = {**os.environ, 'OUT': str(out), 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
    p = subprocess.run([sys.executable, str(SCRIPT), '--dry-run', '--assets', str(none),
                        '--wheels', str(none)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads((out / 'gpu.json').read_text()), out


def test_dry_run_schema_and_every_step(dry):
    d, out = dry
    assert {'schema', 'mode', 'budget_s', 'started_utc', 'tolerances', 'env', 'steps', 'files',
            'finished', 'all_ok', 'elapsed_s'} <= set(d)
    assert d['schema'] == gp.SCHEMA and d['mode'] == 'dry-run' and d['finished'] and d['all_ok']
    assert list(d['steps']) == list(gp.STEPS)
    for name, s in d['steps'].items():
        assert s['status'] == 'ok', (name, s)
        assert s['seconds'] >= 0
    for k in ('python', 'torch', 'numpy', 'device', 'numba', 'librosa', 'shims'):
        assert k in d['env']
    assert d['env']['device'] == 'cpu' and d['env']['shims'] == []
    # the CUDA-only comparisons say so
    for name in ('mas_correctness', 'train_step_correctness', 'infer_correctness', 'mas_speed',
                 'train_speed', 'infer_rtf'):
        assert 'skipped: no CUDA' in d['steps'][name]['note'], name


def test_dry_run_mas_equal_on_cpu_paths(dry):
    s = dry[0]['steps']['mas_correctness']
    assert s['all_equal'] and s['cpu_torch_vs_numba_equal']
    assert s['n_cases'] == 12 and all(c['equal'] and c['cells_differing'] == 0 for c in s['cases'])
    assert {c['ties'] for c in s['cases']} == {False, True}
    assert {c['dtype'] for c in s['cases']} == {'float32', 'float64'}


def test_dry_run_training_losses_finite(dry):
    s = dry[0]['steps']['train_step_correctness']
    assert s['losses_finite']
    for prec in ('fp32', 'bf16'):
        assert all(math.isfinite(s[prec][k]) for k in gp.LOSSES), s[prec]
    assert s['fp32']['amp_dtype'] == 'None' and s['bf16']['amp_dtype'] == 'bfloat16'
    assert set(s['bf16_vs_fp32']) == set(gp.LOSSES)
    speed = dry[0]['steps']['train_speed']['rows']
    assert speed[0]['status'] == 'ok' and speed[0]['losses_finite'] and speed[0]['steps_per_s'] > 0
    assert speed[1] == {'batch': 2, 'precision': 'bf16', 'symbols': 10, 'frames': 40,
                        'status': 'skipped: no CUDA'}


def test_dry_run_infer_and_rtf(dry):
    steps = dry[0]['steps']
    inf = steps['infer_correctness']
    assert inf['ljs_fixed_durations']['samples_cpu'] == 20 * 3 * 256   # 20 ids x 3 frames x hop
    rtf = steps['infer_rtf']
    assert rtf['ljs_base']['rtf'] > 0 and rtf['ljs_base']['audio_s'] == pytest.approx(15360 / 22050)
    if 'rows' in rtf['shipped_voice']:                  # the shipped voice is installed by set-up
        assert rtf['shipped_voice']['rtf'] > 0 and 'shipped_voice' in inf


def test_dry_run_toy_run_outputs(dry):
    d, out = dry
    s = d['steps']['toy_run']
    assert s['steps'] == 2 and s['losses_finite'] and s['losses'][-1]['step'] == 2
    assert all(math.isfinite(v) for row in s['losses'] for v in row.values())
    files = set(s['files'])
    assert {'toy_G_fp16.pth', 'tb/train/events.out.tfevents.gpu_proof',
            'tb/eval/events.out.tfevents.gpu_proof', 'heldout_1.wav', 'heldout_2.wav'} <= files
    assert set(d['files']) == files | {'gpu.json'} and len(d['files']) <= 7   # + the log: 8 at most
    assert all((out / f).stat().st_size <= 16 * 2**20 for f in d['files'])
    ck = torch.load(out / 'toy_G_fp16.pth', map_location='cpu', weights_only=True)
    assert ck['step'] == 2 and all(v.dtype == torch.float16 for v in ck['model'].values()
                                   if v.is_floating_point())
    from vits_nb.models import model_from_config
    from vits_nb.data import HParams
    m = model_from_config(HParams(**json.loads(ck['config_json'])))
    m.load_state_dict(ck['model'])                      # the generator loads back, strictly


@pytest.mark.parametrize('args', [(22050, 1024, 80, 0.0, None), (16000, 512, 40, 50.0, 7000.0)])
def test_slaney_mel_equals_librosa(args):
    librosa = pytest.importorskip('librosa')
    sr, n_fft, n_mels, fmin, fmax = args
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    got = gp.slaney_mel(sr, n_fft, n_mels, fmin, fmax)
    assert got.dtype == ref.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)
    stub = gp.librosa_stub()
    np.testing.assert_array_equal(stub.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
                                                   fmax=fmax), got)
    with pytest.raises(RuntimeError, match='librosa is not installed'): stub.resample(None)


STUB_RUN = r'''
import json, sys
sys.modules['numba'] = None                      # as on a machine without numba
sys.modules['librosa'] = None
import importlib.util
spec = importlib.util.spec_from_file_location('gpu_proof', sys.argv[1])
gp = importlib.util.module_from_spec(spec); spec.loader.exec_module(gp)
info = gp.prepare_environment(sys.argv[2], log=lambda *a: None)
import torch
from vits_nb.mas import maximum_path_numba
from vits_nb.audio import mel_basis
nc, mask = gp.random_mas_batch(3, 30, 12, seed=4, dtype=torch.float32)
tie, tmask = gp.random_mas_batch(2, 20, 9, seed=5, dtype=torch.float64, ties=True)
print(json.dumps({'shims': info['shims'], 'stub': sys.modules['numba'].__vits_nb_stub__,
                  'path': maximum_path_numba(nc, mask).tolist(),
                  'ties': maximum_path_numba(tie, tmask).tolist(),
                  'mel': mel_basis(1024, 80, 22050, 0.0, None).tolist()}))
'''


def test_shims_without_numba_and_librosa(tmp_path):
    "With numba and librosa absent, vits_nb still imports; the plain-Python kernel equals numba's."
    p = subprocess.run([sys.executable, '-c', STUB_RUN, str(SCRIPT), str(tmp_path / 'none')],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r['stub'] and any(s.startswith('numba: pure-Python stub') for s in r['shims'])
    assert 'librosa: Slaney mel filterbank only' in r['shims']
    from vits_nb.mas import maximum_path_numba
    nc, mask = gp.random_mas_batch(3, 30, 12, seed=4, dtype=torch.float32)
    tie, tmask = gp.random_mas_batch(2, 20, 9, seed=5, dtype=torch.float64, ties=True)
    assert torch.equal(torch.tensor(r['path']), maximum_path_numba(nc, mask))
    assert torch.equal(torch.tensor(r['ties'], dtype=torch.float64), maximum_path_numba(tie, tmask))
    librosa = pytest.importorskip('librosa')
    ref = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0.0, fmax=None)
    np.testing.assert_array_equal(np.array(r['mel'], dtype=np.float32), ref)


def _fake_wheel(folder, name='vits_nb_fakemod', version='1.0'):
    "A minimal pure-Python wheel holding module `name`."
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f'{name}-{version}-py3-none-any.whl'
    info = f'{name}-{version}.dist-info'
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr(f'{name}.py', 'VALUE = 42\n')
        z.writestr(f'{info}/METADATA', f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n')
        z.writestr(f'{info}/WHEEL', 'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n'
                                    'Tag: py3-none-any\n')
        z.writestr(f'{info}/RECORD', '')
    return path


@pytest.mark.parametrize('pip_works', [True, False])
def test_install_missing_only_what_is_missing(tmp_path, monkeypatch, pip_works):
    wheels = tmp_path / 'wheels'
    _fake_wheel(wheels)
    _fake_wheel(wheels, 'numpy', '0.0')                 # numpy imports: its wheel must not be used
    if not pip_works:                                   # no pip on the machine: wheels are unzipped
        def fail(*a, **k): raise OSError('no pip')
        monkeypatch.setattr(gp.subprocess, 'run', fail)
    target = tmp_path / 'site'
    monkeypatch.setattr(sys, 'path', list(sys.path))
    info = gp.install_missing(wheels, target, log=lambda *a: None,
                              needed={'vits_nb_fakemod': 'vits_nb_fakemod', 'numpy': 'numpy'})
    assert info['missing'] == ['vits_nb_fakemod']
    assert info['installed'] == ['vits_nb_fakemod-1.0-py3-none-any.whl']
    assert info['how'] == ('pip' if pip_works else 'unzip')
    assert (target / 'vits_nb_fakemod.py').is_file() and str(target) in sys.path
    assert not (target / 'numpy').exists()
    nothing = gp.install_missing(wheels, target, log=lambda *a: None, needed={'numpy': 'numpy'})
    assert nothing == {'missing': [], 'installed': []}


def test_bad_step_name_is_refused():
    with pytest.raises(SystemExit):
        gp.parse(['--steps', 'mas_correctness,warp_drive'])
    assert gp.parse(['--steps', 'toy_run']).steps == 'toy_run'
