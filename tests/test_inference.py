"""The inference panel without a browser: every button's handler is called directly and its output checked."""
import io, json
from datetime import datetime, timezone
import numpy as np
import pytest
import soundfile as sf
import torch

from vits_nb.models import model_from_config, tiny_config, save_checkpoint
from vits_nb.synth import TTS
from vits_nb.inference import (SynthesisUI, synthesize_utterance, voice_convert, list_runs, latest_checkpoint,
                               wav_bytes, mel_of, f0_contour, frame_energy, read_audio)

TEXT = 'The birch canoe slid on the smooth planks.'


def _run(folder, n_speakers=0, steps=(0,), use_sdp=True):
    folder.mkdir(parents=True)
    hps = tiny_config(n_speakers=n_speakers, use_sdp=use_sdp)
    (folder / 'config.json').write_text(json.dumps(hps.to_dict()))
    torch.manual_seed(len(folder.name))
    model = model_from_config(hps)
    for s in steps: save_checkpoint(model, None, 2e-4, s, folder / f'G_{s}.pth')
    return folder


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('runs')
    _run(root / 'single', steps=(0, 500, 1000, 90))
    _run(root / 'multi', n_speakers=3)
    _run(root / 'det', use_sdp=False)
    (root / 'no_config').mkdir(); (root / 'no_config' / 'G_0.pth').write_bytes(b'')
    (root / 'no_ckpt').mkdir(); (root / 'no_ckpt' / 'config.json').write_text('{}')
    return root


def _tree(w):
    yield w
    for c in getattr(w, 'children', ()): yield from _tree(c)


def test_picker_lists_runs_with_newest_checkpoint(runs):
    found = list_runs(runs)
    assert list(found) == ['det', 'multi', 'single']          # folders missing config or checkpoint are left out
    assert found['single'].name == 'G_1000.pth'                 # by step number, not by name
    assert latest_checkpoint(runs / 'no_config') == runs / 'no_config' / 'G_0.pth'
    assert latest_checkpoint(runs) is None
    ui = SynthesisUI(runs_dir=runs)
    assert [v for _, v in ui.run.options] == ['shipped voice', 'det', 'multi', 'single']
    assert ui.run.options[3][0] == 'single (G_1000.pth)'
    assert ui.run.value == 'shipped voice' and ui.tts.sample_rate == 22050   # it opens on the trained voice
    assert ui.tts.frontend is not None and 'joe' in ui.model_info.value
    assert ui.load_run('single') is ui.tts and ui.run.value == 'single'
    assert ui.load_run('missing') is None and 'missing' in ui.status.value


def test_picker_reports_bad_folder(tmp_path):
    ui = SynthesisUI(runs_dir=tmp_path / 'nope')
    assert ui.runs == {} and 'not found' in ui.status.value
    assert ui.tts is not None and ui.run.value == 'shipped voice'   # a bad folder still leaves the shipped voice
    ui.tts = None
    assert ui.synthesize() is None and 'no model loaded' in ui.status.value
    (tmp_path / 'empty').mkdir()
    ui.runs_dir.value = str(tmp_path / 'empty')
    ui.status.value = ''
    assert ui.refresh_runs() == {} and 'no runs' in ui.status.value


def test_synthesize_audio_is_whole_frames_and_reproducible(runs):
    ui = SynthesisUI(runs_dir=runs); ui.load_run('single')
    ui.text.value, ui.seed.value = TEXT, 3
    a = ui.synthesize()
    assert a.dtype == np.float32 and a.ndim == 1
    r = ui.result
    assert len(a) == r['durations'].sum() * 256 == r['attn'].shape[0] * 256
    np.testing.assert_array_equal(a, ui.synthesize())                     # same seed, same samples
    np.testing.assert_array_equal(a, ui.tts.synthesize(TEXT, seed=3)[0])  # and the same as TTS
    ui.seed.value = 4
    assert not np.array_equal(a, ui.synthesize())
    # the audio widget holds a WAV of those samples
    back, sr = sf.read(io.BytesIO(ui.audio.value), dtype='float32')
    assert sr == 22050 and ui.audio.format == 'wav' and not ui.audio.autoplay
    np.testing.assert_allclose(back, ui.result['audio'], atol=1 / 32767 + 1e-6)


