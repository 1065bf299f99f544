"""The sleep phase (vits_nb.sleep) at tiny scale: dreams, the posterior NLL, alignment through the
posterior, the recovery of enc_q and of the SDP posterior, and load_or_recover's cache.
Real-voice figures: benchmarks/bench_sleep.py."""
import json, math
import pytest
import torch
from vits_nb.audio import spectrogram_torch
from vits_nb.commons import sequence_mask
from vits_nb.data import HParams
from vits_nb.mas import log_likelihood_matrix, maximum_path
from vits_nb.models import MissingModulesError, model_from_config, require_modules, tiny_config
from vits_nb.piper import ABSENT_MODULES, export_piper, load_piper
from vits_nb.sleep import (POSTERIOR_SDP, align_with_posterior, dream, file_sha256, frame_agreement,
                           load_or_recover, pad_ids, posterior_nll, recover_posterior,
                           recover_sdp_posterior, sample_durations, sdp_bound, speech_checks)

TEXTS = [f'sentence number {i}' for i in range(40)]
# proof (b) for the shipped recovery: measured 0.763 mean, 0.706 worst over 8 held-out sentences
# (benchmarks/bench_sleep.py --shipped); MAS given the dream's true z reaches 0.95-0.96, so enc_q's accuracy is
# the limit. The 0.9 is not reached; this floor guards the level we have.
AGREEMENT_FLOOR = 0.65


def text_to_ids(text):
    "A stand-in frontend: 5-16 ids, a function of the text."
    seed = sum(map(ord, text))
    return torch.randint(1, 100, (5 + seed % 12,), generator=torch.Generator().manual_seed(seed))


def _tiny(seed=0, use_sdp=True):
    torch.manual_seed(seed)
    hps = tiny_config(use_sdp=use_sdp)
    model = model_from_config(hps).eval()
    model.missing_modules = [m for m in ABSENT_MODULES if use_sdp or not m.startswith('dp.')]
    return model, hps


@pytest.fixture
def tiny(): return _tiny()


def _dream(model, hps, n=4, **kw):
    x, x_lengths = pad_ids([text_to_ids(t) for t in TEXTS[:n]])
    return dream(model, x, x_lengths, hps.data, **kw)


def test_dream_spectrogram_frames_equal_latent_frames(tiny):
    model, hps = tiny
    d = _dream(model, hps)
    d_ = hps.data
    test_lengths = d['y_lengths'].tolist()
    assert d['z'].shape[2] == d['spec'].shape[2] == max(test_lengths)
    assert d['spec'].shape[1] == d_.filter_length // 2 + 1
    torch.testing.assert_close(d['w'].sum((1, 2)).long(), d['y_lengths'])   # durations cover frames
    for i, t in enumerate(test_lengths):      # each spec is its own waveform's, as in training
        s = spectrogram_torch(d['audio'][i:i + 1, :t * model.hop_length], d_.filter_length,
                              d_.hop_length, d_.win_length)
        assert s.shape[-1] == t
        torch.testing.assert_close(d['spec'][i, :, :t], s[0], rtol=0, atol=0)
        assert torch.all(d['spec'][i, :, t:] == 0) and torch.all(d['z'][i, :, t:] == 0)


def test_posterior_nll_is_the_gaussian_log_density(tiny):
    model, hps = tiny
    d = _dream(model, hps)
    _, m_q, logs_q, y_mask = model.enc_q(d['spec'], d['y_lengths'])
    lp = torch.distributions.Normal(m_q, torch.exp(logs_q)).log_prob(d['z']) * y_mask
    want = -lp.sum() / (y_mask.sum() * d['z'].size(1))
    torch.testing.assert_close(posterior_nll(model, d['spec'], d['y_lengths'], d['z']), want)


def test_frame_agreement():
    w = torch.tensor([[2., 3, 1, 0]])
    assert frame_agreement(w, w, torch.tensor([3])) == 1.0
    # one frame moves from token 1 to token 0: 5 of 6 frames keep their token
    assert frame_agreement(w, torch.tensor([[3., 2, 1, 0]]), torch.tensor([3])) == 5 / 6
    with pytest.raises(ValueError, match='frames'):
        frame_agreement(w, torch.tensor([[3., 3, 1, 0]]), torch.tensor([3]))


