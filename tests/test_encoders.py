"""Text encoder and posterior encoder: official layout, relative-position index tricks against naive loops,
attention against a loop oracle, masking, padding invariance, reparameterisation, conditioning."""
import math
from reference import rows, param_count, layout
import pytest
import torch

from vits_nb.commons import sequence_mask
from vits_nb.text_encoder import (get_relative_embeddings, relative_position_to_absolute_position,
                                  absolute_position_to_relative_position, attention_bias_proximal,
                                  add_relative_key_logits, relative_weights,
                                  MultiHeadAttention, FFN, Encoder, TextEncoder)
from vits_nb.posterior_encoder import PosteriorEncoder











# ---------------------------------------------------------------- official layout

@pytest.mark.parametrize('tsv,model', [('state_dict_ljs_base_G.tsv', 'ljs_base_G'),
                                       ('state_dict_vctk_base_G.tsv', 'vctk_base_G')])
def test_text_encoder_official_layout(tsv, model):
    enc_p = TextEncoder(178, 192, 192, 768, 2, 6, 3, 0.1)
    want = rows(tsv, 'enc_p.')
    assert len(want) > 100 and layout(enc_p) == want
    n_all, n_plain = param_count(model, 'enc_p')
    assert sum(p.numel() for p in enc_p.parameters()) == n_all == n_plain


@pytest.mark.parametrize('tsv,model,gin', [('state_dict_ljs_base_G.tsv', 'ljs_base_G', 0),
                                           ('state_dict_vctk_base_G.tsv', 'vctk_base_G', 256)])
def test_posterior_encoder_official_layout(tsv, model, gin):
    enc_q = PosteriorEncoder(513, 192, 192, 5, 1, 16, gin_channels=gin)
    want = rows(tsv, 'enc_q.')
    assert len(want) > 90 and layout(enc_q) == want
    n_all, n_plain = param_count(model, 'enc_q')
    assert sum(p.numel() for p in enc_q.parameters()) == n_all
    n_g = sum(v.numel() for k, v in enc_q.state_dict().items() if k.endswith('weight_g'))
    assert n_all - n_g == n_plain


def test_official_state_dict_loads_strict_and_changes_output():
    "A state dict with official keys (weight_g/weight_v) loads strict and really sets the weights."
    src = PosteriorEncoder(16, 4, 8, 5, 1, 3, gin_channels=2).double().eval()
    dst = PosteriorEncoder(16, 4, 8, 5, 1, 3, gin_channels=2).double().eval()
    sd = src.state_dict()
    assert any(k.endswith('weight_g') for k in sd) and not any('parametrizations' in k for k in sd)
    x, lengths, g = torch.randn(2, 16, 9, dtype=torch.float64), torch.tensor([9, 6]), torch.randn(2, 2, 1, dtype=torch.float64)
    with torch.no_grad():
        before = dst(x, lengths, g=g, noise_scale=0.0)[1]
        dst.load_state_dict(sd, strict=True)
        after, want = dst(x, lengths, g=g, noise_scale=0.0)[1], src(x, lengths, g=g, noise_scale=0.0)[1]
    assert not torch.allclose(before, want)
    torch.testing.assert_close(after, want, rtol=0, atol=0)
    te_src, te_dst = (TextEncoder(10, 4, 8, 16, 2, 2, 3, 0.0).eval() for _ in range(2))
    te_dst.load_state_dict(te_src.state_dict(), strict=True)
    ids = torch.randint(0, 10, (2, 5))
    torch.testing.assert_close(te_dst(ids, torch.tensor([5, 3]))[1], te_src(ids, torch.tensor([5, 3]))[1], rtol=0, atol=0)


