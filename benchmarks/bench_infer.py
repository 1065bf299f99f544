"""Inference speed of the full model at ljs_base size on the CPU.

`SynthesizerTrn.infer` on a fixed 100-symbol input with fixed durations (every token 3 frames, so
300 frames = 3.48 s of audio, the same work every run; passed through `infer(w=...)`). Rows: weight
norm kept (as trained) vs removed (as deployed), measured in this run, and the official
implementation's recorded figure on the same kind of machine (shared/reference/README.md: 0.6 s
for 100 symbols) as the reference. Peak memory is the process's maximum RSS.

    .venv/bin/python benchmarks/bench_infer.py [--threads 2] [--repeats 5]
"""
import argparse, resource, statistics, sys, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vits_nb.models import model_from_config
from vits_nb.commons import remove_weight_norm
from torch.nn.utils import parametrize

OFFICIAL_S_PER_100_SYMBOLS = 0.6   # recorded reference (official code, 2-core CPU, 2 threads)


def strip_weight_norm(model):
    for m in model.modules():
        if parametrize.is_parametrized(m, 'weight'): remove_weight_norm(m)
    return model


def time_infer(net, x, xl, w, repeats):
    with torch.no_grad():
        net.infer(x, xl, w=w, noise_scale=.667)                       # warm-up
        ts = []
        for _ in range(repeats):
            t = time.perf_counter(); o = net.infer(x, xl, w=w, noise_scale=.667)[0]; ts.append(time.perf_counter() - t)
    return statistics.median(ts), o.shape[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--repeats', type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    cfg = ROOT / 'configs' / 'ljs_base.json'
    x = torch.randint(1, 178, (1, 100)); xl = torch.tensor([100]); w = torch.full((1, 1, 100), 3.)
    rows = []
    net = model_from_config(cfg).eval()
    s, n = time_infer(net, x, xl, w, a.repeats); rows.append(('vits_nb, weight norm kept', s, n))
    fused = model_from_config(cfg).eval(); fused.load_state_dict(net.state_dict()); strip_weight_norm(fused)
    s, n = time_infer(fused, x, xl, w, a.repeats); rows.append(('vits_nb, weight norm removed', s, n))
    dur = rows[0][2] / 22050
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f'infer, ljs_base, 100 symbols -> {dur:.2f} s audio, {a.threads} threads, median of {a.repeats}')
    print(f"{'variant':32} {'seconds':>8} {'RTF':>6} {'vs official':>12}")
    for name, s, n in rows:
        print(f'{name:32} {s:8.3f} {s / dur:6.3f} {OFFICIAL_S_PER_100_SYMBOLS / s:11.2f}x')
    print(f"{'official (recorded reference)':32} {OFFICIAL_S_PER_100_SYMBOLS:8.3f} {'':6} {'1.00x':>12}")
    print(f'weight norm removed vs kept: {rows[0][1] / rows[1][1]:.2f}x; peak RSS {peak:.0f} MiB')


if __name__ == '__main__':
    main()
