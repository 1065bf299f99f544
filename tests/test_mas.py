"""Monotonic alignment search (vits_nb.mas): oracles, constraints, exact agreement, bad input."""
import math
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from vits_nb.commons import generate_path
from vits_nb.mas import (brute_force_path, log_likelihood_matrix, maximum_path, maximum_path_numba,
                         maximum_path_reference, maximum_path_torch, path_score)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


def make_batch(T, N, tm, nm, seed, ints, dtype=torch.float64):
    "Padded neg_cent `[b, tm, nm]` (padding filled with junk) and its official-style mask."
    g = torch.Generator().manual_seed(seed)
    T, N = torch.tensor(T), torch.tensor(N)
    x = (torch.randint(-2, 3, (len(T), tm, nm), generator=g).to(dtype) if ints
         else torch.randn(len(T), tm, nm, generator=g, dtype=torch.float64).to(dtype))
    y_mask = (torch.arange(tm) < T[:, None]).to(dtype)
    x_mask = (torch.arange(nm) < N[:, None]).to(dtype)
    mask = y_mask[:, :, None] * x_mask[:, None, :]
    return torch.where(mask.bool(), x, torch.full_like(x, 1e30)), mask   # padding must never matter


@st.composite
def batches(draw, max_t=7):
    b = draw(st.integers(1, 3))
    T = [draw(st.integers(1, max_t)) for _ in range(b)]
    N = [draw(st.integers(1, t)) for t in T]
    tm = max(T) + draw(st.integers(0, 2))
    nm = max(N) + draw(st.integers(0, 2))
    return T, N, tm, nm, draw(st.integers(0, 2**16)), draw(st.booleans())


def check_constraints(path, T, N):
    for k, (t, n) in enumerate(zip(T, N)):
        p = path[k]
        assert p[t:].sum() == 0 and p[:, n:].sum() == 0
        assert ((p == 0) | (p == 1)).all()
        assert (p[:t].sum(1) == 1).all()                      # each valid frame: exactly one token
        a = p[:t, :n].argmax(1)
        assert a[0] == 0 and a[-1] == n - 1                   # starts at (0, 0), ends at (T-1, N-1)
        assert set(torch.diff(a).tolist()) <= {0, 1}          # monotone, never skips
        d = p[:t, :n].sum(0)                                  # durations
        assert (d >= 1).all() and d.sum() == t


@SETTINGS
@given(batches())
def test_optimal_and_all_implementations_agree(case):
    T, N, tm, nm, seed, ints = case
    nc, mask = make_batch(T, N, tm, nm, seed, ints)
    p_numba = maximum_path_numba(nc, mask)
    check_constraints(p_numba, T, N)
    p_brute = brute_force_path(nc, mask)
    assert torch.equal(path_score(nc, p_numba), path_score(nc, p_brute))   # exact optimum
    if ints: assert torch.equal(p_numba, p_brute)                          # ties resolved identically
    assert torch.equal(p_numba, maximum_path_reference(nc, mask))
    assert torch.equal(p_numba, maximum_path_torch(nc, mask))
    assert torch.equal(p_numba, maximum_path(nc, mask))


@SETTINGS
@given(batches(max_t=12))
def test_float32_agreement_and_duration_round_trip(case):
    T, N, tm, nm, seed, ints = case
    nc, mask = make_batch(T, N, tm, nm, seed, ints, torch.float32)
    p = maximum_path(nc, mask)
    assert p.dtype == torch.float32
    assert torch.equal(p, maximum_path_torch(nc, mask))
    assert torch.equal(p, maximum_path_reference(nc, mask))
    d = p.sum(1)                                                            # [b, t_x] durations
    assert d.sum(1).tolist() == [float(t) for t in T]
    assert torch.equal(generate_path(d.unsqueeze(1), mask.unsqueeze(1))[:, 0], p)


def test_known_tie_rule_boundaries_as_early_as_possible():
    nc, mask = torch.zeros(1, 5, 2), torch.ones(1, 5, 2)                   # all paths tie
    for impl in (maximum_path_numba, maximum_path_torch, maximum_path_reference, brute_force_path):
        assert impl(nc, mask)[0].argmax(1).tolist() == [0, 1, 1, 1, 1]


def test_matches_pypi_peer_including_ties():
    peer = pytest.importorskip('monotonic_alignment_search')
    for seed in range(20):
        T, N = [40, 17, 9], [11, 17, 1]
        nc, mask = make_batch(T, N, 45, 18, seed, ints=True, dtype=torch.float32)
        nc = nc * mask                                                      # peer sums the padding in
        theirs = peer.maximum_path(nc.transpose(1, 2).contiguous(), mask.transpose(1, 2).contiguous())
        assert torch.equal(maximum_path(nc, mask), theirs.transpose(1, 2))