def test_initialisation():
    torch.manual_seed(0)
    mha = MultiHeadAttention(192, 192, 2, window_size=4)
    # emb_rel ~ N(0, k_channels^-1/2), k_channels = 96
    for e in (mha.emb_rel_k, mha.emb_rel_v):
        assert e.shape == (1, 9, 96) and abs(e.std().item() - 96 ** -0.5) < 0.01
    # conv_q/k/v Xavier uniform: bound sqrt(6 / (fan_in + fan_out)) = sqrt(6/384)
    bound = math.sqrt(6 / 384)
    for c in (mha.conv_q, mha.conv_k, mha.conv_v):
        w = c.weight
        assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert MultiHeadAttention(8, 8, 2, heads_share=False, window_size=3).emb_rel_v.shape == (2, 7, 4)
    assert not hasattr(MultiHeadAttention(8, 8, 2), 'emb_rel_k')
    prox = MultiHeadAttention(8, 8, 2, proximal_init=True)
    assert torch.equal(prox.conv_k.weight, prox.conv_q.weight) and torch.equal(prox.conv_k.bias, prox.conv_q.bias)
    te = TextEncoder(178, 192, 192, 768, 2, 6, 3, 0.1)
    assert abs(te.emb.weight.std().item() - 192 ** -0.5) < 0.002


# ---------------------------------------------------------------- relative positions

@pytest.mark.parametrize('window', [1, 4])
@pytest.mark.parametrize('length', [1, 2, 4, 5, 6, 13])
def test_relative_embeddings_vs_definition(window, length):
    emb = torch.randn(2, 2 * window + 1, 3, dtype=torch.float64)
    got = get_relative_embeddings(emb, length)
    assert got.shape == (2, 2 * length - 1, 3)
    for c in range(2 * length - 1):
        r = c - (length - 1)
        want = emb[:, r + window] if abs(r) <= window else torch.zeros(2, 3, dtype=torch.float64)
        assert torch.equal(got[:, c], want)


@pytest.mark.parametrize('length', [1, 2, 3, 8, 17])
def test_skewing_vs_naive_loops(length):
    l = length
    x = torch.randn(2, 3, l, 2 * l - 1, dtype=torch.float64)
    y = relative_position_to_absolute_position(x)
    p = torch.randn(2, 3, l, l, dtype=torch.float64)
    r = absolute_position_to_relative_position(p)
    want_r = torch.zeros_like(r)
    for i in range(l):
        for j in range(l):
            assert torch.equal(y[:, :, i, j], x[:, :, i, j - i + l - 1])
            want_r[:, :, i, j - i + l - 1] = p[:, :, i, j]
    assert torch.equal(r, want_r)          # including exact zeros for keys that do not exist
    assert torch.equal(relative_position_to_absolute_position(r), p)


@pytest.mark.parametrize('window', [1, 4])
@pytest.mark.parametrize('length', [1, 2, 4, 5, 6, 13])
def test_banded_relative_terms_equal_skewing(window, length):
    "The diagonal-band implementation used by MultiHeadAttention equals the skewing formulation."
    l = length
    for n_rel in (1, 3):
        emb = torch.randn(n_rel, 2 * window + 1, 4, dtype=torch.float64)
        q, s = torch.randn(2, 3, l, 4, dtype=torch.float64), torch.randn(2, 3, l, l, dtype=torch.float64)
        table = get_relative_embeddings(emb, l).unsqueeze(0)
        want = s + relative_position_to_absolute_position(q @ table.transpose(-2, -1))
        torch.testing.assert_close(add_relative_key_logits(s.clone(), q, emb), want, rtol=0, atol=1e-12)
        p = torch.softmax(s, -1)
        rw = relative_weights(p, window)
        assert rw.shape == (2, 3, l, 2 * window + 1)
        torch.testing.assert_close(rw @ emb.unsqueeze(0), absolute_position_to_relative_position(p) @ table, rtol=0, atol=1e-12)


