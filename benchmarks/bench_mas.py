"""Monotonic alignment search: vits_nb.mas.maximum_path vs the PyPI `monotonic-alignment-search` package.

    NUMBA_NUM_THREADS=2 .venv/bin/python benchmarks/bench_mas.py

Same work for both: float32 `neg_cent` of full-length items, ours in the official VITS layout
`[b, t_frames, t_text]`, the peer (Glow-TTS Cython kernel, as Coqui uses it) in its own
`[b, t_text, t_frames]` layout, prepared outside the timer. 2 threads (torch and numba), median of
several interleaved runs after warm-up. The first-call JIT cost is measured in fresh processes, with an empty numba
cache and then with the cache it left behind."""
import os, subprocess, sys, tempfile, time
from pathlib import Path
os.environ.setdefault('NUMBA_NUM_THREADS', '2')
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vits_nb.mas import maximum_path, maximum_path_torch
from monotonic_alignment_search import maximum_path as peer_maximum_path
from monotonic_alignment_search.core import maximum_path_c as peer_core

THREADS = 2
SIZES = [(16, 800, 150, False), (32, 1000, 200, False), (32, 1000, 200, True)]   # True: padded batch, lengths 50-100%
REPS, WARMUP = 15, 2


def median_times(*fns, reps=REPS, warmup=WARMUP):
    "Median seconds of each function, calls interleaved so that both see the same machine load."
    for _ in range(warmup):
        for fn in fns: fn()
    ts = [[] for _ in fns]
    for _ in range(reps):
        for fn, t_list in zip(fns, ts):
            t = time.perf_counter(); fn(); t_list.append(time.perf_counter() - t)
    return [(float(np.median(t)), float(np.min(t))) for t in ts]


FIRST_CALL = '''
import time, torch
torch.set_num_threads(2)
from vits_nb.mas import maximum_path
x, m = torch.randn(2, 30, 10), torch.ones(2, 30, 10)
t = time.perf_counter(); maximum_path(x, m); print(time.perf_counter() - t)
'''


def first_call_seconds(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, NUMBA_NUM_THREADS=str(THREADS), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, '-c', FIRST_CALL], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def main():
    torch.set_num_threads(THREADS)
    print(f'threads: torch {torch.get_num_threads()}, numba {os.environ["NUMBA_NUM_THREADS"]}; '
          f'median of {REPS} after {WARMUP} warm-up; float32; os.cpu_count()={os.cpu_count()}')
    with tempfile.TemporaryDirectory() as d:
        cold, warm = first_call_seconds(d), first_call_seconds(d)
    print(f'first call in a fresh process: {cold:.2f} s with an empty numba cache, {warm:.3f} s with it cached')
    print('median ms (best ms): the median is the figure; the best run shows the work without scheduling noise')
    print('peer core: its Cython kernel alone on ready numpy arrays (value copied per call: the kernel overwrites it)')
    print(f'{"b x t_frames x t_text":>22} | {"ours":>15} | {"peer":>15} | {"peer/ours":>9} | {"peer core":>15} | {"torch loop (CPU)":>16} | same path')
    for b, t_y, t_x, padded in SIZES:
        g = torch.Generator().manual_seed(0)
        neg_cent = torch.randn(b, t_y, t_x, generator=g)                     # [b, t_frames, t_text]
        T, N = torch.full((b,), t_y), torch.full((b,), t_x)
        if padded:
            T = torch.randint(t_y // 2, t_y + 1, (b,), generator=g); T[0] = t_y
            N = (T * t_x + t_y - 1) // t_y                                    # text length proportional to frames
        mask = ((torch.arange(t_y) < T[:, None])[:, :, None] & (torch.arange(t_x) < N[:, None])[:, None, :]).float()
        value, pmask = neg_cent.transpose(1, 2).contiguous(), mask.transpose(1, 2).contiguous()  # peer layout
        v_np, p_np = value.numpy(), np.zeros(value.shape, np.int32)
        tx_np, ty_np = N.int().numpy(), T.int().numpy()
        (ours, ours_best), (peer, peer_best), (core, core_best) = median_times(
            lambda: maximum_path(neg_cent, mask), lambda: peer_maximum_path(value, pmask),
            lambda: peer_core(p_np, v_np.copy(), tx_np, ty_np))
        (loop, _), = median_times(lambda: maximum_path_torch(neg_cent, mask), reps=3, warmup=1)
        same = torch.equal(maximum_path(neg_cent, mask), peer_maximum_path(value, pmask).transpose(1, 2))
        print(f'{f"{b} x {t_y} x {t_x}" + (" padded" if padded else ""):>22} | {ours*1e3:6.1f} ({ours_best*1e3:5.1f}) | {peer*1e3:6.1f} ({peer_best*1e3:5.1f}) '
              f'| {peer/ours:8.1f}x | {core*1e3:6.1f} ({core_best*1e3:5.1f}) | {loop*1e3:13.0f} ms | {same}')


if __name__ == '__main__':
    main()
