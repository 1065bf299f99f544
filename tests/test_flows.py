"""The prior flow: official layout, invertibility, log-determinants against autograd, masking, conditioning."""
import pytest
from reference import shapes, param_count
import torch
from torch.autograd.functional import jacobian

from vits_nb.commons import sequence_mask
from vits_nb.flows import Flip, ResidualCouplingLayer, ResidualCouplingBlock








def randomise_post(layer, scale=0.3):
    with torch.no_grad():
        layer.post.weight.normal_(0, scale); layer.post.bias.normal_(0, scale)
    return layer


def mask_of(lengths, t):
    return sequence_mask(torch.tensor(lengths), t).unsqueeze(1).double()


@pytest.mark.parametrize('tsv,model,gin', [('state_dict_ljs_base_G.tsv', 'ljs_base_G', 0),
                                           ('state_dict_vctk_base_G.tsv', 'vctk_base_G', 256)])
def test_official_layout_and_param_count(tsv, model, gin):
    flow = ResidualCouplingBlock(192, 192, 5, 1, 4, gin_channels=gin)
    ours = {k: list(v.shape) for k, v in flow.state_dict().items()}
    assert ours == shapes(tsv, 'flow.')
    n_all, n_plain = param_count(model, 'flow')
    assert sum(p.numel() for p in flow.parameters()) == n_all
    n_g = sum(v.numel() for k, v in flow.state_dict().items() if k.endswith('weight_g'))
    assert n_all - n_g == n_plain


def test_post_is_zero_initialised_so_flow_starts_as_identity():
    flow = ResidualCouplingBlock(8, 16, 5, 1, 2, gin_channels=4).double().requires_grad_(False)
    for layer in flow.flows[::2]:
        assert layer.post.weight.abs().sum() == 0 and layer.post.bias.abs().sum() == 0
    m = mask_of([6, 4], 6)
    x = torch.randn(2, 8, 6, dtype=torch.float64) * m
    # two flips per pair of couplings: identity couplings + an even number of flips = identity
    assert torch.equal(flow(x, m, g=torch.randn(2, 4, 1, dtype=torch.float64)), x)


def test_flip():
    x = torch.randn(2, 3, 5)
    y, logdet = Flip()(x, None)
    assert torch.equal(y, x[:, [2, 1, 0]]) and torch.equal(logdet, torch.zeros(2))
    assert torch.equal(Flip()(y, None, reverse=True), x)


@pytest.mark.parametrize('mean_only', [False, True])
def test_coupling_inverse_and_logdet_vs_autograd(mean_only):
    layer = randomise_post(ResidualCouplingLayer(4, 16, 3, 2, 3, gin_channels=3, mean_only=mean_only))
    layer = layer.double().eval().requires_grad_(False)
    m = mask_of([6, 4], 6)
    x = torch.randn(2, 4, 6, dtype=torch.float64) * m
    g = torch.randn(2, 3, 1, dtype=torch.float64)
    y, logdet = layer(x, m, g=g)
    assert not torch.allclose(y, x)
    torch.testing.assert_close(layer(y, m, g=g, reverse=True), x, rtol=0, atol=1e-12)
    for i, n in enumerate([6, 4]):
        f = lambda v: layer(v.view(1, 4, n), m[i:i + 1, :, :n], g=g[i:i + 1])[0].reshape(-1)
        J = jacobian(f, x[i, :, :n].reshape(-1))
        torch.testing.assert_close(torch.linalg.slogdet(J)[1], logdet[i], rtol=0, atol=1e-10)
    if mean_only:
        assert torch.equal(logdet, torch.zeros(2))      # exactly zero, not just close
    else:
        assert logdet.abs().min() > 1e-3                  # the affine variant really changes volume


def test_block_inverse_masking_conditioning():
    torch.manual_seed(1)
    flow = ResidualCouplingBlock(6, 16, 5, 1, 2, gin_channels=4).double().eval().requires_grad_(False)
    for layer in flow.flows[::2]: randomise_post(layer)
    m = mask_of([9, 5], 9)
    x = torch.randn(2, 6, 9, dtype=torch.float64) * m
    g = torch.randn(2, 4, 1, dtype=torch.float64)
    z_p = flow(x, m, g=g)
    torch.testing.assert_close(flow(z_p, m, g=g, reverse=True), x, rtol=0, atol=1e-12)
    assert torch.equal(z_p[1, :, 5:], torch.zeros(6, 4, dtype=torch.float64))
    junk = x.clone(); junk[1, :, 5:] = 1e3
    torch.testing.assert_close(flow(junk, m, g=g)[1, :, :5], z_p[1, :, :5], rtol=0, atol=1e-12)
    # each item only sees its own frames: batching does not mix items
    torch.testing.assert_close(flow(x[1:, :, :5], m[1:, :, :5], g=g[1:]), z_p[1:, :, :5], rtol=0, atol=1e-12)
    other = flow(x, m, g=torch.randn(2, 4, 1, dtype=torch.float64))
    assert (other - z_p).abs().max() > 1e-3
    f = lambda v: flow(v.view(1, 6, 9), m[:1], g=g[:1]).reshape(-1)
    torch.testing.assert_close(torch.linalg.slogdet(jacobian(f, x[0].reshape(-1)))[1],
                               torch.tensor(0., dtype=torch.float64), rtol=0, atol=1e-10)


def test_bad_input():
    with pytest.raises(ValueError, match='even'):
        ResidualCouplingLayer(5, 8, 3, 1, 1)
    layer = ResidualCouplingLayer(4, 8, 3, 1, 1)
    with pytest.raises(ValueError, match='channels'):
        layer(torch.randn(1, 6, 5), torch.ones(1, 1, 5))
