"""Spline transform, SDP flows and duration predictors: official layout, invertibility, log-determinants, training."""
import math
from reference import shapes, param_count
import pytest
import torch
from torch.autograd.functional import jacobian

from vits_nb.commons import sequence_mask
from vits_nb.duration import (piecewise_rational_quadratic_transform as rq, DDSConv, ConvFlow, ElementwiseAffine, Log,
                              StochasticDurationPredictor, DurationPredictor)

f64 = torch.float64








def mask_of(lengths, t):
    return sequence_mask(torch.tensor(lengths), t).unsqueeze(1).to(f64)


def spline_params(n, K=10, scale=1.5):
    return [torch.randn(n, K, dtype=f64) * scale, torch.randn(n, K, dtype=f64) * scale, torch.randn(n, K - 1, dtype=f64) * scale]


# ---------------------------------------------------------------- official layout

@pytest.mark.parametrize('tsv,model,gin', [('state_dict_ljs_base_G.tsv', 'ljs_base_G', 0),
                                           ('state_dict_vctk_base_G.tsv', 'vctk_base_G', 256)])
def test_sdp_official_layout_and_param_count(tsv, model, gin):
    sdp = StochasticDurationPredictor(192, 192, 3, 0.5, 4, gin_channels=gin)
    assert {k: list(v.shape) for k, v in sdp.state_dict().items()} == shapes(tsv, 'dp.')
    n_all, n_plain = param_count(model, 'dp')
    assert sum(p.numel() for p in sdp.parameters()) == n_all == n_plain   # no weight norm in the SDP


@pytest.mark.parametrize('gin', [0, 256])
def test_deterministic_dp_layout(gin):
    # ljs_nosdp: DurationPredictor(hidden 192, filter 256, kernel 3, dropout 0.5, gin)
    dp = DurationPredictor(192, 256, 3, 0.5, gin_channels=gin)
    want = {'conv_1.weight': [256, 192, 3], 'conv_1.bias': [256], 'norm_1.gamma': [256], 'norm_1.beta': [256],
            'conv_2.weight': [256, 256, 3], 'conv_2.bias': [256], 'norm_2.gamma': [256], 'norm_2.beta': [256],
            'proj.weight': [1, 256, 1], 'proj.bias': [1]}
    if gin: want.update({'cond.weight': [192, gin, 1], 'cond.bias': [192]})
    assert {k: list(v.shape) for k, v in dp.state_dict().items()} == want
    assert sum(p.numel() for p in dp.parameters()) == 345_857 + (49_344 if gin else 0)


# ---------------------------------------------------------------- spline

def test_spline_monotonic_maps_interval_and_identity_tails():
    K, n = 8, 3001
    p = [t[:1].expand(n, -1) for t in spline_params(1, K, 2.0)]
    x = torch.linspace(-8, 8, n, dtype=f64)
    y, ld = rq(x, *p, tail_bound=3.0)
    assert (y.diff() > 0).all()
    out = x.abs() > 3.0
    assert torch.equal(y[out], x[out]) and torch.equal(ld[out], torch.zeros_like(ld[out]))
    ends, _ = rq(torch.tensor([-3., 3.], dtype=f64), *[t[:2] for t in p], tail_bound=3.0)
    torch.testing.assert_close(ends, torch.tensor([-3., 3.], dtype=f64), rtol=0, atol=1e-12)
    # continuity of the derivative at the tail bound: slope → 1
    _, ld_edge = rq(torch.tensor([-3 + 1e-9, 3 - 1e-9], dtype=f64), *[t[:2] for t in p], tail_bound=3.0)
    torch.testing.assert_close(ld_edge, torch.zeros(2, dtype=f64), rtol=0, atol=1e-6)


def test_spline_inverse_and_logdet_vs_autograd():
    n = 400
    p = spline_params(n)
    x = torch.rand(n, dtype=f64) * 12 - 6
    y, ld = rq(x, *p)
    x_back, ld_inv = rq(y, *p, inverse=True)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-9)
    torch.testing.assert_close(ld_inv, -ld, rtol=0, atol=1e-9)
    J = jacobian(lambda v: rq(v, *p)[0], x)
    assert torch.count_nonzero(J - torch.diag(torch.diagonal(J))) == 0
    inside = x.abs() < 5
    torch.testing.assert_close(torch.log(torch.diagonal(J))[inside], ld[inside], rtol=0, atol=1e-10)
    Ji = jacobian(lambda v: rq(v, *p, inverse=True)[0], y)
    torch.testing.assert_close(torch.log(torch.diagonal(Ji))[inside], ld_inv[inside], rtol=0, atol=1e-10)


