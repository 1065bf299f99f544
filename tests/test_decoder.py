"""HiFi-GAN generator: official `dec.*` layout and parameter counts, both checkpoint key layouts load,
upsampling arithmetic, weight-norm removal, residual-block receptive fields, conditioning, bad input."""
import math
from reference import rows, param_count, layout
import pytest
import torch
from vits_nb.decoder import Generator, ResBlock1, ResBlock2, LRELU_SLOPE
from vits_nb.commons import weight_norm

LJS = dict(initial_channel=192, resblock='1', resblock_kernel_sizes=[3, 7, 11],
           resblock_dilation_sizes=[[1, 3, 5]] * 3, upsample_rates=[8, 8, 2, 2],
           upsample_initial_channel=512, upsample_kernel_sizes=[16, 16, 4, 4])
TINY = dict(LJS, initial_channel=16, upsample_initial_channel=32)
_G, _V = 'parametrizations.weight.original0', 'parametrizations.weight.original1'











def to_parametrizations(sd):
    "Rename official `weight_g`/`weight_v` keys to torch's parametrization names (order kept)."
    return {k.replace('weight_g', _G).replace('weight_v', _V): v for k, v in sd.items()}


@pytest.fixture(scope='module')
def ljs_dec(): return Generator(**LJS)


def test_ljs_layout_matches_official_in_order(ljs_dec):
    official = rows('state_dict_ljs_base_G.tsv', 'dec.')
    assert len(official) == 231
    assert layout(ljs_dec) == official


def test_parametrizations_layout_matches_fixture(ljs_dec):
    official = rows('state_dict_ljs_base_G_parametrizations_weight_norm.tsv', 'dec.')
    assert layout(to_parametrizations(ljs_dec.state_dict())) == official


def test_vctk_layout_has_cond():
    dec = Generator(**LJS, gin_channels=256)
    official = rows('state_dict_vctk_base_G.tsv', 'dec.')
    assert layout(dec) == official
    assert official[-2:] == [('cond.weight', [512, 256, 1]), ('cond.bias', [512])]


@pytest.mark.parametrize('model,gin', [('ljs_base_G', 0), ('vctk_base_G', 256)])
def test_parameter_counts(model, gin):
    with_g, plain = param_count(model, 'dec')
    dec = Generator(**LJS, gin_channels=gin)
    assert sum(p.numel() for p in dec.parameters()) == with_g
    dec.remove_weight_norm()   # g·v/|v| folded into one plain weight: the plain-conv count
    assert sum(p.numel() for p in dec.parameters()) == plain


def _load_changes_output(convert):
    torch.manual_seed(1); src = Generator(**TINY, gin_channels=8).eval()
    torch.manual_seed(2); dst = Generator(**TINY, gin_channels=8).eval()
    z, g = torch.randn(1, 16, 3), torch.randn(1, 8, 1)
    with torch.no_grad():
        want, before = src(z, g), dst(z, g)
        assert (want - before).abs().max() > 1e-3
        dst.load_state_dict(convert(src.state_dict()), strict=True)
        torch.testing.assert_close(dst(z, g), want, rtol=0, atol=0)


def test_legacy_layout_loads_strict_and_sets_weights():
    _load_changes_output(lambda sd: sd)   # state_dict() writes weight_g/weight_v


def test_parametrizations_layout_loads_strict_and_sets_weights():
    _load_changes_output(to_parametrizations)


def test_legacy_dict_with_only_g_changed_really_changes_g():
    "The g of a legacy dict is not silently dropped: doubling it doubles every weight-normed weight."
    torch.manual_seed(0); dec = Generator(**TINY)
    sd = dec.state_dict()
    sd['ups.0.weight_g'] = sd['ups.0.weight_g'] * 2
    w = dec.ups[0].weight.detach().clone()
    dec.load_state_dict(sd, strict=True)
    torch.testing.assert_close(dec.ups[0].weight.detach(), 2 * w)


def test_weight_normed_convs_keep_default_init():
    "Official init_weights is a no-op on weight-normed convs: g = |v| (weight == v), v from PyTorch's default init."
    torch.manual_seed(0); dec = Generator(**TINY)
    for name, m in dec.named_modules():
        if hasattr(m, 'parametrizations'):
            v = m.parametrizations.weight.original1
            torch.testing.assert_close(m.weight.detach(), v.detach())
            assert abs(v.std().item() - 0.01) > 0.005, name   # not N(0, 0.01)


@pytest.mark.parametrize('frames', [1, 5, 17])
def test_output_length_is_frames_times_hop(frames):
    assert math.prod(LJS['upsample_rates']) == 256
    dec = Generator(**TINY).eval()
    with torch.no_grad(): y = dec(torch.randn(2, 16, frames))
    assert y.shape == (2, 1, frames * 256)
    assert y.abs().max() < 1


