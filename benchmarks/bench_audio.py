"""Spectrogram extraction speed: seconds of compute per hour of audio.

vits_nb.audio.spectrogram_torch (the posterior encoder's input, official framing) against librosa.stft
with the same settings (n_fft 1024, hop 256, win 1024, Hann, reflect padding 384, center=False, magnitude
with the 1e-6 epsilon), clip by clip as the data loader computes them, plus the log-mel on top.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_audio.py [--minutes 20] [--clip-seconds 6] [--threads 2]
"""
import argparse, sys, time
from pathlib import Path
import numpy as np
import torch
import librosa
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
from vits_nb.audio import spectrogram_torch, mel_spectrogram_torch

SR, N_FFT, HOP, WIN, PAD = 22050, 1024, 256, 1024, (1024 - 256) // 2


def librosa_spec(y):
    S = librosa.stft(np.pad(y, (PAD, PAD), mode='reflect'), n_fft=N_FFT, hop_length=HOP, win_length=WIN,
                     window='hann', center=False)
    return np.sqrt(np.abs(S) ** 2 + 1e-6)


def librosa_mel(y):
    M = librosa.feature.melspectrogram(y=np.pad(y, (PAD, PAD), mode='reflect'), sr=SR, n_fft=N_FFT, hop_length=HOP,
                                       win_length=WIN, window='hann', center=False, power=1.0, n_mels=80)
    return np.log(np.maximum(M, 1e-5))


def timed(fns, clips, repeats):
    "Best-of-`repeats` seconds for each function over all clips; rounds interleave the functions so a"
    " load burst from other processes hits them alike."
    for fn, cs in zip(fns, clips):
        for c in cs[:10]: fn(c)                    # warm-up: window/filterbank caches, FFT plans, thread pool
    best = [float('inf')] * len(fns)
    for _ in range(repeats):
        for i, (fn, cs) in enumerate(zip(fns, clips)):
            t0 = time.perf_counter()
            for c in cs: fn(c)
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--minutes', type=float, default=20.0, help='audio measured per repeat')
    ap.add_argument('--clip-seconds', type=float, default=6.0, help='LJSpeech clips average about 6.6 s')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--repeats', type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    n_clips = max(1, round(a.minutes * 60 / a.clip_seconds))
    n = int(a.clip_seconds * SR) // HOP * HOP
    clips_np = [(0.3 * rng.standard_normal(n)).astype(np.float32) for _ in range(n_clips)]
    clips_t = [torch.from_numpy(c)[None] for c in clips_np]
    hours = n_clips * n / SR / 3600
    # sanity: the two agree (same check as tests/test_audio.py)
    ref = librosa_spec(clips_np[0])
    assert np.abs(spectrogram_torch(clips_t[0])[0].numpy() - ref).max() <= 1e-6 * ref.max()
    names = [('linear spec', 'librosa.stft'), ('linear spec', 'vits_nb spectrogram_torch'),
             ('log-mel 80', 'librosa.feature.melspectrogram'), ('log-mel 80', 'vits_nb mel_spectrogram_torch')]
    fns = [librosa_spec, spectrogram_torch, librosa_mel, lambda c: mel_spectrogram_torch(c, N_FFT, 80, SR, HOP, WIN, 0.0, None)]
    with torch.inference_mode():
        secs = timed(fns, [clips_np, clips_t, clips_np, clips_t], a.repeats)
    rows = [(f, i, s) for (f, i), s in zip(names, secs)]
    print(f'{n_clips} clips x {n / SR:.2f} s = {hours * 60:.1f} min of audio, {a.threads} threads, '
          f'torch {torch.__version__}, librosa {librosa.__version__}, best of {a.repeats}')
    print(f"{'feature':<12} {'implementation':<32} {'s / hour of audio':>18} {'x real time':>12} {'speed-up vs librosa':>20}")
    base = {}
    for feat, impl, secs in rows:
        per_hour = secs / hours
        base.setdefault(feat, per_hour)
        print(f'{feat:<12} {impl:<32} {per_hour:>18.2f} {3600 / per_hour:>12.0f} {base[feat] / per_hour:>19.2f}x')


if __name__ == '__main__':
    main()