def test_align_with_posterior_is_mas_on_the_flowed_posterior_mean(tiny, monkeypatch):
    "With an oracle posterior (m_q = the dream's own z), alignment is MAS on the true z_p = f(z)."
    model, hps = tiny
    d = _dream(model, hps, n=6, noise_scale=0.3)
    def oracle(spec, lengths, g=None):
        mask = sequence_mask(lengths, spec.size(2)).unsqueeze(1).float()
        return d['z'], d['z'], torch.zeros_like(d['z']), mask
    monkeypatch.setattr(model.enc_q, 'forward', oracle)
    w_hat = align_with_posterior(model, d['x'], d['x_lengths'], d['spec'], d['y_lengths'])
    _, m_p, logs_p, x_mask = model.enc_p(d['x'], d['x_lengths'])
    y_mask = sequence_mask(d['y_lengths']).unsqueeze(1).float()
    attn = maximum_path(log_likelihood_matrix(model.flow(d['z'], y_mask), m_p, logs_p),
                        y_mask.transpose(1, 2) * x_mask)
    torch.testing.assert_close(w_hat, attn.sum(1))
    assert frame_agreement(d['w'], w_hat, d['x_lengths']) >= 0.95


def test_recover_posterior_trains_enc_q_only_and_clears_the_marker(tiny):
    model, hps = tiny
    with pytest.raises(MissingModulesError, match='enc_q'): require_modules(model, 'training')
    before = {k: v.clone() for k, v in model.state_dict().items()}
    h = recover_posterior(model, TEXTS, text_to_ids, steps=40, batch_size=4, seed=0, lr=3e-3,
                          progress=False, noise_scale=0.3, data=hps.data, eval_every=10)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith('enc_q.') for k in changed)
    assert len(h['loss']) == 40 and h['eval_step'] == [0, 10, 20, 30, 40]
    assert all(math.isfinite(v) for v in h['loss'] + h['eval_nll'])
    assert h['eval_nll'][-1] < h['eval_nll'][0] - 0.2, h['eval_nll']   # held-out log q rises
    assert all(0 <= a <= 1 for a in h['eval_agreement'])
    assert 'enc_q' not in model.missing_modules and 'enc_q' in model.recovered_modules
    require_modules(model, 'voice conversion', ['enc_q'])                 # passes now
    with pytest.raises(MissingModulesError, match='dp.post_pre'): require_modules(model, 'training')


def test_recover_posterior_is_reproducible():
    runs = []
    for _ in range(2):
        model, hps = _tiny()
        h = recover_posterior(model, TEXTS, text_to_ids, steps=6, batch_size=3, seed=5,
                              progress=False, data=hps.data, eval_every=3, dreams=2)
        runs.append((h['loss'], h['eval_nll'], model.enc_q.proj.weight.detach().clone()))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    assert torch.equal(runs[0][2], runs[1][2])


def test_recover_sdp_posterior_lowers_the_bound_and_trains_only_the_posterior(tiny):
    model, hps = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    h = recover_sdp_posterior(model, TEXTS, text_to_ids, steps=40, batch_size=8, seed=0, lr=3e-3,
                              progress=False, eval_every=10)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith(tuple(p + '.' for p in POSTERIOR_SDP)) for k in changed)
    assert any(k.startswith('dp.flows.1.') for k in changed)
    assert any(k.startswith('dp.post_flows.') for k in changed)
    b = h['eval_bound']
    assert all(math.isfinite(v) for v in b) and b[-1] < b[0] - 0.1, b   # (c): finite and decreasing
    assert not any(m.startswith('dp.') for m in model.missing_modules)
    # prior flows untouched: the durations the SDP samples are the same as before recovery
    x, x_lengths = pad_ids([text_to_ids(t) for t in TEXTS[:4]])
    torch.manual_seed(3); w1 = sample_durations(model, x, x_lengths)['w']
    model.load_state_dict(before)
    torch.manual_seed(3); w0 = sample_durations(model, x, x_lengths)['w']
    assert torch.equal(w0, w1)