def test_each_upsampling_layer_multiplies_length_exactly():
    dec = Generator(**TINY)
    x = torch.randn(1, 32, 5)
    for up, u in zip(dec.ups, LJS['upsample_rates']):
        y = up(x)
        assert y.shape[-1] == x.shape[-1] * u
        x = torch.randn(1, y.shape[1], y.shape[-1])


def test_remove_weight_norm_keeps_output():
    torch.manual_seed(0)
    dec = Generator(**TINY, gin_channels=4).double().eval()
    z, g = torch.randn(2, 16, 4, dtype=torch.float64), torch.randn(2, 4, 1, dtype=torch.float64)
    with torch.no_grad():
        before = dec(z, g)
        dec.remove_weight_norm()
        torch.testing.assert_close(dec(z, g), before, rtol=1e-12, atol=1e-12)
    keys = list(dec.state_dict())
    assert not any('weight_g' in k or 'weight_v' in k or 'parametrizations' in k for k in keys)
    assert 'ups.0.weight' in keys and 'resblocks.8.convs2.2.weight' in keys


def test_conditioning_changes_output_and_is_required_to_exist():
    dec = Generator(**TINY, gin_channels=8).eval()
    z = torch.randn(1, 16, 3)
    with torch.no_grad():
        assert (dec(z, torch.randn(1, 8, 1)) - dec(z, torch.randn(1, 8, 1))).abs().max() > 1e-4
    with pytest.raises(ValueError, match='gin_channels=0'):
        Generator(**TINY)(z, torch.randn(1, 8, 1))


def _reach(block, t=160, c=3):
    x = torch.randn(1, c, t, dtype=torch.float64)
    x2 = x.clone(); x2[0, :, t // 2] += 1
    with torch.no_grad(): d = (block(x2) - block(x))[0].abs().sum(0)
    return (d > 0).nonzero().flatten() - t // 2


@pytest.mark.parametrize('k,dil', [(3, (1, 3, 5)), (7, (1, 3, 5)), (11, (1, 3, 5)), (5, (2, 4))])
def test_resblock1_receptive_field(k, dil):
    r = sum((k - 1) // 2 * (d + 1) for d in dil)
    assert _reach(ResBlock1(3, k, dil).double()).tolist() == list(range(-r, r + 1))


@pytest.mark.parametrize('k,dil', [(3, (1, 3)), (5, (2, 6))])
def test_resblock2_receptive_field(k, dil):
    r = sum((k - 1) // 2 * d for d in dil)
    reach = _reach(ResBlock2(3, k, dil).double())
    assert (reach.min(), reach.max()) == (-r, r)
    if 1 in dil: assert reach.tolist() == list(range(-r, r + 1))
    else: assert (reach % math.gcd(*dil) == 0).all()   # all dilations even: odd offsets are never reached


def test_resblock_layouts_and_masks():
    assert [k for k in ResBlock1(4).state_dict() if k.endswith('weight_v')] == \
        [f'convs{j}.{i}.weight_v' for j in (1, 2) for i in range(3)]
    assert [k for k in ResBlock2(4).state_dict() if k.endswith('weight_v')] == ['convs.0.weight_v', 'convs.1.weight_v']
    x, mask = torch.randn(2, 4, 9), torch.ones(2, 1, 9)
    mask[0, :, 5:] = 0
    for rb in (ResBlock1(4), ResBlock2(4)):
        y = rb(x, mask)
        assert y[0, :, 5:].abs().sum() == 0
        # masked input frames do not leak into valid ones
        x2 = x.clone(); x2[0, :, 5:] = 100
        torch.testing.assert_close(rb(x2, mask), y)


def test_resblock2_generator_runs():
    dec = Generator(16, '2', [3, 5], [[1, 2], [2, 6]], [8, 8, 4], 32, [16, 16, 8]).eval()
    with torch.no_grad(): assert dec(torch.randn(1, 16, 3)).shape == (1, 1, 3 * 256)


def test_leaky_relu_slope():
    assert LRELU_SLOPE == 0.1


@pytest.mark.parametrize('kw,msg', [
    (dict(upsample_rates=[8, 8]), 'differ in length'),
    (dict(resblock_kernel_sizes=[3, 7]), 'differ in length'),
    (dict(upsample_kernel_sizes=[16, 15, 4, 4]), 'even number'),
    (dict(upsample_kernel_sizes=[4, 16, 4, 4]), 'even number'),
    (dict(resblock='3'), 'resblock must be'),
])
def test_bad_config_is_named(kw, msg):
    with pytest.raises(ValueError, match=msg): Generator(**dict(TINY, **kw))
