"""Encoder forward time at ljs_base size: the text encoder (batch 16 x 150 symbols) and the posterior encoder
(batch 16 x 400 frames x 513 bins), and what the windowed relative-position attention costs against plain
`torch.nn.functional.scaled_dot_product_attention` without relative terms (the reference row).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_encoders.py [--threads 2] [--repeats 15]

Lengths are drawn between 80% and 100% of the padded size (a sorted-bucket batch), inference mode, eval.
Rounds interleave the variants so a load burst from other processes hits them alike; the table reports the
median and best wall-clock round and the median process CPU time (on a loaded machine the best round and
the CPU time are the steadier figures).
"""
import argparse, math, statistics, sys, time, types
from pathlib import Path
import torch
import torch.nn.functional as F
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
from vits_nb.commons import sequence_mask
from vits_nb.text_encoder import (MultiHeadAttention, TextEncoder, get_relative_embeddings,
                                  relative_position_to_absolute_position, absolute_position_to_relative_position)
from vits_nb.posterior_encoder import PosteriorEncoder


def sdpa_attention(self, query, key, value, mask=None):
    "Drop-in for `MultiHeadAttention.attention`: content-only attention through torch's fused SDPA."
    b, d, t_s, t_t = *key.shape, query.size(2)
    h, dk = self.n_heads, self.k_channels
    q, k, v = (y.view(b, h, dk, -1).transpose(2, 3) for y in (query, key, value))
    bias = None if mask is None else (mask - 1) * 1e4              # same -1e4 fill as masked_fill, additive
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return out.transpose(2, 3).reshape(b, d, t_t), None


def skewed_attention(self, query, key, value, mask=None):
    "Drop-in for `MultiHeadAttention.attention` computing the relative terms by skewing full [l, 2l-1] tables"
    " (the official formulation) instead of on the 2w+1 diagonals."
    b, d, t_s, t_t = *key.shape, query.size(2)
    h, dk = self.n_heads, self.k_channels
    q, k, v = (y.view(b, h, dk, -1).transpose(2, 3) for y in (query, key, value))
    q = q / math.sqrt(dk)
    scores = q @ k.transpose(-2, -1)
    scores = scores + relative_position_to_absolute_position(q @ get_relative_embeddings(self.emb_rel_k, t_s).unsqueeze(0).transpose(-2, -1))
    if mask is not None: scores = scores.masked_fill(mask == 0, -1e4)
    p = torch.softmax(scores, -1)
    out = p @ v + absolute_position_to_relative_position(p) @ get_relative_embeddings(self.emb_rel_v, t_s).unsqueeze(0)
    return out.transpose(2, 3).reshape(b, d, t_t), p


def timed(fns, repeats):
    "`{name: (median wall s, best wall s, median process-CPU s)}`; CPU time is less sensitive to other processes."
    for f in fns.values(): f()                                      # warm-up
    wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0, c0 = time.perf_counter(), time.process_time(); f()
            wall[k].append(time.perf_counter() - t0); cpu[k].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), min(wall[k]), statistics.median(cpu[k])) for k in fns}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--repeats', type=int, default=15)
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--tokens', type=int, default=150)
    ap.add_argument('--frames', type=int, default=400)
    a = ap.parse_args()
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    b, t, f = a.batch, a.tokens, a.frames
    ids = torch.randint(0, 178, (b, t))
    x_len = torch.randint(int(0.8 * t), t + 1, (b,)); x_len[0] = t
    spec = torch.rand(b, 513, f)
    y_len = torch.randint(int(0.8 * f), f + 1, (b,)); y_len[0] = f

    enc_p = TextEncoder(178, 192, 192, 768, 2, 6, 3, 0.1).eval()
    enc_p_sdpa = TextEncoder(178, 192, 192, 768, 2, 6, 3, 0.1).eval()
    enc_p_sdpa.load_state_dict(enc_p.state_dict())
    for layer in enc_p_sdpa.encoder.attn_layers: layer.attention = types.MethodType(sdpa_attention, layer)
    enc_q = PosteriorEncoder(513, 192, 192, 5, 1, 16).eval()
    enc_q_plain = PosteriorEncoder(513, 192, 192, 5, 1, 16).eval()
    enc_q_plain.load_state_dict(enc_q.state_dict()); enc_q_plain.remove_weight_norm()

    # one attention layer at encoder size: ours with the relative terms, ours without, torch SDPA without
    mha = MultiHeadAttention(192, 192, 2, window_size=4).eval()
    mha_plain = MultiHeadAttention(192, 192, 2).eval()
    mha_sdpa = MultiHeadAttention(192, 192, 2).eval()
    mha_plain.load_state_dict(mha.state_dict(), strict=False); mha_sdpa.load_state_dict(mha_plain.state_dict())
    mha_sdpa.attention = types.MethodType(sdpa_attention, mha_sdpa)
    mha_skew = MultiHeadAttention(192, 192, 2, window_size=4).eval()
    mha_skew.load_state_dict(mha.state_dict()); mha_skew.attention = types.MethodType(skewed_attention, mha_skew)
    m = sequence_mask(x_len, t).unsqueeze(1).float()
    am = m.unsqueeze(2) * m.unsqueeze(-1)
    h = torch.randn(b, 192, t) * m

    with torch.inference_mode():
        # sanity: content-only attention agrees with SDPA at valid positions
        err = ((mha_plain(h, h, am) - mha_sdpa(h, h, am)) * m).abs().max().item()
        assert err < 1e-4, err
        err = ((mha(h, h, am) - mha_skew(h, h, am)) * m).abs().max().item()        # banded == skewed
        assert err < 1e-4, err
        res = timed({
            'attn: ours, relative window 4': lambda: mha(h, h, am),
            'attn: relative by skewing [l, 2l-1] tables (official formulation)': lambda: mha_skew(h, h, am),
            'attn: ours, no relative terms': lambda: mha_plain(h, h, am),
            'attn: torch SDPA, no relative terms (ref)': lambda: mha_sdpa(h, h, am),
        }, 8 * a.repeats)                                                  # one layer is ~100x cheaper: more rounds
        res.update(timed({
            'TextEncoder (6 layers, ours)': lambda: enc_p(ids, x_len),
            'TextEncoder with SDPA attention (ref, no rel.)': lambda: enc_p_sdpa(ids, x_len),
            'PosteriorEncoder (16-layer WN, weight norm)': lambda: enc_q(spec, y_len),
            'PosteriorEncoder, weight norm removed': lambda: enc_q_plain(spec, y_len),
        }, a.repeats))

    refs = {'attn': 'attn: torch SDPA, no relative terms (ref)', 'TextEncoder': 'TextEncoder with SDPA attention (ref, no rel.)',
            'PosteriorEncoder': 'PosteriorEncoder (16-layer WN, weight norm)'}
    print(f'threads={a.threads} batch={b} tokens={t} frames={f} torch={torch.__version__}')
    print('| variant | wall median ms | wall best ms | CPU median ms | vs reference: wall best | CPU median |')
    print('|---|---:|---:|---:|---:|---:|')
    for k, (med, best, c) in res.items():
        r = res[next(v for p, v in refs.items() if k.startswith(p))]
        print(f'| {k} | {1e3 * med:.1f} | {1e3 * best:.1f} | {1e3 * c:.1f} | {best / r[1]:.2f}x | {c / r[2]:.2f}x |')


if __name__ == '__main__':
    main()