def test_spline_uniform_bins_formula():
    # zero parameters: uniform bins, so the knots lie on the identity line and at x = knot the spline is exact
    K, B = 4, 2.0
    x = torch.tensor([-1., 0., 1.], dtype=f64)   # interior knots of 4 uniform bins on [-2, 2]
    y, _ = rq(x, torch.zeros(3, K, dtype=f64), torch.zeros(3, K, dtype=f64), torch.zeros(3, K - 1, dtype=f64), tail_bound=B)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-12)
    # slope at an interior knot is min_derivative + softplus(0)
    _, ld = rq(x, torch.zeros(3, K, dtype=f64), torch.zeros(3, K, dtype=f64), torch.zeros(3, K - 1, dtype=f64), tail_bound=B)
    torch.testing.assert_close(ld, torch.full((3,), math.log(1e-3 + math.log(2)), dtype=f64), rtol=0, atol=1e-12)


def test_spline_gradients_finite_in_tails():
    p = [t.requires_grad_() for t in spline_params(4)]
    x = torch.tensor([-9., -5., 5., 9.], dtype=f64, requires_grad=True)
    y, ld = rq(x, *p)
    (y.sum() + ld.sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in [x, *p])


def test_spline_bad_input():
    p = spline_params(3)
    x = torch.zeros(3, dtype=f64)
    with pytest.raises(ValueError, match='unnormalized_derivatives'): rq(x, p[0], p[1], p[2][:, :4])
    with pytest.raises(ValueError, match='unnormalized_heights'): rq(x, p[0], p[1][:2], p[2])
    with pytest.raises(ValueError, match='tails'): rq(x, *p, tails='circular')
    with pytest.raises(ValueError, match='min_bin'): rq(x, *p, min_bin_width=0.2)


# ---------------------------------------------------------------- flows

def check_flow(flow, x, mask, **kw):
    y, logdet = flow(x, mask, **kw)
    torch.testing.assert_close(flow(y, mask, reverse=True, **kw), x, rtol=0, atol=1e-9)
    for i in range(x.size(0)):
        n, c = int(mask[i].sum()), x.size(1)
        kwi = {k: v[i:i + 1, :, :n] for k, v in kw.items()}
        f = lambda v: flow(v.view(1, c, n), mask[i:i + 1, :, :n], **kwi)[0].reshape(-1)
        torch.testing.assert_close(torch.linalg.slogdet(jacobian(f, x[i, :, :n].reshape(-1)))[1], logdet[i],
                                   rtol=0, atol=1e-9)
    # padded positions are zero in the output
    pad = mask.expand_as(y) == 0
    assert torch.equal(y[pad], torch.zeros_like(y[pad]))
    return y, logdet


def test_convflow_elementwise_affine_log():
    m = mask_of([7, 4], 7)
    cf = ConvFlow(2, 16, 3, 3).double().eval().requires_grad_(False)
    y0, ld0 = cf(torch.zeros(1, 2, 7, dtype=f64), m[:1])
    with torch.no_grad(): cf.proj.weight.normal_(0, .3); cf.proj.bias.normal_(0, .3)
    x = torch.randn(2, 2, 7, dtype=f64) * 2 * m
    g = torch.randn(2, 16, 7, dtype=f64)
    y, ld = check_flow(cf, x, m, g=g)
    assert torch.equal(y[:, :1], x[:, :1])                   # the conditioning half passes through
    assert ld.abs().min() > 1e-3
    ea = ElementwiseAffine(2).double().requires_grad_(False)
    with torch.no_grad(): ea.m.normal_(); ea.logs.normal_()
    _, ld = check_flow(ea, x, m)
    torch.testing.assert_close(ld, ea.logs.sum() * m.sum([1, 2]), rtol=0, atol=1e-12)
    _, ld = check_flow(Log(), x.abs() + 0.5 * m, m)


def test_ddsconv_receptive_field_and_mask():
    dds = DDSConv(8, 3, 3).eval().requires_grad_(False)
    x, ones = torch.randn(1, 8, 40), torch.ones(1, 1, 40)
    x2 = x.clone(); x2[0, :, 20] += 1
    changed = ((dds(x2, ones) - dds(x, ones))[0].abs().sum(0) > 0).nonzero().flatten()
    assert changed.tolist() == list(range(7, 34))             # 1 + 2(1 + 3 + 9) = 27 positions
    m = torch.ones(1, 1, 40); m[..., 30:] = 0
    assert torch.equal(dds(x, m)[..., 30:], torch.zeros(1, 8, 10))