def test_knobs_reach_the_model(runs):
    ui = SynthesisUI(runs_dir=runs); ui.load_run('single')
    ui.noise_scale.value = ui.noise_scale_w.value = 0.
    ui.seed.value = 1; a1 = ui.synthesize()
    ui.seed.value = 2; a2 = ui.synthesize()
    np.testing.assert_array_equal(a1, a2)            # no noise left: the seed does not matter
    n1 = len(a1)
    ui.length_scale.value = 2.
    n2 = len(ui.synthesize())
    assert 1.8 * n1 <= n2 <= 2 * n1 + 256 * len(ui.result['ids'])   # ceil per symbol adds < 1 frame each
    ui.length_scale.value, ui.noise_scale.value = 1., .667
    a3 = ui.synthesize()
    assert len(a3) == n1 and not np.array_equal(a3, a1)   # prior temperature: same timing, other frames


def test_plots_and_phonemes(runs, monkeypatch):
    import matplotlib.pyplot as plt
    ui = SynthesisUI(runs_dir=runs); ui.load_run('single')
    ui.text.value = TEXT
    before = plt.get_fignums()
    ui.synthesize()
    assert plt.get_fignums() == before                    # no pyplot figure leaks into the notebook
    axes = ui.figure.axes
    assert len(axes) == 3                                      # alignment, mel, its colorbar
    t_y, t_x = ui.result['attn'].shape
    assert axes[0].images[0].get_array().shape == (t_x, t_y)    # alignment: symbols x frames
    assert axes[1].images[0].get_array().shape == (80, t_y)     # mel: one frame per hop
    assert ui.plot.value[:8] == b'\x89PNG\r\n\x1a\n'
    ph = ui.result['phonemes']
    assert ph.startswith('ðə bˈɜːtʃ') and ph in ui.phonemes.value
    assert ui.result['ids'] == ui.tts.text_to_ids(TEXT).tolist()


def test_errors_are_shown_not_raised(runs):
    ui = SynthesisUI(runs_dir=runs); ui.load_run('single')
    ui.synthesize(); good = ui.audio.value
    for text in ('', '   \n'):
        ui.text.value = text
        assert ui.synthesize() is None and 'empty text' in ui.status.value
    assert ui.audio.value == good and not ui.button.disabled    # the last audio stays, the button is usable
    ui.text.value = TEXT
    assert ui.synthesize() is not None and 'frames' in ui.status.value


def test_speaker_controls_only_for_multi_speaker(runs):
    single = SynthesisUI(runs_dir=runs); single.load_run('single')
    multi = SynthesisUI(runs_dir=runs); multi.load_run('multi')
    assert single.speaker not in list(_tree(single.widget)) and single.vc_panel not in list(_tree(single.widget))
    assert multi.speaker in list(_tree(multi.widget)) and multi.vc_panel in list(_tree(multi.widget))
    assert [v for _, v in multi.speaker.options] == [0, 1, 2]
    assert (multi.vc_source.value, multi.vc_target.value) == (0, 1)
    multi.seed.value = 0
    outs = []
    for spk in (0, 2):
        multi.speaker.value = spk
        outs.append(multi.synthesize())
    assert not np.array_equal(*outs)                        # the speaker reaches the model
    np.testing.assert_array_equal(outs[1], multi.tts.synthesize(TEXT, speaker=2, seed=0)[0])
    # switching runs rebuilds the panel
    multi.load_run('single')
    assert multi.vc_panel not in list(_tree(multi.widget)) and multi.speaker not in list(_tree(multi.widget))


def test_duration_noise_slider_disabled_for_deterministic_durations(runs):
    ui = SynthesisUI(runs_dir=runs); ui.load_run('det')
    assert ui.run.value == 'det' and ui.noise_scale_w.disabled
    ui.load_run('single'); assert not ui.noise_scale_w.disabled


