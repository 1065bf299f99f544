"""Piper voices: import (hyperparameters, key mapping, folded constants), parity with onnxruntime on the shipped
voice and on Piper-format files the tests write, export back (piper-tts loads it), bad input."""
import json, math
from pathlib import Path
import numpy as np
import pytest
import torch
import onnx
from vits_nb.piper import (shipped_voice, load_piper, export_piper, onnx_session, run_piper_onnx, graph_tensors,
                           graph_convs, piper_hparams, split_weight_norm, folded_logs, PiperVoiceError, ABSENT_MODULES)
from vits_nb.models import model_from_config, MissingModulesError
from vits_nb.data import HParams
from vits_nb.export import snr_db
from vits_nb.synth import TTS

# ≥ 20 sentences of our own, varied in length and punctuation
SENTENCES = [
    'The quick brown fox jumps over the lazy dog.', 'Could you pass me the salt, please?',
    'What a wonderful surprise to see you here!', 'Seven hundred people waited in the rain.',
    'She sells fresh fish at the Sunday market.', 'Yes.', 'Turn left at the old mill; then keep going.',
    'My brother, who lives in Ohio, plays the violin.', 'Is it raining again?',
    'The museum opens at nine and closes at five.', 'Please remember to water the plants.',
    'A gentle breeze moved the curtains.', 'Where did you put the keys?', 'Stop right there!',
    'He whispered the answer: nobody had guessed it.', 'Our train leaves from platform four.',
    'Bright colours make the kitchen feel warm.', 'I would rather walk than take the bus.',
    'The children built a castle out of sand.', 'Thank you for your patience.',
    'Every morning the baker sings while the bread rises.', 'Nothing lasts forever, not even winter.']


@pytest.fixture(scope='module')
def joe():
    voice = shipped_voice()
    model, hps = load_piper(voice)
    return voice, model, hps


@pytest.fixture(scope='module')
def piper_ids():
    "Piper's own ids for SENTENCES (piper-tts is a dev reference; the library never imports it)."
    from piper import PiperVoice
    pv = PiperVoice.load(str(shipped_voice()))
    return [pv.phonemes_to_ids([p for s in pv.phonemize(t) for p in s]) for t in SENTENCES]


def _infer(model, ids, sid=None, **kw):
    with torch.no_grad():
        o, _, y_mask, _ = model.infer(torch.tensor([ids]), torch.tensor([len(ids)]),
                                      sid=None if sid is None else torch.tensor([sid]), **kw)
    return o.reshape(-1).numpy()


def test_shipped_voice_hyperparameters_from_graph(joe):
    voice, model, hps = joe
    m = hps.model
    assert (m.n_vocab, m.hidden_channels, m.inter_channels, m.filter_channels) == (256, 192, 192, 768)
    assert (m.n_heads, m.n_layers, m.kernel_size, m.resblock) == (2, 6, 3, '2')
    assert m.resblock_kernel_sizes == [3, 5, 7] and m.resblock_dilation_sizes == [[1, 2], [2, 6], [3, 12]]
    assert (m.upsample_rates, m.upsample_kernel_sizes, m.upsample_initial_channel) == ([8, 8, 4], [16, 16, 8], 256)
    assert m.use_sdp and m.gin_channels == 0 and hps.data.n_speakers == 0 and hps.data.sampling_rate == 22050
    assert model.missing_modules == list(ABSENT_MODULES)
    assert hps.data.piper.espeak.voice == 'en-us'


def test_every_file_weight_is_taken(joe):
    "All 401 initializers are either mapped to a key or are small trace constants; the import is exact."
    voice, model, hps = joe
    proto = onnx.load(str(voice))
    t = graph_tensors(proto); convs = graph_convs(proto, t)
    sd = model.state_dict()
    # named tensors: bit-identical; anonymous flow convs: weight norm reassembles them bit for bit
    for k, v in t.items():
        if k in sd: assert torch.equal(sd[k], torch.as_tensor(np.array(v))), k
    for mod, c in convs.items():
        key = mod + '.weight'
        if key in sd: w = sd[key]
        else:
            g, v = sd[mod + '.weight_g'], sd[mod + '.weight_v']
            w = torch._weight_norm(v, g, 0)
        assert torch.equal(w, torch.as_tensor(np.array(c['weight']))), mod
    assert torch.equal(sd['enc_p.emb.weight'], torch.as_tensor(np.array(t['sid'])))
    assert torch.equal(torch.exp(-sd['dp.flows.0.logs']), torch.as_tensor(t['/dp/flows.0/Exp_output_0']))
    # the value count balances: imported = file − trace constants (≤ 8 values each) + logs from its folded factor
    used = {c['weight_name'] for c in convs.values()} | {k for k in t if k in sd} | {'sid'}
    rest = [i.name for i in proto.graph.initializer if i.name not in used]
    assert max(t[k].size for k in rest) <= 8
    imported = sum(v.numel() for k, v in sd.items() if not k.endswith('weight_g') and not k.startswith(ABSENT_MODULES))
    total = sum(t[i.name].size for i in proto.graph.initializer)
    assert total == 15_650_556 and len(proto.graph.initializer) == 401
    assert imported == total - sum(t[k].size for k in rest) + 2


