"""Losses: hand-computed values, the KL estimate against torch.distributions (exactly and by Monte Carlo),
LSGAN at the labels, feature matching gradients, masks, bad input."""
import pytest
import torch
from torch.distributions import Normal, kl_divergence
from vits_nb.losses import mel_loss, kl_loss, discriminator_loss, generator_loss, feature_loss


def test_mel_loss_hand_computed():
    y, y_hat = torch.tensor([[1., 2.], [3., 4.]]), torch.tensor([[1., 0.], [3., 5.]])
    assert mel_loss(y, y_hat).item() == pytest.approx(45 * 3 / 4)
    assert mel_loss(y, y_hat, c_mel=1).item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match='differ in shape'): mel_loss(y, y_hat[:1])


def _gaussians(b=2, h=3, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, generator=g, dtype=torch.float64) * 0.5 for _ in range(5)]


def test_kl_hand_computed():
    # one channel, two frames: logs_p=log 2, logs_q=0, m_p=1, z_p=3 -> log2 - 0.5 + 0.5·4/4 = log 2
    z_p = torch.tensor([[[3., 0.]]]); m_p = torch.tensor([[[1., 0.]]])
    logs_p = torch.tensor([[[0.6931471805599453, 0.]]]); logs_q = torch.zeros(1, 1, 2)
    mask = torch.ones(1, 1, 2)
    # frame 2: 0 - 0 - 0.5 + 0 = -0.5
    assert kl_loss(z_p, logs_q, m_p, logs_p, mask).item() == pytest.approx((0.6931471805599453 - 0.5) / 2)
    mask[..., 1] = 0
    assert kl_loss(z_p, logs_q, m_p, logs_p, mask).item() == pytest.approx(0.6931471805599453)


def test_kl_equals_neg_entropy_minus_log_prior_exactly():
    "Per element: -H[q] - log N(z_p; m_p, σ_p), constants included; channels summed, valid frames averaged."
    m_q, logs_q, m_p, logs_p, z_p = _gaussians()
    mask = torch.ones(2, 1, 6, dtype=torch.float64); mask[0, :, 4:] = 0
    oracle = -Normal(m_q, logs_q.exp()).entropy() - Normal(m_p, logs_p.exp()).log_prob(z_p)
    want = (oracle * mask).sum() / mask.sum()
    torch.testing.assert_close(kl_loss(z_p, logs_q, m_p, logs_p, mask), want, rtol=1e-12, atol=1e-12)


def test_kl_ignores_masked_frames():
    m_q, logs_q, m_p, logs_p, z_p = _gaussians()
    mask = torch.ones(2, 1, 6, dtype=torch.float64); mask[1, :, 2:] = 0
    base = kl_loss(z_p, logs_q, m_p, logs_p, mask)
    z2, lp2 = z_p.clone(), logs_p.clone()
    z2[1, :, 2:] = 1e3; lp2[1, :, 2:] = -5
    assert kl_loss(z2, logs_q, m_p, lp2, mask).item() == base.item()


