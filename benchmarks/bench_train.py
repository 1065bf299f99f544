"""Training step time: G+D (and G only, same run) at ljs_base size, batch 2, 60 symbols, 300 frames, segment 8192,
and the toy_small config at its own batch (8) and segment (4096), on the CPU with 2 threads.

Each case runs in its own process (peak RSS per case). The reference figure is the official implementation's
G+D step measured on a 2-core CPU with 2 threads (recorded in ../shared/reference/README.md: ≈2.6 s, ≈3 GiB);
it is a recorded figure, not re-measured here. Usage: .venv/bin/python benchmarks/bench_train.py [--steps N]"""
import argparse, json, os, resource, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_GD_S = 2.6      # official G+D step, ljs_base, batch 2, 60 symbols, 300 frames, segment 8192 (recorded)

CASE = r'''
import json, resource, sys, time, torch
torch.set_num_threads(int(sys.argv[5])); torch.manual_seed(0)
from vits_nb.data import load_config
from vits_nb.train import Trainer
from vits_nb.audio import spectrogram_torch
hps = load_config(sys.argv[1]); adversarial = sys.argv[2] == '1'; b, steps = int(sys.argv[3]), int(sys.argv[4])
hps.train.adv_start_step = 0
tr = Trainer(hps, adversarial=adversarial, log=lambda *a: None)
n_sym, frames, hop = 60 if b == 2 else 90, 300 if b == 2 else 260, hps.data.hop_length
x = torch.randint(1, 178, (b, n_sym)); x_lengths = torch.full((b,), n_sym)
wav = 0.1 * torch.randn(b, 1, frames * hop)
spec = spectrogram_torch(wav.squeeze(1), hps.data.filter_length, hop, hps.data.win_length)
batch = (x, x_lengths, spec, torch.full((b,), frames), wav, torch.full((b,), frames * hop))
times = []
for i in range(steps + 1):
    t = time.perf_counter(); out = tr.train_step(batch); times.append(time.perf_counter() - t)
    assert 'skipped' not in out, out
times = sorted(times[1:])                       # first step (allocations, JIT) not counted
print(json.dumps({'median_s': times[len(times) // 2], 'min_s': times[0],
                  'peak_rss_gib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
'''


def run_case(config, adversarial, batch, steps, threads):
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': str(threads)}
    p = subprocess.run([sys.executable, '-c', CASE, str(config), '1' if adversarial else '0', str(batch), str(steps), str(threads)],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode: raise RuntimeError(p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None):
    a = argparse.ArgumentParser(); a.add_argument('--steps', type=int, default=5); a.add_argument('--threads', type=int, default=2)
    a = a.parse_args(argv)
    cases = [('ljs_base G+D, batch 2, seg 8192', ROOT / 'configs/ljs_base.json', True, 2),
             ('ljs_base G only, batch 2, seg 8192', ROOT / 'configs/ljs_base.json', False, 2),
             ('toy_small G only, batch 8, seg 4096', ROOT / 'configs/toy_small.json', False, 8),
             ('toy_small G+D, batch 8, seg 4096', ROOT / 'configs/toy_small.json', True, 8)]
    print(f'CPU, {a.threads} threads, {a.steps} timed steps per case (median), load average {os.getloadavg()[0]:.1f} at start')
    print(f"| case | s/step median | s/step best | steps/s (median) | peak RSS GiB | median vs recorded official G+D 2.6 s |")
    print('|---|---|---|---|---|---|')
    res = {}
    for name, cfg, adv, b in cases:
        r = run_case(cfg, adv, b, a.steps, a.threads); res[name] = r
        ratio = f"{r['median_s'] / REFERENCE_GD_S:.2f}×" if name.startswith('ljs_base G+D') else ''
        print(f"| {name} | {r['median_s']:.2f} | {r['min_s']:.2f} | {1 / r['median_s']:.2f} | {r['peak_rss_gib']:.2f} | {ratio} |", flush=True)
    gd, g = res[cases[0][0]]['median_s'], res[cases[1][0]]['median_s']
    print(f'ljs_base: G+D / G-only step time = {gd / g:.2f} (the discriminator share of a step: {1 - g / gd:.0%})')
    print(f'load average at end {os.getloadavg()[0]:.1f}; GPU figures: not measured (no GPU in this task)')


if __name__ == '__main__': main()