# ---------------------------------------------------------------- SDP

def tiny_sdp(gin=0, p_dropout=0.0):
    return StochasticDurationPredictor(16, 16, 3, p_dropout, 4, gin_channels=gin).double()


def test_sdp_nll_finite_detached_and_masked():
    sdp = tiny_sdp(gin=4)
    m = mask_of([8, 5], 8)
    x = torch.randn(2, 16, 8, dtype=f64, requires_grad=True)
    g = torch.randn(2, 4, 1, dtype=f64, requires_grad=True)
    w = torch.randint(1, 9, (2, 1, 8)).to(f64) * m
    nll = sdp(x, m, w, g=g)
    assert nll.shape == (2,) and torch.isfinite(nll).all()
    nll.sum().backward()
    assert x.grad is None and g.grad is None                 # the SDP does not train the text encoder / speaker table
    # zero-initialised ConvFlow projections: at init the splines ignore the conditioning, so only the
    # projections get gradient; once they are non-zero, the gradient reaches the conditioning network
    assert sdp.pre.weight.grad.abs().sum() == 0 and sdp.flows[1].proj.weight.grad.abs().sum() > 0
    randomise(sdp); sdp.zero_grad()
    sdp(x, m, w, g=g).sum().backward()
    assert sdp.pre.weight.grad.abs().sum() > 0 and sdp.cond.weight.grad.abs().sum() > 0
    assert x.grad is None and g.grad is None
    # padding content does not change the NLL of item 1
    x_j, w_j = x.detach().clone(), w.clone(); x_j[1, :, 5:] = 50.; w_j[1, :, 5:] = 7.
    torch.manual_seed(3); a = sdp(x.detach(), m, w, g=g.detach())
    torch.manual_seed(3); b = sdp(x_j, m, w_j * m, g=g.detach())
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_sdp_bad_input():
    sdp = tiny_sdp()
    m = mask_of([4], 4)
    with pytest.raises(ValueError, match='w \\(durations'): sdp(torch.randn(1, 16, 4, dtype=f64), m)
    with pytest.raises(ValueError, match='w must have shape'): sdp(torch.randn(1, 16, 4, dtype=f64), m, torch.ones(1, 4, dtype=f64))


def randomise(sdp):
    with torch.no_grad():
        for l in [*sdp.flows, *sdp.post_flows]:
            if isinstance(l, ConvFlow): l.proj.weight.normal_(0, .5); l.proj.bias.normal_(0, .5)
    return sdp


def test_sdp_reverse_deterministic_and_equals_full_inverse():
    sdp = randomise(tiny_sdp(gin=4, p_dropout=0.5)).eval().requires_grad_(False)
    m = mask_of([8, 5], 8)
    x, g = torch.randn(2, 16, 8, dtype=f64), torch.randn(2, 4, 1, dtype=f64)
    a = sdp(x, m, g=g, reverse=True, noise_scale=0.)
    torch.manual_seed(123)
    assert torch.equal(a, sdp(x, m, g=g, reverse=True, noise_scale=0.)) and a.shape == (2, 1, 8)
    assert torch.equal(a[1, :, 5:], torch.zeros(1, 3, dtype=f64))
    torch.manual_seed(7); logw = sdp(x, m, g=g, reverse=True, noise_scale=0.8)
    torch.manual_seed(7); z = torch.randn(2, 2, 8, dtype=f64) * 0.8
    h = sdp.condition(x, m, g)
    for flow in reversed(sdp.flows): z = flow(z, m, g=h, reverse=True)
    torch.testing.assert_close(logw, z[:, :1], rtol=0, atol=1e-12)
    assert (logw - a).abs().max() > 1e-3                     # noise does something


def test_sdp_main_flow_inverts_training_direction():
    sdp = randomise(tiny_sdp()).eval().requires_grad_(False)
    m = mask_of([8, 6], 8)
    h = sdp.condition(torch.randn(2, 16, 8, dtype=f64), m)
    d_u = (torch.rand(2, 1, 8, dtype=f64) * 8 + 0.5) * m
    z, ld_total = sdp.log_flow(d_u, m)
    z = torch.cat([z, torch.randn(2, 1, 8, dtype=f64) * m], 1)
    for flow in sdp.flows:
        z, ld = flow(z, m, g=h); ld_total = ld_total + ld
    for flow in reversed(sdp.flows): z = flow(z, m, g=h, reverse=True)
    torch.testing.assert_close(sdp.log_flow(z[:, :1], m, reverse=True), d_u, rtol=0, atol=1e-10)


