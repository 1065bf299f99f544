"""Discriminators: official layout (both weight-norm key styles), parameter counts, strict loads that
really set weights, the period fold, feature maps, column independence, spectral norm, bad input."""
import math
from reference import rows, layout
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from vits_nb.discriminators import period_view, DiscriminatorP, DiscriminatorS, MultiPeriodDiscriminator
from vits_nb.commons import remove_weight_norm

_G, _V = 'parametrizations.weight.original0', 'parametrizations.weight.original1'








def to_parametrizations(sd):
    return {k.replace('weight_g', _G).replace('weight_v', _V): v for k, v in sd.items()}


@pytest.fixture(scope='module')
def mpd():
    torch.manual_seed(0)
    return MultiPeriodDiscriminator()


def test_layout_matches_official_in_order(mpd):
    official = rows('state_dict_D.tsv')
    assert len(official) == 111
    assert layout(mpd.state_dict()) == official


def test_parametrizations_layout_matches_fixture(mpd):
    official = rows('state_dict_D_parametrizations_weight_norm.tsv')
    assert layout(to_parametrizations(mpd.state_dict())) == official


def test_parameter_counts(fixtures):
    rows = [l.split('\t') for l in (fixtures / 'param_counts.tsv').read_text().splitlines() if l.startswith('D\t')]
    want = {r[1].split()[0]: (int(r[2]), int(r[3])) for r in rows}
    torch.manual_seed(0); mpd = MultiPeriodDiscriminator()
    assert sum(p.numel() for p in mpd.parameters()) == want['TOTAL'][0] == 46_747_132
    for i, d in enumerate(mpd.discriminators):
        assert sum(p.numel() for p in d.parameters()) == want[f'discriminators.{i}'][0]
        for l in [*d.convs, d.conv_post]: remove_weight_norm(l)   # plain-conv equivalent
        assert sum(p.numel() for p in d.parameters()) == want[f'discriminators.{i}'][1]
    assert sum(p.numel() for p in mpd.parameters()) == want['TOTAL'][1]


@pytest.mark.parametrize('make', [DiscriminatorS, lambda: DiscriminatorP(3)], ids=['S', 'P3'])
@pytest.mark.parametrize('convert', [lambda sd: sd, to_parametrizations], ids=['legacy', 'parametrizations'])
def test_state_dict_loads_strict_and_sets_weights(make, convert):
    torch.manual_seed(1); src = make()
    torch.manual_seed(2); dst = make()
    y = torch.randn(1, 1, 600)
    with torch.no_grad():
        want, before = src(y), dst(y)
        assert (want[0] - before[0]).abs().max() > 1e-4
        dst.load_state_dict(convert(src.state_dict()), strict=True)
        got = dst(y)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    for a, b in zip(got[1], want[1]): torch.testing.assert_close(a, b, rtol=0, atol=0)


@settings(max_examples=60, deadline=None)
@given(t=st.integers(1, 200), period=st.sampled_from([2, 3, 5, 7, 11]), b=st.integers(1, 3))
def test_period_view_round_trips(t, period, b):
    x = torch.randn(b, 1, t, dtype=torch.float64)
    n_pad = -t % period
    if n_pad >= t:
        with pytest.raises(ValueError, match='too short'): period_view(x, period)
        return
    v = period_view(x, period)
    padded = F.pad(x, (0, n_pad), 'reflect') if n_pad else x
    assert v.shape == (b, 1, math.ceil(t / period), period)
    assert torch.equal(v.flatten(2), padded)                       # fold then flatten = padded input
    assert torch.equal(v.flatten(2)[..., :t], x)                   # the original samples are untouched
    if n_pad: assert torch.equal(padded[..., t:], x[..., t - 2 - torch.arange(n_pad)])   # mirror, edge not repeated
    i, j = (t + n_pad) // period - 1, period - 1
    assert torch.equal(v[..., i, j], padded[..., i * period + j])  # entry (i, j) is sample i·p + j


