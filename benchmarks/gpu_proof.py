"""GPU proof (issue 17): vits_nb trains and infers on CUDA, with measured figures, in one call.

One prepared script for one call of at most 8 minutes on the GPU machine (an H200 whose python3 has
torch, onnxruntime and numpy; no package registry). Steps, in order; each writes its figures to
`$OUT/gpu.json` as it finishes, so a run stopped by its time limit still returns what finished:

1. correctness: `maximum_path` on CUDA (its torch backend) equals the numba kernel bit for bit on
   random padded batches; one G+D step of ljs_base in fp32 and under bf16 autocast (losses finite,
   fp32 vs bf16 close); the model's `infer` on CUDA equals the CPU output with the noise off;
2. speed and memory: MAS on CUDA vs the numba kernel; G+D steps/s and peak GPU memory at ljs_base
   size (batch 16 and 64, fp32 and bf16, synthetic batch, official segment 8192, cudnn.benchmark
   on); inference real-time factor of the shipped voice and of ljs_base;
3. a real run in the remaining minutes: toy_small from scratch on carried toy-corpus audio; the
   fp16 generator, the TensorBoard events and 3 held-out WAVs come back in `$OUT`.

`--dry-run` runs every step on the CPU at tiny sizes (tiny config, 2 training steps, small MAS
shapes, a synthetic corpus) in about a minute and writes the same json; CUDA-only comparisons are
recorded as `skipped: no CUDA`. `--budget-s` bounds the whole run (default 450 s); each step
checks the time left. benchmarks/GPU.md says how to prepare and launch it.

    bash scripts/gpu_wheels.sh                              # here: wheels + assets, size check
    python3 benchmarks/gpu_proof.py --budget-s 420          # there (GPU.md: the exact `run` call)
    OUT=/tmp/gp .venv/bin/python benchmarks/gpu_proof.py --dry-run
"""
import argparse, importlib, importlib.util, json, math, os, platform, shutil, statistics
import subprocess, sys, tempfile, time, traceback, types, zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / '.cache' / 'gpu_wheels'
ASSETS = ROOT / '.cache' / 'gpu_assets'
SCHEMA = 1
STEPS = ('mas_correctness', 'train_step_correctness', 'infer_correctness',
         'mas_speed', 'train_speed', 'infer_rtf', 'toy_run')
# importable module -> wheel name: a carried wheel is installed only when its module is missing
NEEDED = {'soundfile': 'soundfile', '_cffi_backend': 'cffi', 'pycparser': 'pycparser',
          'tqdm': 'tqdm', 'tensorboard': 'tensorboard', 'google.protobuf': 'protobuf',
          'absl': 'absl-py'}     # SummaryWriter's imports: tensorboard, protobuf, absl (not grpc)
TOL_BF16_REL = 0.05        # each loss: |bf16 - fp32| <= 5% of |fp32| + 1e-3
TOL_INFER_SNR_DB = 50.     # CUDA vs CPU infer (noise off, TF32 off): SNR of the CPU output / diff
LOSSES = ('loss_g', 'loss_mel', 'loss_kl', 'loss_dur', 'loss_d', 'loss_gen', 'loss_fm')


# ---------------------------------------------------------------- environment: wheels and shims
def _have(mod):
    try: return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError): return False


def _norm(name): return name.lower().replace('_', '-')


def install_missing(wheel_dir, target, log=print, needed=None):
    "Install the carried wheels of the modules in `needed` that do not import; return what it did."
    needed = NEEDED if needed is None else needed
    missing = [w for m, w in needed.items() if not _have(m)]
    wheel_dir = Path(wheel_dir)
    info = {'missing': missing, 'installed': []}
    if not missing or not wheel_dir.is_dir(): return info
    want = {_norm(m) for m in missing}
    files = [p for p in sorted(wheel_dir.glob('*.whl')) if _norm(p.name.split('-')[0]) in want]
    if not files: return info
    target = Path(target); target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, '-m', 'pip', 'install', '-q', '--no-index', '--no-deps', '--no-compile',
           '--no-cache-dir', '--upgrade', '--target', str(target)] + [str(p) for p in files]
    how = 'pip'
    try: ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError): ok = False
    if not ok:                                # no pip there: a wheel is a zip of site-packages
        how = 'unzip'
        for p in files:
            with zipfile.ZipFile(p) as z: z.extractall(target)
    if str(target) not in sys.path: sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    log(f'installed from {wheel_dir} ({how}): ' + ', '.join(p.name for p in files))
    return {**info, 'installed': [p.name for p in files], 'how': how, 'target': str(target)}


def numba_stub():
    "A module that lets `vits_nb.mas` import without numba: `njit` leaves the kernel plain Python."
    m = types.ModuleType('numba')
    def njit(*a, **k):
        if len(a) == 1 and callable(a[0]) and not k: return a[0]
        return lambda f: f
    m.njit, m.jit, m.prange = njit, njit, range
    m.set_num_threads, m.get_num_threads = (lambda n: None), (lambda: 1)
    m.config = types.SimpleNamespace(NUMBA_NUM_THREADS=1)
    m.__version__, m.__vits_nb_stub__ = 'stub', True
    return m