def naive_attention(mha, x, valid):
    "Shaw et al. with loops; distances beyond the window use a zero vector (official behaviour)."
    q, k, v = mha.conv_q(x), mha.conv_k(x), mha.conv_v(x)
    b, c, t = x.shape; h, dk, w = mha.n_heads, mha.k_channels, mha.window_size
    out = torch.zeros(b, c, t, dtype=x.dtype)
    zero = torch.zeros(dk, dtype=x.dtype)
    for n in range(b):
        for hh in range(h):
            ek, ev = (e[0 if e.size(0) == 1 else hh] for e in (mha.emb_rel_k, mha.emb_rel_v))
            sl = slice(hh * dk, (hh + 1) * dk)
            for i in range(t):
                logits = []
                for j in range(t):
                    if not (valid[n, i] and valid[n, j]): logits.append(torch.tensor(-1e4, dtype=x.dtype)); continue
                    a_k = ek[j - i + w] if abs(j - i) <= w else zero
                    logits.append(q[n, sl, i] @ (k[n, sl, j] + a_k) / math.sqrt(dk))
                alpha = torch.softmax(torch.stack(logits), 0)
                for j in range(t):
                    a_v = ev[j - i + w] if abs(j - i) <= w else zero
                    out[n, sl, i] += alpha[j] * (v[n, sl, j] + a_v)
    return mha.conv_o(out)


@pytest.mark.parametrize('heads_share', [True, False])
@pytest.mark.parametrize('window', [1, 3])
def test_attention_vs_loop_oracle(heads_share, window):
    mha = MultiHeadAttention(12, 6, 3, window_size=window, heads_share=heads_share).double().eval().requires_grad_(False)
    valid = sequence_mask(torch.tensor([8, 5]), 8)
    attn_mask = (valid[:, None, :, None] & valid[:, None, None, :]).double()
    x = torch.randn(2, 12, 8, dtype=torch.float64)
    torch.testing.assert_close(mha(x, x, attn_mask), naive_attention(mha, x, valid), rtol=0, atol=1e-12)


def test_attention_gradients_vs_loop_oracle():
    "The in-place diagonal adds are autograd-safe: gradients w.r.t. input and every parameter match the loop oracle."
    mha = MultiHeadAttention(8, 8, 2, window_size=2).double().eval()
    valid = sequence_mask(torch.tensor([6, 4]), 6)
    attn_mask = (valid[:, None, :, None] & valid[:, None, None, :]).double()
    x = torch.randn(2, 8, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 8, 6, dtype=torch.float64) * valid[:, None]
    names, params = ['x', *dict(mha.named_parameters())], [x, *mha.parameters()]
    got = torch.autograd.grad((mha(x, x, attn_mask) * w).sum(), params)
    want = torch.autograd.grad((naive_attention(mha, x, valid) * w).sum(), params)
    assert got[names.index('emb_rel_k')].abs().sum() > 0 and got[names.index('emb_rel_v')].abs().sum() > 0
    for name, g1, g2 in zip(names, got, want): torch.testing.assert_close(g1, g2, rtol=0, atol=1e-11, msg=name)


def test_masked_keys_get_exactly_zero_attention():
    for dtype in (torch.float32, torch.float64):
        mha = MultiHeadAttention(16, 16, 2, window_size=4).to(dtype).eval().requires_grad_(False)
        valid = sequence_mask(torch.tensor([9, 4]), 9)
        attn_mask = (valid[:, None, :, None] & valid[:, None, None, :]).to(dtype)
        x = torch.randn(2, 16, 9, dtype=dtype) * 5
        mha(x, x, attn_mask)
        p = mha.attn
        assert p.shape == (2, 2, 9, 9)
        assert torch.equal(p[1, :, :4, 4:], torch.zeros(2, 4, 5, dtype=dtype))
        assert (p[1, :, :4, :4] > 0).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(2, 2, 9, dtype=dtype))