def test_feature_maps_per_discriminator(mpd):
    y, y_hat = torch.randn(2, 1, 1000), torch.randn(2, 1, 1000)
    with torch.no_grad(): y_d_rs, y_d_gs, fmap_rs, fmap_gs = mpd(y, y_hat)
    assert [len(f) for f in fmap_rs] == [len(f) for f in fmap_gs] == [7, 6, 6, 6, 6, 6]
    assert len(y_d_rs) == len(y_d_gs) == 6
    # the scores are the flattened last feature map
    for d_r, f in zip(y_d_rs, fmap_rs): assert torch.equal(d_r, f[-1].flatten(1))
    # period discriminators keep p columns in every map; the channels are the official ones
    for p, f in zip((2, 3, 5, 7, 11), fmap_rs[1:]):
        assert [m.shape[1] for m in f] == [32, 128, 512, 1024, 1024, 1]
        assert all(m.shape[-1] == p for m in f)
    assert [m.shape[1:] for m in fmap_rs[0]] == [(16, 1000), (64, 250), (256, 63), (1024, 16), (1024, 4), (1024, 4), (1, 4)]
    # one stacked pass equals separate passes of each discriminator on y and on y_hat
    with torch.no_grad():
        for d, d_r, d_g, f_r, f_g in zip(mpd.discriminators, y_d_rs, y_d_gs, fmap_rs, fmap_gs):
            (s_r, sf_r), (s_g, sf_g) = d(y), d(y_hat)
            torch.testing.assert_close(d_r, s_r); torch.testing.assert_close(d_g, s_g)
            for a, b in zip(f_r + f_g, sf_r + sf_g): torch.testing.assert_close(a, b)
    # real and generated go through the same function
    with torch.no_grad(): r = mpd(y, y)
    for a, b in zip(r[0], r[1]): assert torch.equal(a, b)


@pytest.mark.parametrize('period', [2, 5])
def test_period_columns_do_not_mix(period):
    torch.manual_seed(0)
    d = DiscriminatorP(period).eval()
    y = torch.randn(2, 1, 400)
    k = 203
    y2 = y.clone(); y2[0, 0, k] += 1
    with torch.no_grad(): delta = (d(y2)[0] - d(y)[0]).view(2, -1, period).abs().sum(1)
    col = k % period
    assert delta[0, col] > 0
    assert delta[0, torch.arange(period) != col].sum() == 0 and delta[1].sum() == 0


def test_spectral_norm_option_builds_runs_and_normalises():
    torch.manual_seed(0)
    mpd = MultiPeriodDiscriminator(use_spectral_norm=True)
    keys = list(mpd.state_dict())
    assert 'discriminators.0.convs.0.weight_orig' in keys and 'discriminators.5.conv_post.weight_u' in keys
    assert not any('weight_g' in k for k in keys)
    y, y_hat = torch.randn(2, 1, 512), torch.randn(2, 1, 512)
    out = mpd(y, y_hat)
    assert all(torch.isfinite(s).all() for s in out[0] + out[1])
    assert [len(f) for f in out[2]] == [7, 6, 6, 6, 6, 6]
    for conv, x in ((mpd.discriminators[0].convs[0], torch.randn(1, 1, 8)),
                    (mpd.discriminators[1].convs[0], torch.randn(1, 1, 8, 2)),
                    (mpd.discriminators[3].convs[1], torch.randn(1, 32, 8, 5))):
        for _ in range(200): conv(x)   # each training-mode call runs one power iteration
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert abs(sigma.item() - 1) < 1e-3   # largest singular value normalised to 1


def test_bad_input_is_named(mpd):
    with pytest.raises(ValueError, match='differ in shape'): mpd(torch.randn(1, 1, 300), torch.randn(1, 1, 200))
    with pytest.raises(ValueError, match=r'\[b, 1, t\]'): mpd(torch.randn(1, 2, 300), torch.randn(1, 2, 300))
    with pytest.raises(ValueError, match='too short'): DiscriminatorP(11)(torch.randn(1, 1, 4))


def test_gradients_reach_only_what_they_should(mpd):
    "The generator output gets gradient from its own scores only; the real signal's half gets none into y_hat."
    y = torch.randn(1, 1, 700)
    y_hat = (0.1 * torch.randn(1, 1, 700)).requires_grad_()
    y_d_rs, y_d_gs, _, _ = mpd(y, y_hat)
    sum(s.sum() for s in y_d_rs).backward()
    assert y_hat.grad is None or y_hat.grad.abs().sum() == 0
    mpd.zero_grad(); y_hat.grad = None
    y_d_rs, y_d_gs, _, _ = mpd(y, y_hat)
    sum(s.sum() for s in y_d_gs).backward()
    assert y_hat.grad.abs().sum() > 0
    mpd.zero_grad()