def slaney_mel(sr, n_fft, n_mels=128, fmin=0.0, fmax=None):
    """Mel filterbank `[n_mels, n_fft//2+1]` (float32), Slaney's mel scale, area-normalised.

    The scale (Slaney's Auditory Toolbox, librosa's default): linear below 1 kHz at 200/3 Hz per
    mel, logarithmic above at a factor 6.4 per 27 mels. Filter i is the triangle over mel points
    i, i+1, i+2, scaled by 2 / (f[i+2] - f[i])."""
    import numpy as np
    fmax = sr / 2 if fmax is None else fmax
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    def hz_to_mel(f):
        return f / f_sp if f < min_log_hz else min_log_mel + math.log(f / min_log_hz) / logstep
    mels = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    hz = np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)),
                  f_sp * mels)
    fft_hz = np.linspace(0, sr / 2, 1 + n_fft // 2)
    fdiff, ramps = np.diff(hz), hz[:, None] - fft_hz[None, :]
    w = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        w[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    w *= (2.0 / (hz[2:n_mels + 2] - hz[:n_mels]))[:, None]
    return w


def librosa_stub():
    "A module with only `filters.mel` (what `vits_nb.audio.mel_basis` calls), for no librosa."
    m = types.ModuleType('librosa')
    def mel(*, sr, n_fft, n_mels=128, fmin=0.0, fmax=None, **k):
        return slaney_mel(sr, n_fft, n_mels, fmin, fmax)
    def resample(*a, **k):
        raise RuntimeError('librosa is not installed here: carry audio at the config sampling rate')
    m.filters = types.SimpleNamespace(mel=mel)
    m.resample, m.__version__, m.__vits_nb_stub__ = resample, 'stub', True
    return m


def prepare_environment(wheel_dir, log=print):
    "Install missing wheels, then shim numba/librosa if they still do not import."
    info = install_missing(wheel_dir, Path(tempfile.gettempdir()) / 'vits_nb_gpu_site', log)
    shims = []
    try:
        import numba
        assert numba.njit(lambda v: v + 1)(1) == 2    # it imports and it compiles
    except Exception as e:                            # ImportError, numba refusing this numpy, ...
        for k in [k for k in sys.modules if k == 'numba' or k.startswith('numba.')]:
            sys.modules.pop(k, None)
        sys.modules['numba'] = numba_stub()
        shims.append(f'numba: pure-Python stub ({type(e).__name__}: {str(e)[:120]})')
    if not _have('librosa'):
        sys.modules['librosa'] = librosa_stub(); shims.append('librosa: Slaney mel filterbank only')
    info['shims'] = shims
    return info


# ---------------------------------------------------------------- the record
def _jsonable(o):
    if hasattr(o, 'tolist'): return o.tolist()
    if hasattr(o, 'item'): return o.item()
    return str(o)


class Record:
    "The json in `$OUT/gpu.json`, rewritten atomically after every step."
    def __init__(self, out_dir, mode, budget_s, selected=STEPS):
        self.out = Path(out_dir); self.out.mkdir(parents=True, exist_ok=True)
        self.t0, self.budget_s, self.selected = time.time(), budget_s, set(selected)
        self.data = {'schema': SCHEMA, 'mode': mode, 'budget_s': budget_s,
                     'started_utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                     'tolerances': {'mas': 'bit for bit (torch.equal)',
                                    'bf16_vs_fp32_loss_rel': TOL_BF16_REL,
                                    'infer_cuda_vs_cpu_snr_db_min': TOL_INFER_SNR_DB},
                     'env': {}, 'steps': {}, 'files': [], 'finished': False}
        self.write()

    def left(self): return self.budget_s - (time.time() - self.t0)

    def write(self):
        self.data['elapsed_s'] = round(time.time() - self.t0, 2)
        tmp = self.out / '.gpu.json.tmp'
        tmp.write_text(json.dumps(self.data, indent=1, default=_jsonable) + '\n')
        os.replace(tmp, self.out / 'gpu.json')

    def step(self, name, fn, *args, need_s=5., **kw):
        "Run step `fn`; store its dict with status and seconds (the error on an exception)."
        t = time.time()
        if name not in self.selected: res = {'status': 'skipped', 'note': 'not selected (--steps)'}
        elif self.left() < need_s:
            res = {'status': 'skipped',
                   'note': f'out of time: {self.left():.0f} s left, needs ~{need_s:.0f} s'}
        else:
            print(f'[{time.time() - self.t0:7.1f} s] {name} ...', flush=True)
            try: res = fn(*args, **kw)
            except Exception as e:
                res = {'status': 'error', 'error': f'{type(e).__name__}: {e}'[:2000],
                       'traceback': traceback.format_exc()[-3000:]}
        res.setdefault('status', 'ok')
        res['seconds'] = round(time.time() - t, 2)
        self.data['steps'][name] = res
        self.write()
        why = f' ({res.get("error") or res.get("note")})' if res['status'] != 'ok' else ''
        print(f'    {name}: {res["status"]} in {res["seconds"]} s{why}', flush=True)
        return res


def _finite(x): return isinstance(x, (int, float)) and math.isfinite(x)


def _sync(dev):
    import torch
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def _timeit(fn, dev, repeats, warmup=1, deadline=None):
    "Median and best seconds of `fn()` over `repeats` calls after `warmup` (fewer past `deadline`)."
    for _ in range(warmup): fn(); _sync(dev)
    ts = []
    for _ in range(repeats):
        if ts and deadline is not None and time.time() > deadline: break
        _sync(dev); t = time.perf_counter(); fn(); _sync(dev); ts.append(time.perf_counter() - t)
    return statistics.median(ts), min(ts), len(ts)


def _ms(t): return [round(1e3 * t[0], 3), round(1e3 * t[1], 3)]


# ---------------------------------------------------------------- configs and batches
def tiny_hps():
    "`tiny_config` with the keys `train` reads (intervals, filelists set later)."
    from vits_nb.models import tiny_config
    hps = tiny_config()
    for k, v in dict(log_interval=1, eval_interval=2, epochs=100, adv_start_step=0).items():
        hps.train[k] = v
    hps.data.training_files = hps.data.validation_files = 'unset'
    return hps


def ljs_hps(dry):
    "configs/ljs_base.json, adversarial from the first step (the tiny config in a dry run)."
    from vits_nb.data import load_config
    if dry: return tiny_hps()
    hps = load_config(ROOT / 'configs' / 'ljs_base.json')
    hps.train.adv_start_step = 0
    return hps


def synthetic_batch(hps, b, n_sym, frames, device, seed=0):
    "Random ids and noise audio (as bench_train), spectrogram on `device`: a collated batch."
    import torch
    from vits_nb.audio import spectrogram_torch
    g = torch.Generator().manual_seed(seed)
    d = hps.data
    x = torch.randint(1, 178, (b, n_sym), generator=g).to(device)
    wav = (0.1 * torch.randn(b, 1, frames * d.hop_length, generator=g)).to(device)
    spec = spectrogram_torch(wav.squeeze(1), d.filter_length, d.hop_length, d.win_length)
    def full(n): return torch.full((b,), n, dtype=torch.long, device=device)
    return (x, full(n_sym), spec, full(spec.size(-1)), wav, full(frames * d.hop_length))


def random_mas_batch(b, t_y, t_x, seed, dtype, ties=False):
    "Padded `neg_cent`/mask: random lengths (tokens <= frames), N(0, 10) values (ties: integers)."
    import torch
    g = torch.Generator().manual_seed(seed)
    T = torch.randint(max(1, t_y // 2), t_y + 1, (b,), generator=g); T[0] = t_y
    N = torch.randint(max(1, t_x // 2), t_x + 1, (b,), generator=g)
    N = torch.minimum(N, T); N[0] = min(t_x, t_y)
    v = torch.randn(b, t_y, t_x, generator=g, dtype=torch.float64) * 10
    if ties: v = torch.randint(-3, 3, (b, t_y, t_x), generator=g).double()
    mask = ((torch.arange(t_y)[None, :, None] < T[:, None, None])
            & (torch.arange(t_x)[None, None, :] < N[:, None, None])).to(dtype)
    return (v * mask).to(dtype), mask


# ---------------------------------------------------------------- step 1: correctness
def step_mas_correctness(dev, dry, stub):
    import torch
    from vits_nb.mas import maximum_path, maximum_path_numba, maximum_path_torch
    small = [(4, 40, 12), (3, 30, 30), (5, 25, 8)]
    shapes = small if dry or stub else [(16, 400, 80), (16, 800, 150), (8, 1000, 200)]
    cases = []
    for k, (b, ty, tx) in enumerate(shapes):
        for dtype in (torch.float32, torch.float64):
            for ties in (False, True):
                nc, mask = random_mas_batch(b, ty, tx, seed=100 + k, dtype=dtype, ties=ties)
                ref = maximum_path_numba(nc, mask)                        # the CPU kernel
                got = maximum_path(nc.to(dev), mask.to(dev))              # the default on `dev`
                same = bool(torch.equal(ref, got.cpu())) and got.device.type == dev.type
                cases.append({'shape': [b, ty, tx], 'dtype': str(dtype).split('.')[-1],
                              'ties': ties, 'equal': same,
                              'cells_differing': int((ref != got.cpu()).sum())})
    all_eq = all(c['equal'] for c in cases)
    res = {'device_backend': 'torch (maximum_path_torch)' if dev.type != 'cpu'
           else 'numba (the default on the CPU)', 'cases': cases, 'n_cases': len(cases),
           'all_equal': all_eq, 'status': 'ok' if all_eq else 'fail'}
    if dev.type == 'cpu':              # the CPU default is numba itself: compare torch's path too
        eq = [torch.equal(maximum_path_numba(*random_mas_batch(*s, 7 + i, torch.float32, t)),
                          maximum_path_torch(*random_mas_batch(*s, 7 + i, torch.float32, t)))
              for i, s in enumerate(shapes) for t in (False, True)]
        res.update(cpu_torch_vs_numba_equal=all(eq), cpu_torch_vs_numba_cases=len(eq),
                   note='skipped: no CUDA (CPU paths compared: torch vs numba)')
        if not all(eq): res['status'] = 'fail'
    if stub: res['note'] = (res.get('note', '') + '; numba stub: the kernel ran as plain Python')
    return res


def _one_step(hps, dev, amp, batch, seed=1234):
    "One `Trainer.train_step` from a seeded initialisation; the logged values."
    import torch
    from vits_nb.train import Trainer
    torch.manual_seed(seed)
    tr = Trainer(hps, dev, amp=amp, log=lambda *a, **k: None)
    if amp and tr.amp_dtype is None and dev.type == 'cpu':     # dry run: CPU bf16 stand-in
        tr.amp_dtype = torch.bfloat16
    torch.manual_seed(seed + 1)
    out = tr.train_step(batch)
    res = {k: v for k, v in out.items() if isinstance(v, (int, float, str))}
    res['amp_dtype'] = str(tr.amp_dtype).replace('torch.', '')
    del tr
    if dev.type == 'cuda': torch.cuda.empty_cache()
    return res


def step_train_step_correctness(dev, dry):
    hps = ljs_hps(dry)
    b, n_sym, frames = (2, 10, 40) if dry else (4, 60, 300)
    batch = synthetic_batch(hps, b, n_sym, frames, dev)
    fp32, bf16 = _one_step(hps, dev, False, batch), _one_step(hps, dev, True, batch)
    keys = [k for k in LOSSES if k in fp32 and k in bf16]
    finite = (len(keys) == len(LOSSES) and 'skipped' not in fp32 and 'skipped' not in bf16
              and all(_finite(r[k]) for r in (fp32, bf16) for k in keys))
    close = {}
    for k in keys:
        diff = abs(bf16[k] - fp32[k])
        close[k] = {'fp32': fp32[k], 'bf16': bf16[k], 'rel': diff / max(abs(fp32[k]), 1e-9),
                    'pass': diff <= TOL_BF16_REL * abs(fp32[k]) + 1e-3}
    res = {'config': 'tiny_config' if dry else 'configs/ljs_base.json',
           'batch': {'b': b, 'symbols': n_sym, 'frames': frames},
           'segment_size': hps.train.segment_size, 'fp32': fp32, 'bf16': bf16,
           'losses_finite': finite, 'bf16_vs_fp32': close,
           'bf16_close': bool(close) and all(c['pass'] for c in close.values()),
           'tolerance': f'each loss: |bf16 - fp32| <= {TOL_BF16_REL} * |fp32| + 1e-3'}
    import torch
    res['tf32'] = {'matmul': torch.backends.cuda.matmul.allow_tf32,      # PyTorch's defaults
                   'cudnn': torch.backends.cudnn.allow_tf32}
    if dev.type == 'cpu':
        res['note'] = 'skipped: no CUDA (fp32 and a CPU bf16-autocast stand-in, tiny config)'
        res['status'] = 'ok' if finite else 'fail'
    else: res['status'] = 'ok' if finite and res['bf16_close'] else 'fail'
    return res


def _snr_db(ref, x):
    ref, x = ref.double().flatten(), x.double().flatten()
    n = float((ref - x).pow(2).sum())
    return float('inf') if n == 0 else 10 * math.log10(float(ref.pow(2).sum()) / n)


def _infer_pair(model, dev, x, xl, w):
    "Noise-off `infer` on the CPU, then on `dev` with TF32 off and on: (o, attn) ×2, o_tf32."
    import torch
    with torch.no_grad():
        o_cpu, a_cpu, *_ = model.cpu().infer(x, xl, noise_scale=0., noise_scale_w=0., w=w)
        if dev.type == 'cpu': return o_cpu, a_cpu, None, None, None
        m32, c32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        args = (x.to(dev), xl.to(dev))
        kw = dict(noise_scale=0., noise_scale_w=0., w=None if w is None else w.to(dev))
        try:
            mg = model.to(dev)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
            o_gpu, a_gpu, *_ = mg.infer(*args, **kw)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            o_tf32, *_ = mg.infer(*args, **kw)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = m32, c32
            model.cpu()
    return o_cpu, a_cpu, o_gpu.float().cpu(), a_gpu.cpu(), o_tf32.float().cpu()


def _compare_infer(model, dev, x, xl, w=None):
    """CPU vs `dev` infer, noise off. Without `w` the durations are predicted on each device (a
    ceiling may differ by a frame: informational), then the CPU's durations drive both (strict)."""
    model = model.eval()
    r = {}
    if w is None:
        _, a_cpu, _, a_gpu, _ = _infer_pair(model, dev, x, xl, None)
        d_cpu = a_cpu.sum(2)                                        # [b, 1, t_x] frames per token
        r['predicted'] = {'frames_cpu': int(d_cpu.sum())}
        if a_gpu is not None:
            d_gpu = a_gpu.sum(2)
            r['predicted'].update(frames_cuda=int(d_gpu.sum()),
                                  tokens_same_duration=float((d_cpu == d_gpu).float().mean()))
        w = d_cpu
    o_cpu, _, o_gpu, _, o_tf32 = _infer_pair(model, dev, x, xl, w)
    r['samples_cpu'] = o_cpu.shape[-1]
    if o_gpu is None:
        r['note'] = 'skipped: no CUDA'; return r
    r.update(samples_cuda=o_gpu.shape[-1], same_length=o_cpu.shape == o_gpu.shape)
    if r['same_length']:
        r.update(max_abs_diff=float((o_cpu - o_gpu).abs().max()),
                 peak_cpu=float(o_cpu.abs().max()), snr_db=_snr_db(o_cpu, o_gpu),
                 snr_db_tf32_on=_snr_db(o_cpu, o_tf32))
    r['pass'] = bool(r['same_length'] and r['snr_db'] >= TOL_INFER_SNR_DB)
    return r


def step_infer_correctness(dev, dry, voice):
    import torch
    from vits_nb.models import model_from_config
    torch.manual_seed(0)
    model = model_from_config(ljs_hps(dry))
    n = 20 if dry else 100
    x = torch.randint(1, 178, (1, n), generator=torch.Generator().manual_seed(1))
    xl = torch.tensor([n])
    res = {'ljs_fixed_durations': _compare_infer(model, dev, x, xl, torch.full((1, 1, n), 3.)),
           'ljs_predicted_durations': _compare_infer(model, dev, x, xl),
           'tolerance': f'SNR(cpu / (cuda - cpu)) >= {TOL_INFER_SNR_DB} dB with TF32 off, '
                        'same length (durations: fixed, or the CPU-predicted ones on both)'}
    if voice is not None:
        ids = voice['ids'][0]
        res['shipped_voice'] = _compare_infer(voice['model'], dev, torch.tensor([ids]),
                                              torch.tensor([len(ids)]))
    if dev.type == 'cpu': res.update(status='ok', note='skipped: no CUDA (CPU infer ran)')
    else:
        ok = all(v.get('pass') for v in res.values() if isinstance(v, dict))
        res['status'] = 'ok' if ok else 'fail'
    return res


# ---------------------------------------------------------------- step 2: speed and memory
def _numba_threads():
    try:
        import numba
        return int(numba.config.NUMBA_NUM_THREADS)
    except Exception: return None


def step_mas_speed(dev, dry, stub, deadline):
    import torch
    from vits_nb.mas import maximum_path_numba, maximum_path_torch
    cpu = torch.device('cpu')
    shapes = [(4, 60, 20), (4, 80, 30)] if dry else [(16, 800, 150), (32, 1000, 200)]
    reps = 2 if dry else 10
    rows = []
    for b, ty, tx in shapes:
        g = torch.Generator().manual_seed(5)
        nc, mask = torch.randn(b, ty, tx, generator=g), torch.ones(b, ty, tx)  # full lengths
        row = {'shape': [b, ty, tx]}
        if not stub:
            row['numba_cpu_ms'] = _ms(_timeit(lambda: maximum_path_numba(nc, mask), cpu, reps, 2,
                                              deadline))
        if dev.type == 'cuda':
            ncd, md = nc.to(dev), mask.to(dev)
            row['torch_cuda_ms'] = _ms(_timeit(lambda: maximum_path_torch(ncd, md), dev, reps, 2,
                                               deadline))
            if not stub:                       # what training pays for numba: to the CPU and back
                row['numba_from_cuda_ms'] = _ms(_timeit(lambda: maximum_path_numba(ncd, md), dev,
                                                        reps, 2, deadline))
                row['numba_from_cuda_over_torch_cuda'] = (row['numba_from_cuda_ms'][0]
                                                          / row['torch_cuda_ms'][0])
        else:
            row['torch_cpu_ms'] = _ms(_timeit(lambda: maximum_path_torch(nc, mask), cpu, reps, 1,
                                              deadline))
        rows.append(row)
    res = {'rows': rows, 'figures': '[median ms, best ms]', 'numba_threads': _numba_threads(),
           'torch_threads': torch.get_num_threads(),
           'cpu_reference_ms': {'16x800x150': 6.0, '32x1000x200': 7.6,
                                'source': 'RESULTS.md, numba kernel, 2-core CPU, loaded'}}
    if dev.type == 'cpu': res['note'] = 'skipped: no CUDA (CPU timings only)'
    if stub: res['note'] = (res.get('note', '') + '; numba missing: no kernel timings')
    return res


def _speed_case(hps, dev, b, amp, n_sym, frames, steps, n_warm, deadline):
    "Time `steps` G+D steps after `n_warm` on one synthetic batch; peak GPU memory."
    import torch
    from vits_nb.train import Trainer
    if dev.type == 'cuda': torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(dev)
    torch.manual_seed(0)
    tr = Trainer(hps, dev, amp=amp, log=lambda *a, **k: None)
    batch = synthetic_batch(hps, b, n_sym, frames, dev)
    ts, outs = [], []
    for i in range(n_warm + steps):
        _sync(dev); t = time.perf_counter(); out = tr.train_step(batch); _sync(dev)
        if i >= n_warm: ts.append(time.perf_counter() - t); outs.append(out)
        if time.time() > deadline and len(ts) >= 2: break
    row = {'status': 'ok' if ts else 'no timed step', 'steps_timed': len(ts),
           'amp_dtype': str(tr.amp_dtype).replace('torch.', ''),
           'skipped_steps': sum('skipped' in o for o in outs),
           'losses_finite': bool(outs) and all(_finite(o.get('loss_g')) for o in outs)}
    if ts:
        med = statistics.median(ts)
        row.update(s_per_step_median=med, s_per_step_best=min(ts), steps_per_s=1 / med,
                   samples_per_s=b / med)
    if dev.type == 'cuda':
        row['peak_allocated_gib'] = torch.cuda.max_memory_allocated(dev) / 2**30
        row['peak_reserved_gib'] = torch.cuda.max_memory_reserved(dev) / 2**30
    return row


def step_train_speed(dev, dry, deadline, batches, n_sym, frames, steps):
    import torch
    hps = ljs_hps(dry)
    if dev.type == 'cuda': torch.backends.cudnn.benchmark = True
    cases = [(2, False, 60, 300)] + [(b, amp, n_sym, frames) for b in batches
                                     for amp in (False, True)]
    if dry: cases, steps = [(2, False, 10, 40), (2, True, 10, 40)], 1
    rows = []
    for b, amp, ns, fr in cases:
        row = {'batch': b, 'precision': 'bf16' if amp else 'fp32', 'symbols': ns, 'frames': fr}
        if time.time() > deadline: row['status'] = 'skipped: out of time'
        elif dev.type == 'cpu' and amp: row['status'] = 'skipped: no CUDA'
        else:
            try: row.update(_speed_case(hps, dev, b, amp, ns, fr, steps, 1 if dry else 3, deadline))
            except torch.cuda.OutOfMemoryError as e:
                row['status'] = f'out of memory: {str(e)[:300]}'
            except Exception as e: row['status'] = f'error: {type(e).__name__}: {str(e)[:300]}'
            finally:
                if dev.type == 'cuda': torch.cuda.empty_cache()
        rows.append(row)
    res = {'config': 'tiny_config' if dry else 'configs/ljs_base.json',
           'segment_size': hps.train.segment_size, 'adversarial': True,
           'cudnn_benchmark': bool(torch.backends.cudnn.benchmark),
           'tf32': {'matmul': torch.backends.cuda.matmul.allow_tf32,
                    'cudnn': torch.backends.cudnn.allow_tf32},
           'rows': rows, 'cpu_reference': 'RESULTS.md: ljs_base G+D, batch 2, 60 symbols, 300 '
                                          'frames: 1.66 s/step best on the 2-core CPU'}
    if dev.type == 'cpu': res['note'] = 'skipped: no CUDA (tiny config on the CPU, fp32 only)'
    bad = [r for r in rows if r.get('status', '').startswith('error')]
    if bad or any(r.get('status') == 'ok' and not r['losses_finite'] for r in rows):
        res['status'] = 'fail'
    return res


def step_infer_rtf(dev, dry, voice, deadline):
    import torch
    from vits_nb.models import model_from_config
    reps = 2 if dry else 5
    res = {'method': 'median s of infer (+ sync) / audio s, after 1 warm-up; noise 0.667 / 0.8',
           'device': str(dev)}
    hps = ljs_hps(dry)
    torch.manual_seed(0)
    m = model_from_config(hps).eval().to(dev)
    n = 20 if dry else 100
    x = torch.randint(1, 178, (1, n), generator=torch.Generator().manual_seed(1)).to(dev)
    xl, w = torch.tensor([n], device=dev), torch.full((1, 1, n), 3., device=dev)
    with torch.no_grad():
        med, best, k = _timeit(lambda: m.infer(x, xl, w=w), dev, reps, 1, deadline)
        secs = m.infer(x, xl, w=w)[0].shape[-1] / hps.data.sampling_rate
    res['ljs_base'] = {'symbols': n, 'durations': '3 frames per symbol (as bench_infer)',
                       'audio_s': secs, 'median_s': med, 'best_s': best, 'rtf': med / secs,
                       'repeats': k, 'cpu_reference_rtf': 0.149}
    m = None                                           # free it before the voice
    if voice is None:
        res['shipped_voice'] = {'status': 'skipped: voice not available'}
    else:
        vm, rows = voice['model'].eval().to(dev), []
        with torch.no_grad():
            for ids in voice['ids']:
                xi, li = torch.tensor([ids], device=dev), torch.tensor([len(ids)], device=dev)
                def run():
                    torch.manual_seed(0); return vm.infer(xi, li)
                med, best, k = _timeit(run, dev, reps, 1, deadline)
                secs = run()[2].sum().item() * vm.hop_length / voice['sr']
                rows.append({'ids': len(ids), 'audio_s': secs, 'median_s': med, 'best_s': best,
                             'rtf': med / secs})
        res['shipped_voice'] = {'source': voice['source'], 'rows': rows,
                                'rtf': sum(r['median_s'] for r in rows)
                                / sum(r['audio_s'] for r in rows),
                                'cpu_reference_rtf_median': 0.101}
        voice['model'].cpu()
    if dev.type == 'cpu': res['note'] = 'skipped: no CUDA (CPU timings at tiny sizes)'
    return res


# ---------------------------------------------------------------- step 3: the toy run
def _write_filelist(rows, path, wav_dir):
    "Rows `(wav name, phonemes)` → an official filelist with absolute paths."
    text = ''.join(f'{Path(wav_dir).resolve() / name}|{ph}\n' for name, ph in rows)
    path.write_text(text, encoding='utf-8')
    return path


def synthetic_corpus(folder, n=8, sr=22050, seed=0):
    "A tiny corpus of tones + noise with IPA text, for the dry run (no teacher voice needed)."
    import numpy as np
    import soundfile as sf
    rng = np.random.default_rng(seed)
    texts = ['hˈɛloʊ wˈɜːld.', 'ðə kˈæt sˈæt.', 'ɡˈʊd mˈɔːɹnɪŋ.', 'tˈɛst wˌʌn.', 'sˈʌni dˈeɪ.',
             'blˈuː skˈaɪ.', 'ɹˈɛd kˈɑːɹ.', 'bˈɪɡ tɹˈiː.']
    wav_dir = Path(folder) / 'wavs'; wav_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        t = np.arange(int(sr * (1.0 + 0.1 * i))) / sr
        y = 0.3 * np.sin(2 * np.pi * (150 + 20 * i) * t) + 0.02 * rng.standard_normal(t.size)
        sf.write(wav_dir / f'syn_{i:02d}.wav', y.astype(np.float32), sr, subtype='PCM_16')
        rows.append((f'syn_{i:02d}.wav', texts[i % len(texts)]))
    return rows[:-2], rows[-2:], wav_dir


def toy_data(dry, assets, work):
    "Train/val filelists (absolute paths): the carried toy-corpus subset, or synthetic (dry run)."
    if dry:
        tr_rows, va_rows, wav_dir = synthetic_corpus(work / 'corpus'); src = 'synthetic (dry run)'
    else:
        man = json.loads((assets / 'toy' / 'subset.json').read_text(encoding='utf-8'))
        tr_rows, va_rows, wav_dir = man['train'], man['val'], work / 'wavs'
        # a copy: the loader caches spectrograms beside the wavs, and the carried folder stays small
        shutil.copytree(assets / 'toy' / 'wavs', wav_dir, ignore=shutil.ignore_patterns('*.pt'))
        src = (f'toy corpus subset: {len(tr_rows)} train + {len(va_rows)} val utterances, '
               f"{man.get('seconds', '?')} s of audio")
    return (_write_filelist(tr_rows, work / 'train.txt', wav_dir),
            _write_filelist(va_rows, work / 'val.txt', wav_dir), src)


def _export_run(run_dir, work, hps, step, out, res):
    "fp16 generator, TensorBoard events and 3 held-out WAVs of `run_dir` into `out`."
    import torch
    from vits_nb.train import latest_checkpoint, synthesize_heldout
    from vits_nb.models import read_checkpoint
    files = []
    ck = latest_checkpoint(run_dir)
    if ck is not None:                                  # the fp16 generator, its config as json
        sd, meta = read_checkpoint(ck[0])
        g16 = {'model': {k: v.half() if v.is_floating_point() else v for k, v in sd.items()},
               'iteration': int(meta.get('iteration', 0)), 'step': step,
               'config_json': json.dumps(hps.to_dict())}
        p = out / 'toy_G_fp16.pth'; torch.save(g16, p); files.append(p)
    for sub, src_dir in (('train', run_dir), ('eval', run_dir / 'eval')):
        ev = sorted(src_dir.glob('events.out.tfevents.*'))
        if ev:                                           # names the $OUT transfer accepts
            (out / 'tb' / sub).mkdir(parents=True, exist_ok=True)
            p = out / 'tb' / sub / 'events.out.tfevents.gpu_proof'
            shutil.copyfile(ev[-1], p); files.append(p)
    try:
        h = synthesize_heldout(run_dir, work / 'heldout', n=3, config=hps)
        res['heldout_metrics'] = {k: v for k, v in h['metrics'].items() if k != 'checkpoint'}
        wavs = [w for w in h['wavs'] if 'teacher' not in Path(w).name][:3]
    except ImportError as e:
        res['heldout_note'] = f'held-out synthesis needs {e.name}'; wavs = []
    for w in wavs:
        p = out / Path(w).name; shutil.copyfile(w, p); files.append(p)
    big = [f for f in files if f.stat().st_size > 16 * 2**20]
    for f in big: f.unlink()
    res['files'] = [str(f.relative_to(out)) for f in files if f not in big]
    if big: res['dropped_over_16MiB'] = [f.name for f in big]


def step_toy_run(dev, dry, assets, out, left_s, batch_size, num_workers, has_tb):
    from vits_nb.data import load_config
    from vits_nb.train import train
    work = Path(tempfile.mkdtemp(prefix='vits_nb_toy_'))
    tr_list, va_list, src = toy_data(dry, assets, work)
    hps = tiny_hps() if dry else load_config(ROOT / 'configs' / 'toy_small.json')
    if dry: hps.train.adv_start_step = 20000                    # as toy_small: generator only
    if batch_size: hps.train.batch_size = batch_size
    hps.data.training_files, hps.data.validation_files = str(tr_list), str(va_list)
    run_dir, marks = work / 'run', []
    def cb(info):
        if info.get('event') == 'step' and 'loss_mel' in info:
            keys = ('loss_mel', 'loss_kl', 'loss_dur', 'mel_l1', 'loss_g')
            vals = {k: info[k] for k in keys if k in info}
            marks.append((info['step'], time.perf_counter(), vals))
    reserve = 8 if dry else 30                        # held-out synthesis and copies after training
    if dry: kw = dict(max_steps=2, log_interval=1, eval_interval=2)
    else: kw = dict(max_minutes=max(0.2, (left_s - reserve) / 60), eval_interval=1000)
    s = train(hps, run_dir, device=str(dev), keep=1, num_workers=num_workers, progress=False,
              tensorboard=has_tb, callback=cb, **kw)
    res = {'config': 'tiny_config (generator only)' if dry else 'configs/toy_small.json',
           'data': src, 'batch_size': hps.train.batch_size, 'steps': s['step'],
           'train_seconds': s['seconds'], 'amp': str(s['trainer'].amp_dtype).replace('torch.', ''),
           'n_skipped': s.get('n_skipped'), 'stopped_by': s.get('stopped_by'),
           'adversarial_from_step': hps.train.get('adv_start_step', 0),
           'tensorboard': has_tb}
    del s['trainer']
    if len(marks) >= 2:
        k0 = min(10, len(marks) // 2) if len(marks) > 4 else 0     # after the warm-up steps
        (s0, t0, _), (s1, t1, _) = marks[k0], marks[-1]
        res['steps_per_s'] = (s1 - s0) / max(t1 - t0, 1e-9)
    every = max(1, len(marks) // 50)
    res['losses'] = [{'step': st, **v} for st, _, v in marks[::every]]
    if marks and res['losses'][-1]['step'] != marks[-1][0]:
        res['losses'].append({'step': marks[-1][0], **marks[-1][2]})
    res['losses_finite'] = bool(marks) and all(_finite(v) for *_, d in marks for v in d.values())
    _export_run(run_dir, work, hps, s['step'], out, res)
    res['status'] = 'ok' if res['losses_finite'] and s['step'] > 0 else 'fail'
    shutil.rmtree(work, ignore_errors=True)
    return res


# ---------------------------------------------------------------- the shipped voice
def load_voice(assets, dry, log=print):
    "The shipped voice: its carried fp16 weights (GPU machine), else `TTS.from_piper()` (here)."
    import torch
    p = Path(assets) / 'voice' / 'shipped_voice_fp16.pth'
    if p.is_file():
        from vits_nb.data import HParams
        from vits_nb.models import model_from_config
        ck = torch.load(p, map_location='cpu', weights_only=True)
        hps = HParams(**json.loads(ck['config_json']))
        model = model_from_config(hps)
        miss, unexpected = model.load_state_dict(ck['model'], strict=False)
        if unexpected or any(not k.startswith(tuple(ck['missing_modules'])) for k in miss):
            raise ValueError(f'{p}: its state dict does not match its config ({len(miss)} missing, '
                             f'{len(unexpected)} unexpected keys)')
        ids = json.loads((p.parent / 'ids.json').read_text())['ids']
        src = f'{p.name}: the shipped voice, inference weights in fp16'
    else:
        try:
            from vits_nb.synth import TTS
            tts = TTS.from_piper()
        except (ImportError, FileNotFoundError) as e:
            log(f'shipped voice not available: {e}'); return None
        model, hps = tts.model, tts.hps
        try: ids = [torch.cat(tts.sentence_ids('Hello there, how are you?')).tolist()]
        except Exception: ids = [[1, 8, 20, 8, 30, 8, 25, 8, 2]]   # no frontend: fixed ids
        src = 'TTS.from_piper() (fp32)'
    if dry: ids = [i[:24] for i in ids[:1]]
    return {'model': model.float().eval(), 'hps': hps, 'ids': ids,
            'sr': int(hps.data.sampling_rate), 'source': src}


# ---------------------------------------------------------------- assets (here: onnx, festival)
def prepare_assets(assets, n_sentences=110, log=print):
    "The carried assets: the shipped voice's inference weights in fp16 + ids, a toy-corpus subset."
    import torch
    from vits_nb.synth import TTS
    from vits_nb.corpus import build_toy_corpus
    assets = Path(assets); (assets / 'voice').mkdir(parents=True, exist_ok=True)
    tts = TTS.from_piper()
    absent = tuple(m + '.' for m in tts.model.missing_modules)      # not in the .onnx: not used
    sd = {k: v.half() if v.is_floating_point() else v for k, v in tts.model.state_dict().items()
          if k.startswith(('enc_p.', 'dp.', 'flow.', 'dec.', 'emb_g.'))
          and not k.startswith(absent)}
    vpath = assets / 'voice' / 'shipped_voice_fp16.pth'
    torch.save({'model': sd, 'config_json': json.dumps(tts.hps.to_dict()),
                'missing_modules': list(tts.model.missing_modules)}, vpath)
    texts = ['The quick brown fox jumps over the lazy dog.',
             'Training on a graphics card takes minutes, not days.',
             'A sentence of middling length, spoken once.']
    ids = [torch.cat(tts.sentence_ids(t)).tolist() for t in texts]
    (assets / 'voice' / 'ids.json').write_text(json.dumps({'texts': texts, 'ids': ids}) + '\n')
    v = load_voice(assets, False, log)          # the fp16 copy vs the original: noise off, same w
    with torch.no_grad():
        x, xl = torch.tensor([ids[0]]), torch.tensor([len(ids[0])])
        a, attn, *_ = tts.model.infer(x, xl, noise_scale=0., noise_scale_w=0.)
        b = v['model'].infer(x, xl, noise_scale=0., noise_scale_w=0., w=attn.sum(2))[0]
    snr = _snr_db(a, b)
    log(f'shipped voice fp16: {vpath.stat().st_size / 2**20:.1f} MiB, SNR vs fp32 {snr:.1f} dB')
    toy = assets / 'toy'                   # the first sentences, default teacher, 16-bit 22050 Hz
    stats = build_toy_corpus(toy, n=n_sentences, progress=False)
    rows = {}
    for split in ('train', 'val'):
        lines = Path(stats['filelists'][split] + '.cleaned').read_text(encoding='utf-8')
        rows[split] = [(Path(l.split('|')[0]).name, l.split('|', 1)[1])
                       for l in lines.splitlines() if l.strip()]
    size = sum(p.stat().st_size for p in (toy / 'wavs').glob('*.wav'))
    man = {'train': rows['train'], 'val': rows['val'], 'seconds': stats['total_seconds'],
           'bytes': size, 'voice_fp16_snr_db': snr}
    (toy / 'subset.json').write_text(json.dumps(man, indent=0, ensure_ascii=False) + '\n',
                                     encoding='utf-8')
    for p in toy.iterdir():             # wavs/, subset.json, the corpus manifest (re-runs) travel
        if p.is_file() and p.name not in ('subset.json', 'manifest.json'): p.unlink()
    for p in (toy / 'wavs').glob('*.spec.pt'): p.unlink()
    log(f"toy subset: {len(rows['train'])} train + {len(rows['val'])} val, "
        f"{stats['total_seconds']:.0f} s, {size / 2**20:.1f} MiB")
    return man


# ---------------------------------------------------------------- main
def environment(dev, env_info):
    import torch, numpy
    e = {'python': platform.python_version(), 'torch': torch.__version__,
         'cuda': torch.version.cuda, 'numpy': numpy.__version__, 'cpu_count': os.cpu_count(),
         'torch_threads': torch.get_num_threads(), 'platform': platform.platform(),
         'device': str(dev), **env_info}
    for mod in ('numba', 'librosa', 'soundfile', 'tensorboard', 'matplotlib', 'tqdm'):
        try:
            m = sys.modules.get(mod) or importlib.import_module(mod)
            e[mod] = getattr(m, '__version__', '?')
        except Exception as ex: e[mod] = f'absent ({type(ex).__name__})'
    if dev.type == 'cuda':
        p = torch.cuda.get_device_properties(dev)
        e.update(gpu=torch.cuda.get_device_name(dev), gpu_memory_gib=p.total_memory / 2**30,
                 capability=f'{p.major}.{p.minor}', sm_count=p.multi_processor_count,
                 cudnn=torch.backends.cudnn.version(),
                 bf16_supported=torch.cuda.is_bf16_supported())
        try:
            q = ['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader']
            r = subprocess.run(q, capture_output=True, text=True, timeout=20)
            e['driver'] = r.stdout.strip()
        except (OSError, subprocess.SubprocessError): pass
    return e


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dry-run', action='store_true', help='CPU, tiny sizes, about a minute')
    p.add_argument('--budget-s', type=float, default=450., help='bound on the whole run (s)')
    p.add_argument('--out', default=None, help='output folder (default: $OUT or ./gpu_proof_out)')
    p.add_argument('--steps', default=','.join(STEPS), help='comma-separated steps to run')
    p.add_argument('--wheels', default=str(WHEELS), help='wheels for modules missing there')
    p.add_argument('--assets', default=str(ASSETS), help='carried voice weights and toy audio')
    p.add_argument('--device', default=None, help='default: cuda if available (cpu: --dry-run)')
    p.add_argument('--batches', type=int, nargs='+', default=[16, 64],
                   help='training-speed batch sizes')
    p.add_argument('--symbols', type=int, default=150, help='synthetic batch: ids per item')
    p.add_argument('--frames', type=int, default=500, help='synthetic batch: frames per item')
    p.add_argument('--speed-steps', type=int, default=8, help='timed steps per speed case')
    p.add_argument('--toy-batch', type=int, default=None, help='toy run batch (default: config)')
    p.add_argument('--num-workers', type=int, default=0, help='toy run data-loader workers')
    p.add_argument('--prepare-assets', action='store_true',
                   help='here, not on the GPU: write the voice and toy assets into --assets')
    p.add_argument('--toy-sentences', type=int, default=110, help='toy subset size (assets)')
    a = p.parse_args(argv)
    bad = set(a.steps.split(',')) - set(STEPS)
    if bad: p.error(f'unknown step(s) {sorted(bad)}; steps: {", ".join(STEPS)}')
    return a


def main(argv=None):
    a = parse(argv)
    if a.prepare_assets:
        prepare_assets(a.assets, a.toy_sentences); return 0
    out = Path(a.out or os.environ.get('OUT') or 'gpu_proof_out')
    dry = a.dry_run
    rec = Record(out, 'dry-run' if dry else 'gpu', a.budget_s, a.steps.split(','))
    env_info = prepare_environment(a.wheels)
    sys.path.insert(0, str(ROOT))
    import torch
    dev = torch.device(a.device or ('cuda' if torch.cuda.is_available() and not dry else 'cpu'))
    if dev.type == 'cuda':
        dev = torch.device('cuda', dev.index or 0); torch.cuda.set_device(dev)
    stub = getattr(sys.modules.get('numba'), '__vits_nb_stub__', False)
    has_tb = all(_have(m) for m in ('tensorboard', 'matplotlib', 'PIL'))     # events with images
    rec.data['env'] = {**environment(dev, env_info), 'tensorboard_events': has_tb}
    try: voice = load_voice(a.assets, dry)
    except Exception as e:
        voice = None; rec.data['env']['voice_error'] = f'{type(e).__name__}: {e}'
    rec.data['env']['voice'] = voice['source'] if voice else None
    rec.write()
    print(json.dumps(rec.data['env'], default=_jsonable), flush=True)
    toy_min = 5 if dry else 90                     # every earlier step leaves the toy run this much
    def until(reserve): return time.time() + max(0., rec.left() - reserve)
    rec.step('mas_correctness', step_mas_correctness, dev, dry, stub)
    rec.step('train_step_correctness', step_train_step_correctness, dev, dry, need_s=10)
    rec.step('infer_correctness', step_infer_correctness, dev, dry, voice, need_s=10)
    rec.step('mas_speed', step_mas_speed, dev, dry, stub, until(toy_min + 150))
    rec.step('train_speed', step_train_speed, dev, dry, until(toy_min + 30), a.batches, a.symbols,
             a.frames, a.speed_steps, need_s=20)
    rec.step('infer_rtf', step_infer_rtf, dev, dry, voice, until(toy_min))
    rec.step('toy_run', step_toy_run, dev, dry, Path(a.assets), out, rec.left(), a.toy_batch,
             a.num_workers, has_tb, need_s=toy_min / 2)
    rec.data['files'] = sorted(str(p.relative_to(out)) for p in out.rglob('*')
                               if p.is_file() and not p.name.startswith('.'))
    rec.data['all_ok'] = all(rec.data['steps'][s]['status'] == 'ok' for s in STEPS)
    rec.data['finished'] = True
    rec.write()
    print(f"done in {rec.data['elapsed_s']:.0f} s; all steps ok: {rec.data['all_ok']}; "
          f"json: {out / 'gpu.json'}", flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