def test_proximal_bias_and_block_length():
    assert torch.equal(attention_bias_proximal(4)[0, 0, 0], -torch.log(torch.tensor([1., 2, 3, 4])))
    x = torch.randn(1, 8, 6)
    mha = MultiHeadAttention(8, 8, 2, block_length=1).eval().requires_grad_(False)
    mha(x, x)
    i, j = torch.meshgrid(torch.arange(6), torch.arange(6), indexing='ij')
    assert torch.equal(mha.attn[0, 0] > 0, (i - j).abs() <= 1)
    # proximal bias: identical content everywhere → weights fall off as 1/(1 + |i − j|), normalised
    mha = MultiHeadAttention(8, 8, 2, proximal_bias=True).double().eval().requires_grad_(False)
    const = torch.ones(1, 8, 5, dtype=torch.float64)
    mha(const, const)
    w = 1 / (1 + (torch.arange(5.) - 2).abs().double())
    torch.testing.assert_close(mha.attn[0, 0, 2], w / w.sum(), rtol=0, atol=1e-12)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match='divisible'): MultiHeadAttention(10, 10, 4)
    mha = MultiHeadAttention(8, 8, 2, window_size=2)
    with pytest.raises(ValueError, match='t_s == t_t'): mha(torch.randn(1, 8, 5), torch.randn(1, 8, 3))
    with pytest.raises(ValueError, match='channels'): mha(torch.randn(1, 6, 5), torch.randn(1, 6, 5))
    with pytest.raises(ValueError, match='activation'): FFN(4, 4, 8, 3, activation='swish')
    te = TextEncoder(10, 4, 8, 16, 2, 1, 3, 0.0)
    ids = torch.randint(0, 10, (2, 5))
    with pytest.raises(ValueError, match='symbol ids'): te(ids + 10, torch.tensor([5, 5]))
    with pytest.raises(ValueError, match='symbol ids'): te(ids - 10, torch.tensor([5, 5]))
    with pytest.raises(ValueError, match='integer'): te(ids.float(), torch.tensor([5, 5]))
    with pytest.raises(ValueError, match='exceed'): te(ids, torch.tensor([6, 5]))
    with pytest.raises(ValueError, match='x_lengths'): te(ids, torch.tensor([5]))
    pe = PosteriorEncoder(16, 4, 8, 5, 1, 2)
    with pytest.raises(ValueError, match=r'\[b, 16, t\]'): pe(torch.randn(2, 15, 5), torch.tensor([5, 5]))
    with pytest.raises(ValueError, match='gin_channels=0'): pe(torch.randn(2, 16, 5), torch.tensor([5, 5]), g=torch.randn(2, 3, 1))
    with pytest.raises(ValueError, match='exceed'): pe(torch.randn(2, 16, 5), torch.tensor([5, 7]))


# ---------------------------------------------------------------- FFN, encoder, text encoder

def test_ffn_masking_and_receptive_field():
    m = sequence_mask(torch.tensor([8, 5]), 8).unsqueeze(1).double()
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    for causal, act in [(False, None), (True, None), (False, 'gelu')]:
        ffn = FFN(4, 3, 16, 3, causal=causal, activation=act).double().eval().requires_grad_(False)
        y = ffn(x, m)
        assert y.shape == (2, 3, 8) and torch.equal(y[1, :, 5:], torch.zeros(3, 3, dtype=torch.float64))
        x2 = x.clone(); x2[0, :, 4] += 1
        changed = ((ffn(x2, m) - y)[0].abs().amax(0) > 0).tolist()
        # two kernel-3 convs: centred sees frames t−2…t+2, causal sees t−4…t
        want = [False] * 4 + [True] * 4 if causal else [False] * 2 + [True] * 5 + [False]
        assert changed == want, (causal, changed)
    # gelu variant is the sigmoid approximation x·σ(1.702x)
    ffn = FFN(2, 2, 2, 1, activation='gelu').double().requires_grad_(False)
    h = ffn.conv_1(x[:, :2])
    torch.testing.assert_close(ffn(x[:, :2], torch.ones(2, 1, 8, dtype=torch.float64)),
                               ffn.conv_2(h * torch.sigmoid(1.702 * h)), rtol=0, atol=1e-14)