def test_voice_conversion_panel(runs, tmp_path):
    ui = SynthesisUI(runs_dir=runs); ui.load_run('multi')
    sr = 22050
    src = (.3 * np.sin(2 * np.pi * 180 * np.arange(int(.6 * sr)) / sr)).astype(np.float32)
    path = tmp_path / 'src.wav'; sf.write(path, src, sr, subtype='FLOAT')
    assert ui.convert() is None and 'no source' in ui.status.value
    ui.vc_path.value = str(path); ui.vc_target.value = 2; ui.seed.value = 5
    out = ui.convert()
    assert out.dtype == np.float32 and len(out) == (len(src) // 256) * 256   # one hop per source frame
    np.testing.assert_array_equal(out, voice_convert(ui.tts, src, 0, 2, seed=5))
    np.testing.assert_array_equal(out, ui.convert())
    back, _ = sf.read(io.BytesIO(ui.vc_audio.value), dtype='float32')
    np.testing.assert_allclose(back, out, atol=1 / 32767 + 1e-6)
    ui.vc_target.value = 1
    assert not np.array_equal(out, ui.convert())
    # an uploaded file takes precedence over the path; 16 kHz is resampled to the model rate
    up = io.BytesIO(); sf.write(up, src[::2], 11025, format='WAV'); up = up.getvalue()
    assert len(read_audio(up, sr)) == len(src)
    ui.vc_upload.value = ({'name': 'u.wav', 'type': 'audio/wav', 'size': len(up), 'content': memoryview(up),
                           'last_modified': datetime.now(timezone.utc)},)
    assert len(ui.convert()) == (len(src) // 256) * 256
    ui.vc_upload.value = ({'name': 'bad.wav', 'type': 'audio/wav', 'size': 3, 'content': memoryview(b'abc'),
                           'last_modified': datetime.now(timezone.utc)},)
    assert ui.convert() is None and 'cannot read' in ui.status.value
    ui.vc_upload.value = ()
    ui.vc_path.value = str(tmp_path / 'missing.wav')
    assert ui.convert() is None and 'not found' in ui.status.value


def test_voice_conversion_rejects_single_speaker_and_short_audio(runs):
    tts = TTS.from_checkpoint(runs / 'single' / 'G_1000.pth')
    with pytest.raises(ValueError, match='multi-speaker'): voice_convert(tts, np.zeros(4096, np.float32), 0, 1)
    multi = TTS.from_checkpoint(runs / 'multi' / 'G_0.pth')
    with pytest.raises(ValueError, match='too short'): voice_convert(multi, np.zeros(100, np.float32), 0, 1)


def test_utterance_validation(runs):
    tts = TTS.from_checkpoint(runs / 'single' / 'G_1000.pth')
    with pytest.raises(TypeError, match='str'): synthesize_utterance(tts, 3)
    with pytest.raises(ValueError, match='noise_scale'): synthesize_utterance(tts, 'hi', noise_scale=-1)
    with pytest.raises(ValueError, match='length_scale'): synthesize_utterance(tts, 'hi', length_scale=0)
    with pytest.raises(ValueError, match='single-speaker'): synthesize_utterance(tts, 'hi', speaker=1)
    g = torch.random.get_rng_state()
    synthesize_utterance(tts, 'hi', seed=7)
    assert torch.equal(g, torch.random.get_rng_state())      # the seed does not touch the global generator


def test_wav_bytes_and_measures():
    sr = 22050
    a = (.5 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr)).astype(np.float32)
    info = sf.info(io.BytesIO(wav_bytes(a, sr)))
    assert (info.format, info.subtype, info.samplerate, info.frames) == ('WAV', 'PCM_16', sr, sr)
    back, _ = sf.read(io.BytesIO(wav_bytes(a, sr)), dtype='float32')
    np.testing.assert_allclose(back, a, atol=1 / 32767 + 1e-6)   # 16-bit quantisation only
    assert np.abs(np.nanmedian(f0_contour(a, sr)) - 220) < 3
    np.testing.assert_allclose(frame_energy(a), 20 * np.log10(.5 / np.sqrt(2)), atol=.1)
    assert sf.read(io.BytesIO(wav_bytes(np.full(10, 3.), sr)), dtype='float32')[0].max() <= 1   # clipped