def test_sdp_bound_is_the_sdp_forward(tiny):
    model, hps = tiny
    x, x_lengths = pad_ids([text_to_ids(t) for t in TEXTS[:3]])
    b = sample_durations(model, x, x_lengths)
    assert torch.all(b['w'][b['x_mask'] > 0] >= 1) and torch.equal(b['w'], b['w'].round())
    torch.manual_seed(1); got = sdp_bound(model, b)
    torch.manual_seed(1); want = model.dp(b['h'], b['x_mask'], b['w']).sum() / b['x_mask'].sum()
    torch.testing.assert_close(got, want)


def test_bad_input_is_named(tiny):
    model, hps = tiny
    with pytest.raises(ValueError, match='need 2 or more texts'):
        recover_posterior(model, ['one'], text_to_ids, steps=1, progress=False)
    with pytest.raises(ValueError, match='empty or not strings'):
        recover_posterior(model, ['one', ''], text_to_ids, steps=1, progress=False)
    def bad(text): raise KeyError('ʔ')
    with pytest.raises(ValueError, match="text_to_ids failed on 'sentence number 0'"):
        recover_posterior(model, TEXTS, bad, steps=1, progress=False)
    with pytest.raises(ValueError, match='at least one symbol id'): pad_ids([[1, 2], []])
    nosdp, _ = _tiny(use_sdp=False)
    with pytest.raises(ValueError, match='deterministic duration predictor'):
        recover_sdp_posterior(nosdp, TEXTS, text_to_ids, steps=1, progress=False)
    with pytest.raises(FileNotFoundError, match='Piper voice not found'):
        load_or_recover('/nonexistent/voice.onnx', '/tmp/unused')
    with pytest.raises(TypeError, match='unknown recovery settings'):
        load_or_recover('/nonexistent/voice.onnx', '/tmp/unused', step=3)


def _tiny_voice(path):
    "A small Piper-format voice file (random weights), written through export_piper."
    hps = tiny_config()
    symbols = ['_', '^', '$', ' '] + list('abcdefghijklmnopqrstuvwxyz')
    hps.data.piper = HParams(**{
        'audio': {'sample_rate': 22050}, 'espeak': {'voice': 'en-us'}, 'phoneme_type': 'espeak',
        'inference': {'noise_scale': 0.667, 'length_scale': 1, 'noise_w': 0.8},
        'phoneme_id_map': {s: [i] for i, s in enumerate(symbols)}, 'phoneme_map': {}})
    hps.model.n_vocab = 40
    hps.data.text_cleaners = ['piper']
    torch.manual_seed(0)
    export_piper(model_from_config(hps).eval(), path, hps=hps, keep_flow_weight_norm=True)
    return path


def test_load_or_recover_caches_an_official_g_checkpoint(tmp_path, monkeypatch):
    voice = _tiny_voice(tmp_path / 'voice.onnx')
    t2i = lambda t: torch.tensor([1] + [4 + ord(c) % 26 for c in t if c.isalpha()][:20] + [2])
    kw = dict(steps=3, dreams=2, batch_size=2, sdp_steps=3, sdp_batch_size=4)
    cache = tmp_path / 'cache'
    model, hps = load_or_recover(voice, cache, texts=TEXTS, text_to_ids=t2i, progress=False, **kw)
    require_modules(model, 'training')                                    # nothing missing now
    files = sorted(p.name for p in (tmp_path / 'cache').iterdir())
    assert files == ['config.json', 'recovered.json', 'recovered_G.pth']
    ckpt = torch.load(tmp_path / 'cache' / 'recovered_G.pth', weights_only=True)
    assert set(ckpt) == {'model', 'iteration', 'optimizer', 'learning_rate'}
    assert ckpt['optimizer'] is None
    assert set(ckpt['model']) == set(model.state_dict())
    card = json.loads((tmp_path / 'cache' / 'recovered.json').read_text())
    assert card['key']['voice_sha256'] == file_sha256(voice)
    assert set(card['recovered']) == set(ABSENT_MODULES)
    # the second call reads the cache (no recovery runs) and gets the same weights
    import vits_nb.sleep as sleep
    monkeypatch.setattr(sleep, 'recover_posterior', lambda *a, **k: pytest.fail('recovered again'))
    model2, hps2 = load_or_recover(voice, cache, texts=TEXTS, text_to_ids=t2i, progress=False, **kw)
    assert model2.missing_modules == [] and hps2.to_dict() == hps.to_dict()
    for k, v in model.state_dict().items(): assert torch.equal(v, model2.state_dict()[k]), k
    # another voice file (other bytes) or other settings: recovered again
    monkeypatch.undo()
    calls = []
    real = sleep.recover_posterior
    def counted(*a, **k): calls.append(1); return real(*a, **k)
    monkeypatch.setattr(sleep, 'recover_posterior', counted)
    load_or_recover(voice, cache, texts=TEXTS, text_to_ids=t2i, progress=False, **{**kw, 'seed': 1})
    assert calls == [1]