def test_encoder_is_post_norm_residual():
    "One layer, dropout off: x ← LN1(x + MHA(x)); x ← LN2(x + FFN(x)), outputs masked."
    enc = Encoder(8, 16, 2, 1, kernel_size=3, window_size=2).double().eval().requires_grad_(False)
    for p in enc.parameters(): p.add_(0.1 * torch.randn_like(p))      # non-trivial gamma/beta
    m = sequence_mask(torch.tensor([6, 4]), 6).unsqueeze(1).double()
    x = torch.randn(2, 8, 6, dtype=torch.float64) * m
    am = m.unsqueeze(2) * m.unsqueeze(-1)
    ln = lambda norm, y: torch.nn.functional.layer_norm(y.transpose(1, 2), (8,), norm.gamma, norm.beta, 1e-5).transpose(1, 2)
    y = ln(enc.norm_layers_1[0], x + enc.attn_layers[0](x, x, am))
    y = ln(enc.norm_layers_2[0], y + enc.ffn_layers[0](y, m)) * m
    torch.testing.assert_close(enc(x, m), y, rtol=0, atol=1e-12)


def small_text_encoder():
    return TextEncoder(30, 4, 16, 32, 2, 3, 3, 0.1).double().eval().requires_grad_(False)


def test_text_encoder_outputs_and_prior_split():
    te = small_text_encoder()
    ids = torch.randint(0, 30, (2, 7)); lengths = torch.tensor([7, 4])
    x, m_p, logs_p, x_mask = te(ids, lengths)
    assert x.shape == (2, 16, 7) and m_p.shape == logs_p.shape == (2, 4, 7) and x_mask.shape == (2, 1, 7)
    assert torch.equal(x_mask[:, 0].sum(-1), lengths.double())
    stats = te.proj(x) * x_mask                                          # the split is [m_p; logs_p]
    assert torch.equal(stats[:, :4], m_p) and torch.equal(stats[:, 4:], logs_p)
    for y in (x, m_p, logs_p): assert torch.equal(y[1, :, 4:], torch.zeros(y.size(1), 3, dtype=torch.float64))
    # the encoder input is emb·sqrt(hidden)
    h0 = te.emb(ids).transpose(1, 2) * 4.0 * x_mask
    torch.testing.assert_close(te.encoder(h0, x_mask), x, rtol=0, atol=0)


def test_text_encoder_padding_invariance():
    te = small_text_encoder()
    ids = torch.randint(0, 30, (3, 10)); lengths = torch.tensor([10, 6, 1])
    out = te(ids, lengths)
    padded = torch.cat([ids, torch.randint(0, 30, (3, 7))], 1)         # any symbols in the padding
    out_pad = te(padded, lengths)
    for n, l in enumerate(lengths.tolist()):
        alone = te(ids[n:n + 1, :l], lengths[n:n + 1])
        for a, b, c in zip(alone[:3], out[:3], out_pad[:3]):
            torch.testing.assert_close(b[n, :, :l], a[0], rtol=0, atol=1e-12)
            torch.testing.assert_close(c[n, :, :l], a[0], rtol=0, atol=1e-12)
            assert torch.equal(c[n, :, l:], torch.zeros(c.size(1), 17 - l, dtype=torch.float64))


def test_dropout_active_in_train_mode_only():
    te = TextEncoder(30, 4, 16, 32, 2, 2, 3, 0.5).double()
    ids = torch.randint(0, 30, (1, 6)); lengths = torch.tensor([6])
    te.train(); a, b = te(ids, lengths)[1], te(ids, lengths)[1]
    assert not torch.allclose(a, b)
    te.eval(); assert torch.equal(te(ids, lengths)[1], te(ids, lengths)[1])


def test_text_encoder_gradients_reach_every_parameter():
    te = TextEncoder(30, 4, 16, 32, 2, 2, 3, 0.0).double()
    ids = torch.randint(0, 30, (2, 9))
    _, m_p, logs_p, _ = te(ids, torch.tensor([9, 7]))
    (m_p.pow(2).sum() + logs_p.sum()).backward()
    for name, p in te.named_parameters():
        if name == 'emb.weight': assert p.grad[ids.unique()].abs().sum() > 0
        else: assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- posterior encoder

def small_posterior(gin=0):
    return PosteriorEncoder(16, 4, 8, 5, 1, 4, gin_channels=gin).double().eval().requires_grad_(False)


