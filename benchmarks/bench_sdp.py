"""Stochastic duration predictor speed at ljs_base size (in 192, filter 192, kernel 3, 4 flows), batch 16 x 150 tokens.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_sdp.py [--threads 2] [--repeats 5]

Rows: SDP training step (forward = NLL bound, + backward) and SDP inference (reverse, noise_scale 0.8), against
the deterministic DurationPredictor of the ljs_nosdp config (192 → 256, kernel 3) doing the same jobs (L2 on
log-durations + backward; a forward pass) as the reference. Median wall time of `repeats` runs after one warm-up."""
import argparse, platform, statistics, time
import torch
from vits_nb.commons import sequence_mask
from vits_nb.duration import StochasticDurationPredictor, DurationPredictor


def median_time(fn, repeats):
    fn()                                                            # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--tokens', type=int, default=150)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    b, t = a.batch, a.tokens
    lengths = torch.randint(t * 2 // 3, t + 1, (b,)); lengths[0] = t
    x_mask = sequence_mask(lengths, t).unsqueeze(1).float()
    x = torch.randn(b, 192, t) * x_mask
    w = torch.randint(1, 12, (b, 1, t)).float() * x_mask
    sdp = StochasticDurationPredictor(192, 192, 3, 0.5, 4)
    dp = DurationPredictor(192, 256, 3, 0.5)

    def sdp_train():
        sdp.train(); sdp.zero_grad()
        (sdp(x, x_mask, w).sum() / x_mask.sum()).backward()

    def dp_train():
        dp.train(); dp.zero_grad()
        (((dp(x, x_mask) - torch.log(w + 1e-6) * x_mask) ** 2).sum() / x_mask.sum()).backward()

    @torch.no_grad()
    def sdp_infer():
        sdp.eval(); sdp(x, x_mask, reverse=True, noise_scale=0.8)

    @torch.no_grad()
    def dp_infer():
        dp.eval(); dp(x, x_mask)

    rows = [('SDP forward+backward', median_time(sdp_train, a.repeats), median_time(dp_train, a.repeats)),
            ('SDP reverse (inference)', median_time(sdp_infer, a.repeats), median_time(dp_infer, a.repeats))]
    n_sdp, n_dp = (sum(p.numel() for p in m.parameters()) for m in (sdp, dp))
    print(f'torch {torch.__version__}, {a.threads} threads, {platform.machine()}, batch {b} x {t} tokens, '
          f'median of {a.repeats}; SDP {n_sdp:,} params, DurationPredictor {n_dp:,} params')
    print(f"| job | SDP (ms) | DurationPredictor (ms, reference) | SDP / reference |")
    print(f"|---|---|---|---|")
    for name, ours, ref in rows:
        print(f'| {name} | {ours * 1e3:.1f} | {ref * 1e3:.1f} | {ours / ref:.1f}x |')


if __name__ == '__main__':
    main()