def test_parity_with_onnxruntime_on_20_sentences(joe, piper_ids):
    voice, model, hps = joe
    sess = onnx_session(voice, threads=1)
    snrs, diffs = [], []
    for ids in piper_ids:
        ours, theirs = _infer(model, ids, noise_scale=0., noise_scale_w=0.), run_piper_onnx(sess, ids)
        assert ours.shape == theirs.shape
        diffs.append(float(np.abs(ours - theirs).max())); snrs.append(snr_db(theirs, ours))
    assert len(piper_ids) >= 20
    assert max(diffs) <= 5e-4 and min(snrs) >= 75, (max(diffs), min(snrs))


def test_noise_on_statistics_match(joe, piper_ids):
    "Seeded noise: the same durations when only z_p is noisy; length and loudness distributions otherwise."
    import onnxruntime as ort
    voice, model, hps = joe
    ids = piper_ids[0]
    ort.set_seed(0)
    sess = onnx_session(voice, threads=1)
    torch.manual_seed(0)
    a = [_infer(model, ids, noise_scale=.667, noise_scale_w=0.) for _ in range(3)]
    b = [run_piper_onnx(sess, ids, scales=(.667, 1., 0.)) for _ in range(3)]
    assert {x.size for x in a} == {x.size for x in b} and len({x.size for x in a}) == 1
    rms = lambda xs: np.mean([np.sqrt((x ** 2).mean()) for x in xs])
    assert abs(rms(a) / rms(b) - 1) < 0.1
    la = [_infer(model, ids, noise_scale=.667, noise_scale_w=.8).size for _ in range(6)]
    lb = [run_piper_onnx(sess, ids, scales=(.667, 1., .8)).size for _ in range(6)]
    assert len(set(la)) > 1 and len(set(lb)) > 1                     # noise_w really varies the rhythm
    assert abs(np.mean(la) / np.mean(lb) - 1) < 0.1


def test_tts_from_piper_speaks_with_piper_ids(joe, piper_ids):
    tts = TTS.from_piper()                                           # the shipped voice when no path is given
    assert tts.sample_rate == 22050 and tts.frontend is not None
    assert tts.text_to_ids(SENTENCES[0]).tolist() == piper_ids[0]
    audio, sr = tts.synthesize('Hello there. How are you?', seed=0)
    again, _ = tts.synthesize('Hello there. How are you?', seed=0)
    assert np.array_equal(audio, again) and 1.0 < audio.size / sr < 6 and np.abs(audio).max() > 0.1
    with pytest.raises(ValueError, match='single-speaker'): tts.synthesize('Hi.', speaker=0)


def test_training_and_voice_conversion_refuse_without_enc_q(joe, piper_ids):
    voice, model, hps = joe
    with pytest.raises(MissingModulesError, match='enc_q'):
        model(torch.tensor([piper_ids[0]]), torch.tensor([len(piper_ids[0])]), torch.zeros(1, 513, 30), torch.tensor([30]))


def test_split_weight_norm_is_exact():
    g = torch.Generator().manual_seed(0)
    for shape in [(384, 192, 5), (256, 128, 16), (7, 3, 1)]:
        w = torch.randn(shape, generator=g) * 0.05
        wg, wv = split_weight_norm(w.numpy())
        assert torch.equal(torch._weight_norm(wv, wg, 0), w)


# ---------------------------------------------------------------------------------------------------------------
# Piper-format files written by the test: Piper's I/O, flow weight norm kept (anonymous tensors), decoder folded.