def test_posterior_masking_and_zero_noise():
    pe = small_posterior()
    x = torch.randn(2, 16, 12, dtype=torch.float64); lengths = torch.tensor([12, 5])
    z, m_q, logs_q, x_mask = pe(x, lengths)
    for y in (z, m_q, logs_q): assert torch.equal(y[1, :, 5:], torch.zeros(4, 7, dtype=torch.float64))
    assert not torch.equal(z, m_q)
    z0, m0, l0, _ = pe(x, lengths, noise_scale=0.0)
    assert torch.equal(z0, m0) and torch.equal(m0, m_q) and torch.equal(l0, logs_q)


def test_posterior_reparameterisation_exact():
    pe = small_posterior()
    x = torch.randn(2, 16, 12, dtype=torch.float64); lengths = torch.tensor([12, 5])
    torch.manual_seed(3); z, m_q, logs_q, x_mask = pe(x, lengths, noise_scale=0.667)
    torch.manual_seed(3); eps = torch.randn_like(m_q)
    torch.testing.assert_close(z, (m_q + 0.667 * eps * logs_q.exp()) * x_mask, rtol=0, atol=1e-14)


def test_posterior_gradient_is_reparameterised():
    "∂z/∂m_q = 1 and ∂z/∂logs_q = ε·σ_q, through the sample."
    pe = PosteriorEncoder(6, 2, 8, 3, 1, 2).double().eval()
    x = torch.randn(1, 6, 4, dtype=torch.float64); lengths = torch.tensor([4])
    torch.manual_seed(5); z, m_q, logs_q, _ = pe(x, lengths)
    gm, gl = torch.autograd.grad(z.sum(), [m_q, logs_q], retain_graph=True)
    torch.manual_seed(5); eps = torch.randn_like(m_q)
    assert torch.equal(gm, torch.ones_like(gm))
    torch.testing.assert_close(gl, eps * logs_q.exp(), rtol=0, atol=1e-14)


def test_posterior_padding_invariance():
    pe = small_posterior(gin=3)
    g = torch.randn(2, 3, 1, dtype=torch.float64)
    x = torch.randn(2, 16, 11, dtype=torch.float64); lengths = torch.tensor([11, 6])
    _, m_q, logs_q, _ = pe(x, lengths, g=g, noise_scale=0.0)
    padded = torch.cat([x, 10 * torch.randn(2, 16, 9, dtype=torch.float64)], 2)
    _, m_pad, logs_pad, _ = pe(padded, lengths, g=g, noise_scale=0.0)
    torch.testing.assert_close(m_pad[:, :, :11], m_q, rtol=0, atol=1e-12)
    torch.testing.assert_close(logs_pad[:, :, :11], logs_q, rtol=0, atol=1e-12)
    _, m_alone, _, _ = pe(x[1:, :, :6], lengths[1:], g=g[1:], noise_scale=0.0)
    torch.testing.assert_close(m_q[1:, :, :6], m_alone, rtol=0, atol=1e-12)


def test_posterior_conditioning_and_weight_norm_removal():
    pe = small_posterior(gin=3)
    x = torch.randn(2, 16, 9, dtype=torch.float64); lengths = torch.tensor([9, 9])
    g1, g2 = torch.randn(2, 2, 3, 1, dtype=torch.float64)
    m1 = pe(x, lengths, g=g1, noise_scale=0.0)[1]
    m2 = pe(x, lengths, g=g2, noise_scale=0.0)[1]
    assert (m1 - m2).abs().min() > 0                           # every entry moves with the speaker
    # g is a global (per-utterance) condition: the same g for both items with the same x gives the same stats
    same = pe(x[[0, 0]], lengths, g=g1[[0, 0]], noise_scale=0.0)[1]
    assert torch.equal(same[0], same[1])
    pe.remove_weight_norm()
    assert not any('weight_g' in k or 'parametrizations' in k for k in pe.state_dict())
    torch.testing.assert_close(pe(x, lengths, g=g1, noise_scale=0.0)[1], m1, rtol=0, atol=1e-12)
