"Fine-tuning an imported Piper voice (vits_nb.finetune) at tiny scale: a tiny random voice written by export_piper."
import json, warnings
from pathlib import Path
import numpy as np, pytest, soundfile as sf, torch
from vits_nb import finetune as F
from vits_nb.data import TextAudioLoader, UnencodableTextError, HParams

TEXTS = ['This is a test.', 'Hello world!', 'A short one.', 'Two sentences, one line.', 'New data.',
         'It works?', 'The cat sat on the mat.', 'We speak slowly now.']
REC = dict(steps=3, dreams=2, sdp_steps=3, batch_size=2, sdp_batch_size=2)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('ft')
    voice = F.tiny_voice(tmp / 'tiny.onnx')
    (tmp / 'wavs').mkdir()
    rng, sr, rows = np.random.default_rng(0), 22050, []
    for i, t in enumerate(TEXTS):
        n = int(sr * (0.8 + 0.1 * i)); tt = np.arange(n) / sr
        y = 0.3 * np.sin(2 * np.pi * (150 + 20 * i) * tt) + 0.02 * rng.standard_normal(n)
        sf.write(tmp / 'wavs' / f'u{i}.wav', y.astype(np.float32), sr, subtype='PCM_16')
        rows.append(f'{tmp}/wavs/u{i}.wav|{t}')
    (tmp / 'train.txt').write_text('\n'.join(rows[:6]) + '\n'); (tmp / 'val.txt').write_text('\n'.join(rows[6:]) + '\n')
    cfg = json.loads((Path(__file__).parents[1] / 'configs' / 'ljs_base.json').read_text())
    cfg['data'].update(training_files=str(tmp / 'train.txt'), validation_files=str(tmp / 'val.txt'))
    (tmp / 'cfg.json').write_text(json.dumps(cfg))
    return tmp, voice


def test_voice_overrides_model_and_frontend(setup):
    tmp, voice = setup
    hps, note = F.voice_overrides(tmp / 'cfg.json', voice)
    assert hps.model.hidden_channels == 16 and hps.model.n_vocab == 151
    assert 'piper' in hps.data and hps.data.add_blank is False and hps.data.sampling_rate == 22050
    assert 'model section' in note and 'Piper phoneme map' in note


@pytest.mark.parametrize('schedule', ['prior', 'acoustic', 'adversarial'])
def test_finetune_writes_loadable_checkpoints_and_resumes(setup, schedule):
    tmp, voice = setup
    run = tmp / f'run_{schedule}'
    s = F.finetune(voice, tmp / 'cfg.json', run, steps=3, schedule=schedule, progress=False, recovery=REC,
                   cache_dir=tmp / 'rec', batch_size=2, d_warmup=2)
    assert s['step'] == 3 and (run / 'G_3.pth').is_file() and (run / 'D_3.pth').is_file()
    # what the schedule freezes is bit-identical to step 0; what it trains has moved
    frozen, moving = {'prior': (('dec.', 'enc_q.'), ('enc_p.',)),
                      'acoustic': (('enc_p.', 'flow.', 'dp.'), ('enc_q.', 'dec.'))}.get(schedule, ((), ()))
    g0, g3 = (torch.load(run / f'G_{k}.pth', weights_only=True)['model'] for k in (0, 3))
    for k in g0:
        if k.startswith(frozen): assert torch.equal(g0[k], g3[k]), k
    for m in moving: assert any(not torch.equal(g0[k], g3[k]) for k in g0 if k.startswith(m)), m
    from vits_nb.synth import TTS
    from vits_nb.piper import export_piper, load_piper
    tts = TTS.from_checkpoint(run / 'G_3.pth')
    assert tts.frontend is not None and tts.synthesize('Hello world.', seed=0)[0].size > 0
    export_piper(tts, tmp / f'{schedule}.onnx'); assert load_piper(tmp / f'{schedule}.onnx')[1].model.n_vocab == 151
    s = F.finetune(voice, tmp / 'cfg.json', run, steps=4, schedule=schedule, progress=False, recovery=REC,
                   cache_dir=tmp / 'rec', batch_size=2, d_warmup=2)
    assert s['resumed_from'].endswith('G_3.pth') and s['step'] == 4