def test_sdp_nll_decreases_with_training():
    torch.manual_seed(0)
    types = torch.randint(0, 3, (2, 6))
    x = (torch.randn(3, 8) * 2)[types].transpose(1, 2)
    m = mask_of([6, 6], 6).float()
    w = torch.tensor([2., 5., 9.])[types].unsqueeze(1)
    sdp = StochasticDurationPredictor(8, 8, 3, 0.1)

    def evaluate():
        sdp.eval(); torch.manual_seed(42)
        with torch.no_grad(): v = sdp(x, m, w).sum() / m.sum()
        sdp.train(); return v.item()

    before = evaluate()
    opt = torch.optim.Adam(sdp.parameters(), 1e-2)
    for _ in range(20):
        loss = sdp(x, m, w).sum() / m.sum()
        opt.zero_grad(); loss.backward(); opt.step()
    after = evaluate()
    assert math.isfinite(before) and math.isfinite(after)
    assert after < before - 0.3, (before, after)


def test_sdp_bound_against_exact_likelihood_by_quadrature():
    """Oracle for the whole density computation (eq. 6): for one token, log P(d|c) = log ∫∫ p(d−u, ν|c) du dν by
    midpoint quadrature over u ∈ (0,1), ν ∈ (−12, 12). The SDP's samples −nll must lie below it on average
    (the bound), and their importance-weighted average log-mean-exp must converge to it (this only holds if
    log q is the correctly normalised density of the posterior flows, sigmoid included)."""
    sdp = StochasticDurationPredictor(16, 16, 3, 0.0).double().eval().requires_grad_(False)
    with torch.no_grad():
        for l in sdp.flows:
            if isinstance(l, ConvFlow): l.proj.weight.normal_(0, .2); l.proj.bias.normal_(0, .2)
    x, d = torch.randn(1, 16, 1, dtype=f64), 3.
    n_u, n_nu = 50, 200
    u = (torch.arange(n_u, dtype=f64) + .5) / n_u
    nu = torch.linspace(-12, 12, n_nu, dtype=f64)
    U, NU = torch.meshgrid(u, nu, indexing='ij')
    N = U.numel(); m = torch.ones(N, 1, 1, dtype=f64)
    h = sdp.condition(x, m[:1]).expand(N, -1, -1)
    z0, logdet = sdp.log_flow(d - U.reshape(N, 1, 1), m)
    z = torch.cat([z0, NU.reshape(N, 1, 1)], 1)
    for flow in sdp.flows:
        z, ld = flow(z, m, g=h); logdet = logdet + ld
    log_p = (-0.5 * (math.log(2 * math.pi) + z ** 2)).sum([1, 2]) + logdet
    exact = (torch.logsumexp(log_p, 0) + math.log(nu[1] - nu[0]) - math.log(n_u)).item()
    K = 3000
    samples = -sdp(x.expand(K, -1, -1), m[:K], torch.full((K, 1, 1), d, dtype=f64))
    iw = (torch.logsumexp(samples, 0) - math.log(K)).item()
    assert samples.mean().item() < exact - 0.5
    assert abs(iw - exact) < 0.35, (iw, exact)


# ---------------------------------------------------------------- deterministic DP

def test_duration_predictor_learns_and_detaches():
    torch.manual_seed(0)
    types = torch.randint(0, 3, (2, 8))
    x = (torch.randn(3, 16) * 2)[types].transpose(1, 2).requires_grad_()
    m = mask_of([8, 6], 8).float()
    target = torch.log(torch.tensor([2., 5., 9.])[types].unsqueeze(1) + 1e-6) * m
    dp = DurationPredictor(16, 32, 3, 0.0, gin_channels=4)
    g = torch.randn(2, 4, 1, requires_grad=True)
    opt = torch.optim.Adam(dp.parameters(), 1e-2)
    losses = []
    for _ in range(40):
        logw = dp(x, m, g=g)
        loss = ((logw - target) ** 2).sum() / m.sum()
        opt.zero_grad(); loss.backward(); opt.step(); losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    assert x.grad is None and g.grad is None
    assert torch.equal(logw[1, :, 6:], torch.zeros(1, 2))