def test_large_magnitudes_where_a_minus_1e9_sentinel_fails():
    peer = pytest.importorskip('monotonic_alignment_search')
    nc = -4e6 * torch.rand(2, 1000, 100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mask = torch.ones_like(nc)
    ours = maximum_path(nc, mask)
    check_constraints(ours, [1000, 1000], [100, 100])
    assert torch.equal(ours, maximum_path_torch(nc, mask))
    theirs = peer.maximum_path(nc.transpose(1, 2).float().contiguous(), mask.transpose(1, 2).float().contiguous()).transpose(1, 2)
    assert (path_score(nc, theirs) < path_score(nc, ours)).all()            # the sentinel costs real likelihood


def test_mixed_short_and_long_items():
    nc, mask = make_batch([2, 300, 1], [1, 60, 1], 300, 60, seed=3, ints=False)
    p = maximum_path(nc, mask)
    check_constraints(p, [2, 300, 1], [1, 60, 1])
    assert torch.equal(p, maximum_path_torch(nc, mask))
    assert torch.equal(p, maximum_path_reference(nc, mask))
    assert p[0, :2, 0].tolist() == [1, 1] and p[2, 0, 0] == 1


def test_dtypes_and_empty_items():
    nc, mask = make_batch([4, 3], [2, 3], 5, 3, seed=0, ints=True, dtype=torch.float32)
    want = maximum_path(nc, mask)
    for dt in (torch.float16, torch.bfloat16, torch.float64):
        got = maximum_path(nc.to(dt), mask.to(dt))
        assert got.dtype == dt and torch.equal(got.float(), want)
    assert torch.equal(maximum_path(nc, mask.bool()), want)
    mask[1] = 0                                                             # an all-padding item
    assert maximum_path(nc, mask)[1].sum() == 0 and maximum_path_torch(nc, mask)[1].sum() == 0
    assert maximum_path(nc[:, :0], mask[:, :0]).shape == (2, 0, 3)
    x = nc.clone().requires_grad_()
    assert not maximum_path(x, mask).requires_grad


@pytest.mark.parametrize('backend', ['numba', 'torch', 'reference'])
def test_bad_input_raises(backend):
    nc, mask = make_batch([6, 3], [2, 3], 6, 4, seed=0, ints=False)
    with pytest.raises(ValueError, match='does not match'):
        maximum_path(nc, mask[:, :, :3], backend=backend)
    with pytest.raises(ValueError, match=r'\[b, t_frames, t_text\]'):
        maximum_path(nc[0], mask[0], backend=backend)
    too_long = make_batch([6, 3], [2, 4], 6, 4, seed=0, ints=False)[1]
    with pytest.raises(ValueError, match='item 1 has 4 text tokens but only 3 frames'):
        maximum_path(nc, too_long, backend=backend)
    for bad_value in (float('nan'), float('inf'), -float('inf')):
        bad = nc.clone(); bad[1, 2, 1] = bad_value
        with pytest.raises(ValueError, match='item 1 contains NaN or inf'):
            maximum_path(bad, mask, backend=backend)
    hole = mask.clone(); hole[0, 3, 1] = 0
    with pytest.raises(ValueError, match='mask item 0 is not a 0/1 rectangle'):
        maximum_path(nc, hole, backend=backend)
    half = mask.clone(); half[0, 0, 0] = 0.5
    with pytest.raises(ValueError, match='mask item 0'):
        maximum_path(nc, half, backend=backend)
    with pytest.raises(ValueError, match='floating point'):
        maximum_path(nc.long(), mask, backend=backend)


def test_unknown_backend():
    with pytest.raises(ValueError, match='unknown backend'):
        maximum_path(torch.zeros(1, 2, 1), torch.ones(1, 2, 1), backend='cuda')


def test_log_likelihood_matrix_matches_direct_density():
    g = torch.Generator().manual_seed(0)
    z_p = torch.randn(3, 24, 11, generator=g, dtype=torch.float64)
    m_p = torch.randn(3, 24, 7, generator=g, dtype=torch.float64)
    logs_p = 0.5 * torch.randn(3, 24, 7, generator=g, dtype=torch.float64)
    direct = torch.zeros(3, 11, 7, dtype=torch.float64)
    for j in range(11):
        for i in range(7):
            z, m, s = z_p[:, :, j], m_p[:, :, i], logs_p[:, :, i]
            direct[:, j, i] = (-0.5 * math.log(2 * math.pi) - s - 0.5 * (z - m) ** 2 * torch.exp(-2 * s)).sum(1)
    torch.testing.assert_close(log_likelihood_matrix(z_p, m_p, logs_p), direct, rtol=1e-12, atol=1e-9)


def test_toy_alignment_recovers_durations():
    g = torch.Generator().manual_seed(0)
    d_true = torch.tensor([2, 6, 1, 3, 4])
    m_p = 3 * torch.randn(1, 8, 5, generator=g, dtype=torch.float64)
    logs_p = torch.full_like(m_p, math.log(0.3))
    z_p = m_p[:, :, torch.repeat_interleave(torch.arange(5), d_true)] + 0.3 * torch.randn(1, 8, 16, generator=g, dtype=torch.float64)
    L = log_likelihood_matrix(z_p, m_p, logs_p)
    assert maximum_path(L, torch.ones_like(L)).sum(1)[0].long().tolist() == d_true.tolist()


@pytest.mark.parametrize('omp', [None, '1'])
def test_numba_kernel_keeps_torchs_thread_count(omp):
    "In a fresh process (where numba's OpenMP pool starts): torch's thread count survives the kernel, and numba follows it."
    import subprocess, sys, os
    code = ("import torch, numba; torch.set_num_threads(1)\n"
            "from vits_nb.mas import maximum_path_numba, maximum_path_reference\n"
            "L, M = torch.randn(4, 9, 5), torch.ones(4, 9, 5)\n"
            "p = maximum_path_numba(L, M)\n"
            "assert torch.equal(p, maximum_path_reference(L, M))\n"
            "print(torch.get_num_threads(), numba.get_num_threads(), numba.threading_layer())")
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'NUMBA_NUM_THREADS')}
    if omp: env['OMP_NUM_THREADS'] = omp       # as the test command sets it
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out[:2] == ['1', '1'], out
