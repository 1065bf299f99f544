"""Decoder and discriminator speed at official (ljs_base) size on CPU.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_decoder.py [--threads 2] [--seconds 10] [--repeats 3]

Table 1: HiFi-GAN generator real-time factor (compute seconds per second of audio) for `--seconds` of
22.05 kHz audio, eager with weight norm (as trained) vs weight norm folded away (`remove_weight_norm`,
as for inference); the ratio is the speed-up from folding.
Table 2: MultiPeriodDiscriminator forward (no grad), and forward + backward of the LSGAN discriminator
loss on a batch of 2 x 8192-sample segments (one training step's D pass): the official form (real and
generated through each discriminator in two passes) vs vits_nb's forward (both stacked into one batch
of 4: the same numbers, half the convolution calls).
Timings are min and median over `--repeats` interleaved runs after one warm-up; the load average is printed because the
project machine is often shared."""
import argparse, math, os, platform, statistics, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vits_nb.decoder import Generator  # noqa: E402
from vits_nb.discriminators import MultiPeriodDiscriminator  # noqa: E402
from vits_nb.losses import discriminator_loss  # noqa: E402

LJS = dict(initial_channel=192, resblock='1', resblock_kernel_sizes=[3, 7, 11], resblock_dilation_sizes=[[1, 3, 5]] * 3,
           upsample_rates=[8, 8, 2, 2], upsample_initial_channel=512, upsample_kernel_sizes=[16, 16, 4, 4])
SR, HOP = 22050, 256


def interleaved_times(fns, repeats):
    "Run each fn once to warm up, then `repeats` rounds of all of them in turn (load hits every variant alike)."
    for fn in fns: fn()
    ts = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(ts, fns):
            t0 = time.perf_counter(); fn(); t.append(time.perf_counter() - t0)
    return [(min(t), statistics.median(t)) for t in ts]


def bench_decoder(seconds, repeats):
    torch.manual_seed(0)
    dec = Generator(**LJS).eval()
    # not copy.deepcopy: a deep copy shares torch's parametrized class, and removing weight norm from
    # the copy would strip `weight` from the original as well
    plain = Generator(**LJS).eval()
    plain.load_state_dict(dec.state_dict())
    plain.remove_weight_norm()
    frames = math.ceil(seconds * SR / HOP)
    z = torch.randn(1, 192, frames)
    with torch.inference_mode():
        times = interleaved_times([lambda: dec(z), lambda: plain(z)], repeats)
        err = (dec(z) - plain(z)).abs().max().item()
    return frames * HOP / SR, frames, times, err


def bench_discriminator(repeats, batch=2, segment=8192):
    torch.manual_seed(0)
    mpd = MultiPeriodDiscriminator()
    y, y_hat = torch.randn(batch, 1, segment).clamp(-1, 1), torch.randn(batch, 1, segment).clamp(-1, 1) * 0.5

    def forward_only():
        with torch.no_grad(): return mpd(y, y_hat)

    def two_passes():   # the official form: each discriminator on y, then again on y_hat
        mpd.zero_grad(set_to_none=True)
        y_d_rs, y_d_gs = [d(y)[0] for d in mpd.discriminators], [d(y_hat)[0] for d in mpd.discriminators]
        loss, _, _ = discriminator_loss(y_d_rs, y_d_gs)
        loss.backward()
        return loss

    def ours():         # vits_nb: y and y_hat stacked into one batch per discriminator
        mpd.zero_grad(set_to_none=True)
        y_d_rs, y_d_gs, _, _ = mpd(y, y_hat)
        loss, _, _ = discriminator_loss(y_d_rs, y_d_gs)
        loss.backward()
        return loss

    diff = abs(two_passes().item() - ours().item())
    return interleaved_times([forward_only, two_passes, ours], repeats), diff


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--seconds', type=float, default=10.0)
    ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()
    print(f'# torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, '
          f'load average at start {load0[0]:.1f}')
    audio_s, frames, ((wn_min, wn_med), (pl_min, pl_med)), err = bench_decoder(a.seconds, a.repeats)
    print(f'\n## Decoder (ljs_base, {frames} frames = {audio_s:.2f} s audio, batch 1, inference_mode; '
          f'min / median of {a.repeats} interleaved runs)')
    print('| variant | seconds (min / median) | real-time factor (min / median) |')
    print('|---|---|---|')
    print(f'| eager, weight norm (as trained) | {wn_min:.2f} / {wn_med:.2f} | {wn_min / audio_s:.3f} / {wn_med / audio_s:.3f} |')
    print(f'| weight norm removed (inference) | {pl_min:.2f} / {pl_med:.2f} | {pl_min / audio_s:.3f} / {pl_med / audio_s:.3f} |')
    print(f'| ratio weight norm / removed | | {wn_min / pl_min:.2f}x / {wn_med / pl_med:.2f}x |')
    print(f'max |difference| of the two outputs: {err:.1e}')
    ((f_min, f_med), (o_min, o_med), (c_min, c_med)), diff = bench_discriminator(a.repeats)
    print(f'\n## MultiPeriodDiscriminator (batch 2 x 8192 samples, real + generated; min / median of {a.repeats} interleaved runs)')
    print('| variant | seconds (min / median) |')
    print('|---|---|')
    print(f'| forward only (no grad) | {f_min:.2f} / {f_med:.2f} |')
    print(f'| forward + backward of the D loss, official form (two passes) | {o_min:.2f} / {o_med:.2f} |')
    print(f'| forward + backward of the D loss, vits_nb (one stacked batch) | {c_min:.2f} / {c_med:.2f} |')
    print(f'| ratio official form / vits_nb | {o_min / c_min:.2f}x / {o_med / c_med:.2f}x |')
    print(f'|loss difference| between the two: {diff:.1e}')
    print(f'\n# load average at end {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
    main()