def _piper_hps(n_speakers=0, resblock='2', size='tiny', use_sdp=True, sr=16000):
    sizes = {
        'tiny': dict(inter_channels=16, hidden_channels=16, filter_channels=32, n_layers=2, upsample_initial_channel=32),
        'x_low': dict(inter_channels=96, hidden_channels=96, filter_channels=384, n_layers=6, upsample_initial_channel=256),
        'high': dict(inter_channels=192, hidden_channels=192, filter_channels=768, n_layers=6, upsample_initial_channel=512)}
    dec = {'2': dict(resblock_kernel_sizes=[3, 5, 7], resblock_dilation_sizes=[[1, 2], [2, 6], [3, 12]],
                     upsample_rates=[8, 8, 4], upsample_kernel_sizes=[16, 16, 8]),
           '1': dict(resblock_kernel_sizes=[3, 7, 11], resblock_dilation_sizes=[[1, 3, 5]] * 3,
                     upsample_rates=[8, 8, 2, 2], upsample_kernel_sizes=[16, 16, 4, 4])}
    symbols = ['_', '^', '$', ' ', '.', ',', '?'] + list('abcdefghijklmnopqrstuvwxyz') + list('əɪʊˈˌː')
    n_vocab = 64
    piper = {'audio': {'sample_rate': sr, 'quality': size}, 'espeak': {'voice': 'en-us'},
             'inference': {'noise_scale': 0.667, 'length_scale': 1, 'noise_w': 0.8}, 'phoneme_type': 'espeak',
             'phoneme_map': {}, 'phoneme_id_map': {s: [i] for i, s in enumerate(symbols)}, 'num_symbols': n_vocab,
             'num_speakers': max(n_speakers, 1), 'speaker_id_map': {f's{i}': i for i in range(n_speakers)}}
    model = dict(n_vocab=n_vocab, n_heads=2, kernel_size=3, p_dropout=0.1, resblock=resblock, n_layers_q=3,
                 use_spectral_norm=False, use_sdp=use_sdp, gin_channels=16 if n_speakers else 0,
                 **sizes[size], **dec[resblock])
    return HParams(train={'segment_size': 8192}, data={
        'sampling_rate': sr, 'filter_length': 1024, 'hop_length': 256, 'win_length': 1024, 'n_mel_channels': 80,
        'mel_fmin': 0.0, 'mel_fmax': None, 'add_blank': True, 'n_speakers': n_speakers, 'cleaned_text': True,
        'text_cleaners': ['piper'], 'max_wav_value': 32768.0, 'piper': piper}, model=model)


@pytest.mark.parametrize('n_speakers,resblock,size,use_sdp', [
    (0, '2', 'tiny', True), (3, '2', 'tiny', True), (0, '1', 'tiny', True), (4, '1', 'tiny', False),
    (0, '2', 'x_low', True), (2, '1', 'high', True)])
def test_import_of_piper_format_files(tmp_path, n_speakers, resblock, size, use_sdp):
    torch.manual_seed(0)
    hps = _piper_hps(n_speakers, resblock, size, use_sdp)
    src = model_from_config(hps).eval()
    with torch.no_grad():                       # trained-looking flows: non-zero post layers and SDP affine
        for p in src.flow.parameters(): p.add_(torch.randn_like(p) * 0.02)
        if use_sdp: src.dp.flows[0].logs.normal_(0, 0.3); src.dp.flows[0].m.normal_(0, 0.3)
    path = export_piper(src, tmp_path / 'voice.onnx', hps=hps, keep_flow_weight_norm=True)
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ['input', 'input_lengths', 'scales'] + (['sid'] if n_speakers else [])
    assert [o.name for o in proto.graph.output] == ['output'] and proto.opset_import[0].version == 15
    # anonymous flow weights: 4 couplings × 8 WaveNet convs (+ 4 speaker cond layers)
    assert sum(i.name.startswith('onnx::Conv') for i in proto.graph.initializer) == 32 + 4 * bool(n_speakers)
    assert not any(k.startswith('dec.') and k.endswith('weight_v') for k in graph_tensors(proto))
    model, hps2 = load_piper(path)
    assert hps2.model.to_dict() == hps.model.to_dict()
    assert hps2.data.n_speakers == n_speakers and hps2.data.sampling_rate == 16000
    sd, sd2 = src.state_dict(), model.state_dict()
    for k in sd:           # weight norm: any (g, v) with the same g·v/‖v‖ is the same weight
        if k.startswith(ABSENT_MODULES) or k.endswith('weight_g'): continue
        if k.endswith('weight_v'):
            g = k[:-1] + 'g'
            a, b = torch._weight_norm(sd[k], sd[g], 0), torch._weight_norm(sd2[k], sd2[g], 0)
        else: a, b = sd[k], sd2[k]
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=k)
    sess = onnx_session(path)
    gen = torch.Generator().manual_seed(1)
    for n in (7, 31):
        ids = [1] + torch.randint(3, 64, (n,), generator=gen).tolist() + [2]
        sid = 1 if n_speakers else None
        ours = _infer(model, ids, sid=sid, noise_scale=0., noise_scale_w=0.)
        theirs = run_piper_onnx(sess, ids, sid=sid)
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= 1e-5, np.abs(ours - theirs).max()