def test_kl_monte_carlo_matches_full_log_ratio_and_analytic_kl():
    "Identity flow (z_p = z ~ q): E[kl_loss] = E[log q(z) - log p(z)] = KL(q || p)."
    m_q, logs_q, m_p, logs_p, _ = (v[:1] for v in _gaussians(seed=3))
    n, h, t = 40_000, 3, 6
    eps = torch.randn(n, h, t, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z = m_q + logs_q.exp() * eps
    ex = lambda v: v.expand(n, h, t)
    est = kl_loss(z, ex(logs_q), ex(m_p), ex(logs_p), torch.ones(n, 1, t)).item()
    full = (Normal(m_q, logs_q.exp()).log_prob(z) - Normal(m_p, logs_p.exp()).log_prob(z)).sum(1).mean().item()
    analytic = kl_divergence(Normal(m_q, logs_q.exp()), Normal(m_p, logs_p.exp())).sum(1).mean().item()
    assert est == pytest.approx(analytic, abs=0.03)
    assert full == pytest.approx(analytic, abs=0.03)


def test_kl_of_identical_gaussians_is_zero_in_expectation():
    m, logs, *_ = (v[:1] for v in _gaussians(seed=5))
    n, h, t = 40_000, 3, 6
    z = m + logs.exp() * torch.randn(n, h, t, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ex = lambda v: v.expand(n, h, t)
    assert kl_loss(z, ex(logs), ex(m), ex(logs), torch.ones(n, 1, t)).item() == pytest.approx(0, abs=0.02)
    # and exactly zero when the sample sits where its squared standard score is 1 (ε² = 1)
    assert kl_loss(m + logs.exp(), logs, m, logs, torch.ones(1, 1, t)).item() == pytest.approx(0, abs=1e-6)


def test_kl_bad_shapes_are_named():
    m_q, logs_q, m_p, logs_p, z_p = _gaussians()
    with pytest.raises(ValueError, match='same shape'): kl_loss(z_p[:, :2], logs_q, m_p, logs_p, torch.ones(2, 1, 6))
    with pytest.raises(ValueError, match='z_mask'): kl_loss(z_p, logs_q, m_p, logs_p, torch.ones(2, 3, 6))
    with pytest.raises(ValueError, match='z_mask'): kl_loss(z_p, logs_q, m_p, logs_p, torch.ones(2, 1, 5))


def test_lsgan_at_the_labels():
    real, fake = [torch.ones(2, 9)] * 6, [torch.zeros(2, 9)] * 6
    loss, r, g = discriminator_loss(real, fake)
    assert loss.item() == 0 and r == [0.] * 6 and g == [0.] * 6
    loss, r, g = discriminator_loss(fake, real)            # D says real=0, fake=1: worst labels
    assert loss.item() == 12 and r == [1.] * 6 and g == [1.] * 6
    assert generator_loss(real)[0].item() == 0
    loss, parts = generator_loss(fake)
    assert loss.item() == 6 and [p.item() for p in parts] == [1.] * 6


def test_lsgan_hand_computed_and_gradients():
    dr, dg = torch.tensor([0.5, 1.0, 2.0]), torch.tensor([0.5, -1.0, 0.0], requires_grad=True)
    loss, r, g = discriminator_loss([dr], [dg])
    assert r == [pytest.approx((0.25 + 0 + 1) / 3)] and g == [pytest.approx((0.25 + 1 + 0) / 3)]
    loss.backward()
    torch.testing.assert_close(dg.grad, 2 * dg.detach() / 3)     # d/dg mean(g²)
    dg2 = torch.tensor([0.5, 3.0], requires_grad=True)
    loss, parts = generator_loss([dg2])
    assert loss.item() == pytest.approx((0.25 + 4) / 2)
    loss.backward()
    torch.testing.assert_close(dg2.grad, (dg2.detach() - 1))    # d/dg mean((1-g)²) = 2(g-1)/2
    with pytest.raises(ValueError, match='generated'): discriminator_loss([dr, dr], [dg])


def test_feature_loss_hand_computed_and_detached():
    fr = [[torch.tensor([1., 2.], requires_grad=True), torch.zeros(1, 3)], [torch.tensor([3.])]]
    fg = [[torch.tensor([0., 4.], requires_grad=True), torch.tensor([[1., -1., 4.]])], [torch.tensor([3.5])]]
    loss = feature_loss(fr, fg)
    assert loss.item() == pytest.approx(2 * (1.5 + 2.0 + 0.5))
    loss.backward()
    assert fr[0][0].grad is None
    torch.testing.assert_close(fg[0][0].grad, torch.tensor([-1., 1.]))   # 2·sign(g - r)/N_l, N_l = 2
    assert feature_loss(fr, fr).item() == 0
    with pytest.raises(ValueError, match='generated'): feature_loss(fr, fg[:1])


def test_half_precision_inputs_compute_in_float32():
    "fp16 inputs (mixed precision) are promoted to float32; float64 stays float64."
    m_q, logs_q, m_p, logs_p, z_p = _gaussians()
    mask = torch.ones(2, 1, 6)
    half = kl_loss(z_p.half(), logs_q.half(), m_p.half(), logs_p.half(), mask.half())
    assert half.dtype == torch.float32
    assert kl_loss(z_p, logs_q, m_p, logs_p, mask.double()).dtype == torch.float64
    assert discriminator_loss([torch.ones(2, dtype=torch.half)], [torch.zeros(2, dtype=torch.half)])[0].dtype == torch.float32
    assert generator_loss([torch.ones(2, dtype=torch.half)])[0].dtype == torch.float32
    assert feature_loss([[torch.ones(2, dtype=torch.half)]], [[torch.zeros(2, dtype=torch.half)]]).dtype == torch.float32