def test_speech_checks_prior_mean_path_reproduces_a_noise_free_dream(tiny):
    "(a)/(b) plumbing: a dream spoken at noise 0 *is* the prior-mean path with its own durations."
    model, hps = tiny
    ids = text_to_ids(TEXTS[3])
    x, x_lengths = pad_ids([ids])
    own = dream(model, x, x_lengths, hps.data, noise_scale=0.)
    c = speech_checks(model, hps.data, ids, own['audio'][0], w=own['w'])
    assert c['frames'] == int(own['y_lengths'][0])
    assert c['l1_prior_mean'] < 1e-4 and c['l1_prior'] > 1e-3 and c['l1_posterior'] > 1e-3
    assert 0 <= c['agreement'] <= 1
    teacher = speech_checks(model, hps.data, ids, torch.randn(6000) * 0.1)   # durations from MAS
    assert 'agreement' not in teacher and teacher['frames'] == 6000 // 256


def test_the_shipped_recovery_is_the_one_load_or_recover_asks_for():
    "data/recovered's card carries the key load_or_recover computes today: this voice file, the toy sentences, the defaults."
    from vits_nb.corpus import toy_sentences
    from vits_nb.piper import shipped_voice
    from vits_nb.sleep import RECOVERY_DEFAULTS, SHIPPED_CARD, SHIPPED_WEIGHTS, recovery_key, shipped_dir
    card = json.loads((shipped_dir() / SHIPPED_CARD).read_text())
    assert card['key'] == recovery_key(shipped_voice(), toy_sentences(), dict(RECOVERY_DEFAULTS))
    assert card['dtype'] == 'float16' and card['bytes'] == (shipped_dir() / SHIPPED_WEIGHTS).stat().st_size
    assert set(card['recovered']) == set(ABSENT_MODULES)
    assert card['cpu_seconds'] > 0 and card['enc_q']['eval_nll'][-1] < card['enc_q']['eval_nll'][0]


def test_load_or_recover_takes_the_shipped_recovery_and_it_explains_the_voice(tmp_path, monkeypatch):
    "No recovery runs and nothing is written; the fp16 posterior aligns the voice's own speech (proof b, one sentence)."
    import vits_nb.sleep as sleep
    from vits_nb.piper import shipped_voice
    monkeypatch.setattr(sleep, 'recover_posterior', lambda *a, **k: pytest.fail('recovered instead of loading'))
    model, hps = load_or_recover(shipped_voice(), tmp_path / 'cache', progress=False)
    assert model.missing_modules == [] and model.recovery['source'].endswith('recovered_fp16.pth')
    assert not (tmp_path / 'cache').exists()
    require_modules(model, 'training')
    ids = sleep.voice_text_to_ids(model, hps)('Please remember to water the plants while I am away.')
    x, x_lengths = pad_ids([ids])
    torch.manual_seed(0)
    own = dream(model, x, x_lengths, hps.data, noise_scale=0.667, noise_scale_w=0.8)
    c = speech_checks(model, hps.data, ids, own['audio'][0], w=own['w'])
    fresh, _ = load_piper(shipped_voice())                               # enc_q freshly initialised
    c0 = speech_checks(fresh, hps.data, ids, own['audio'][0], w=own['w'])
    assert c['agreement'] >= AGREEMENT_FLOOR > 10 * c0['agreement'], (c, c0)
    assert c['l1_posterior'] < c0['l1_posterior'] / 3