def test_acoustic_hands_over_the_blend_and_resumes_from_the_trained_weights(setup):
    "acoustic writes theta_0 + 0.8 (theta - theta_0) as finetuned.pth; G_<step> keeps theta; a resume trains on from theta."
    from vits_nb.models import read_checkpoint
    tmp, voice = setup
    run = tmp / 'run_blend'
    kw = dict(schedule='acoustic', progress=False, recovery=REC, cache_dir=tmp / 'rec', batch_size=2)
    s = F.finetune(voice, tmp / 'cfg.json', run, steps=2, **kw)
    assert Path(s['voice']) == run / 'finetuned.pth' and s['schedule']['blend'] == 0.8
    th0, th, ft = (read_checkpoint(run / f)[0] for f in ('voice_start.pth', 'G_2.pth', 'finetuned.pth'))
    g0 = read_checkpoint(run / 'G_0.pth')[0]
    assert all(torch.equal(th0[k], g0[k]) for k in g0)
    for k in ft:
        if ft[k].is_floating_point(): torch.testing.assert_close(ft[k], th0[k] + 0.8 * (th[k] - th0[k]), rtol=0, atol=1e-7)
        else: assert torch.equal(ft[k], th[k])
    assert max((ft[k] - th[k]).abs().max().item() for k in ft if k.startswith('dec.')) > 0
    s = F.finetune(voice, tmp / 'cfg.json', run, steps=3, **kw)           # resumes from G_2 (theta), not the blend
    assert s['resumed_from'].endswith('G_2.pth') and read_checkpoint(run / 'finetuned.pth')[1]['iteration'] == 3
    s = F.finetune(voice, tmp / 'cfg.json', tmp / 'run_noblend', steps=1, blend=1., **kw)
    assert s['voice'].endswith('G_1.pth') and not (tmp / 'run_noblend' / 'finetuned.pth').exists()
    with pytest.raises(ValueError, match=r'blend must be in \(0, 1\]'):
        F.finetune(voice, tmp / 'cfg.json', tmp / 'run_bad', steps=1, blend=1.5, **kw)
    (run / 'voice_start.pth').unlink(); (run / 'G_0.pth').unlink()
    with pytest.raises(FileNotFoundError, match='cannot blend toward the voice'):
        F.write_finetuned(run, th, 3, 0.8)


def test_init_from_neither_checkpoint_nor_voice(tmp_path):
    bad = tmp_path / 'notes.pth'; bad.write_text('hello')
    with pytest.raises(F.InitFromError, match='neither a generator checkpoint'): F.init_source(bad)
    onnx = tmp_path / 'x.onnx'; onnx.write_text('hello')
    with pytest.raises(F.InitFromError, match='not an ONNX file'): F.init_source(onnx)


def test_map_that_cannot_encode_names_symbols(setup, tmp_path):
    tmp, _ = setup
    small = {'_': [0], '^': [1], '$': [2], ' ': [3], '.': [4]}
    voice = F.tiny_voice(tmp_path / 'small.onnx', phoneme_id_map=small)
    hps, _ = F.voice_overrides(tmp / 'cfg.json', voice)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(UnencodableTextError, match="'ð' LATIN SMALL LETTER ETH"):
            TextAudioLoader(hps.data.training_files, hps.data)


def test_other_sample_rate_is_resampled_with_a_notice(setup, tmp_path):
    tmp, _ = setup
    voice = F.tiny_voice(tmp_path / 'v16.onnx', sample_rate=16000)
    hps, note = F.voice_overrides(tmp / 'cfg.json', voice)
    assert hps.data.sampling_rate == 16000 and 'resampled to 16000 Hz' in note


def test_metrics_on_known_signals():
    sr = 22050; t = np.arange(sr) / sr
    a = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    assert abs(F.f0_median(a, sr) - 200) < 4
    assert F.spectral_distance(a, a, sr) == pytest.approx(0, abs=1e-6)
    assert F.word_errors('the cat sat', 'the cat sat down') == (1, 3)
    assert F.halfway(100., 150., 200.) == pytest.approx(0.5)