def test_export_piper_runs_in_piper_tts(tmp_path, joe, piper_ids):
    "piper-tts loads the export and speaks it exactly as onnxruntime does; the export matches the original file."
    from piper import PiperVoice
    from piper.config import SynthesisConfig
    voice, model, hps = joe
    path = export_piper(model, tmp_path / 'joe.onnx', hps=hps)
    cfg = json.loads(Path(str(path) + '.json').read_text())
    orig = json.loads(Path(str(voice) + '.json').read_text())
    assert cfg['phoneme_id_map'] == orig['phoneme_id_map'] and cfg['num_symbols'] == 256
    pv = PiperVoice.load(str(path))
    text = SENTENCES[1]
    chunks = list(pv.synthesize(text, syn_config=SynthesisConfig(noise_scale=0., noise_w_scale=0., normalize_audio=False)))
    audio = np.concatenate([c.audio_float_array for c in chunks])
    ref = run_piper_onnx(onnx_session(voice), piper_ids[1])
    assert audio.shape == ref.shape and snr_db(ref, audio) >= 75
    # the lossless path: the weights read back are exactly the model's
    model2, _ = load_piper(path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in model2.state_dict().items() if not k.startswith(ABSENT_MODULES))


def test_export_piper_needs_a_piper_phoneme_map(tmp_path):
    from vits_nb.models import tiny_config
    hps = tiny_config()
    with pytest.raises(PiperVoiceError, match='Piper phoneme map'):
        export_piper(model_from_config(hps), tmp_path / 'x.onnx', hps=hps)


def test_bad_input_is_named(tmp_path, joe):
    voice = joe[0]
    cfg_text = Path(str(voice) + '.json').read_text()
    (tmp_path / 'text.onnx').write_text('not a model'); (tmp_path / 'text.onnx.json').write_text(cfg_text)
    with pytest.raises(PiperVoiceError, match='not an ONNX file'): load_piper(tmp_path / 'text.onnx')
    with pytest.raises(FileNotFoundError, match='not found'): load_piper(tmp_path / 'nothing.onnx')
    with pytest.raises(FileNotFoundError, match='config not found'): load_piper(voice, tmp_path / 'none.json')
    # an ONNX graph that is not a voice
    from onnx import helper, TensorProto
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1]); y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [1])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node('Neg', ['x'], ['y'])], 'g', [x], [y])), tmp_path / 'neg.onnx')
    (tmp_path / 'neg.onnx.json').write_text(cfg_text)
    with pytest.raises(PiperVoiceError, match='not a VITS/Piper voice'): load_piper(tmp_path / 'neg.onnx')
    for change, msg in [({'num_symbols': 178}, 'num_symbols 178'), ({'num_speakers': 4}, 'num_speakers 4'),
                        ({'audio': {'sample_rate': 'fast'}}, 'sample_rate'), ({'phoneme_id_map': {'a': [3]}}, 'BOS/pad/EOS')]:
        bad = {**json.loads(cfg_text), **change}
        (tmp_path / 'bad.json').write_text(json.dumps(bad))
        with pytest.raises(PiperVoiceError, match=msg): load_piper(voice, tmp_path / 'bad.json')
    (tmp_path / 'broken.json').write_text('{"audio": ')
    with pytest.raises(PiperVoiceError, match='not valid JSON'): load_piper(voice, tmp_path / 'broken.json')


def test_shipped_voice_is_intelligible():
    "An offline recognizer understands the imported voice (measured: 28% WER on 20 toy sentences, the festival "
    "teacher 17%); a random-weight model's output is not understood at all."
    from asr import recognize, word_errors
    from vits_nb.models import tiny_config
    tts = TTS.from_piper()
    texts = SENTENCES[:6]
    errors = [word_errors(t, recognize(*tts.synthesize(t, seed=0))) for t in texts]
    wer = sum(e for e, _ in errors) / sum(n for _, n in errors)
    assert wer < 0.45, wer
    noise = TTS(model_from_config(tiny_config()), tiny_config())
    e, n = word_errors(texts[0], recognize(*noise.synthesize(texts[0], seed=0)))
    assert e / n > 0.8
