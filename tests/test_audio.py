"""vits_nb.audio: waveform loading, linear and mel spectrograms against librosa."""
import warnings
import numpy as np
import pytest
import soundfile as sf
import torch
import librosa
from hypothesis import given, settings, strategies as st

from vits_nb import audio
from vits_nb.audio import load_wav, spectrogram_torch, spec_to_mel_torch, mel_spectrogram_torch, mel_basis

SR = 22050


def _tone(n, sr=SR, f=220.0, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    return (0.5 * np.sin(2 * np.pi * f * t) + noise * rng.standard_normal(n)).astype(np.float32)


# ---- load_wav ------------------------------------------------------------------------------

def test_load_wav_int16_exact(tmp_path):
    y = _tone(5000)
    sf.write(tmp_path / 'a.wav', y, SR, subtype='PCM_16')
    wav, sr = load_wav(str(tmp_path / 'a.wav'), SR)
    assert sr == SR and wav.dtype == torch.float32 and wav.shape == (5000,)
    pcm = sf.read(tmp_path / 'a.wav', dtype='int16')[0]
    np.testing.assert_array_equal(wav.numpy(), pcm.astype(np.float32) / 32768.0)
    assert wav.abs().max() <= 1.0


def test_load_wav_no_rate_keeps_file_rate(tmp_path):
    sf.write(tmp_path / 'a.wav', _tone(1600, 16000), 16000, subtype='PCM_16')
    wav, sr = load_wav(tmp_path / 'a.wav')
    assert sr == 16000 and len(wav) == 1600


def test_load_wav_stereo_mixdown(tmp_path):
    left, right = _tone(3000, seed=1), _tone(3000, f=330, seed=2)
    sf.write(tmp_path / 's.wav', np.stack([left, right], 1), SR, subtype='FLOAT')
    with pytest.warns(UserWarning, match='2 channels, mixing down to mono'):
        wav, _ = load_wav(tmp_path / 's.wav', SR)
    np.testing.assert_allclose(wav.numpy(), (left + right) / 2, atol=1e-6)


def test_load_wav_resample_warns_once_per_pair(tmp_path, monkeypatch):
    monkeypatch.setattr(audio, '_warned_rates', set())
    n = 16000
    sf.write(tmp_path / 'r.wav', 0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / n), 16000, subtype='PCM_16')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        wav, sr = load_wav(tmp_path / 'r.wav', SR)
        load_wav(tmp_path / 'r.wav', SR)
        load_wav(tmp_path / 'r.wav', 24000)
    msgs = [str(x.message) for x in w]
    assert len(msgs) == 2, msgs
    assert '16000 Hz to 22050 Hz' in msgs[0] and '16000 Hz to 24000 Hz' in msgs[1]
    assert sr == SR and len(wav) == SR
    mid = slice(1000, SR - 1000)
    ref = 0.5 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)
    np.testing.assert_allclose(wav.numpy()[mid], ref[mid], atol=2e-3)


def test_load_wav_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.wav'):
        load_wav(tmp_path / 'nope.wav')
    (tmp_path / 'junk.wav').write_bytes(b'RIFF....garbage')
    with pytest.raises(ValueError, match='junk.wav'):
        load_wav(tmp_path / 'junk.wav')
    sf.write(tmp_path / 'empty.wav', np.zeros(0, np.float32), SR, subtype='PCM_16')
    with pytest.raises(ValueError, match='empty.*empty.wav'):
        load_wav(tmp_path / 'empty.wav')
    (tmp_path / 'zero.wav').write_bytes(b'')
    with pytest.raises(ValueError, match='zero.wav'):
        load_wav(tmp_path / 'zero.wav')


# ---- linear spectrogram ----------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(T=st.integers(min_value=512, max_value=6000),
       cfg=st.sampled_from([(1024, 256, 1024), (512, 128, 512), (1024, 256, 800)]))
def test_frames_count(T, cfg):
    n_fft, hop, win = cfg
    spec = spectrogram_torch(torch.zeros(1, T), n_fft, hop, win)
    assert spec.shape == (1, n_fft // 2 + 1, T // hop)     # == T / hop when T is a multiple of hop


@pytest.mark.parametrize('T', [256 * k for k in (2, 3, 32, 100)])
def test_frames_multiple_of_hop(T):
    assert spectrogram_torch(torch.randn(2, T)).shape == (2, 513, T // 256)


@pytest.mark.parametrize('n_fft,hop,win', [(1024, 256, 1024), (512, 128, 512), (1024, 256, 800)])
def test_spectrogram_matches_librosa(n_fft, hop, win):
    y = np.stack([_tone(8192, seed=3), _tone(8192, f=1000, seed=4)])
    spec = spectrogram_torch(torch.from_numpy(y), n_fft, hop, win)
    pad = (n_fft - hop) // 2
    for i in range(2):
        yp = np.pad(y[i], (pad, pad), mode='reflect')
        S = librosa.stft(yp, n_fft=n_fft, hop_length=hop, win_length=win, window='hann', center=False)
        ref = np.sqrt(np.abs(S) ** 2 + 1e-6)
        assert ref.shape == spec[i].shape
        # tolerance: 1e-6 of the peak (float32 FFT round-off; measured ~1e-7)
        np.testing.assert_allclose(spec[i].numpy(), ref, rtol=0, atol=1e-6 * ref.max())


def test_frame_centre_is_hop_centre():
    # frame m's window peak (Hann[n_fft/2] = 1) sits on sample m*hop + hop/2: an impulse there reads 1 in every bin
    y = torch.zeros(1, 256 * 10)
    y[0, 5 * 256 + 128] = 1.0
    spec = spectrogram_torch(y)[0]
    np.testing.assert_allclose(spec[:, 5].numpy(), np.full(513, np.sqrt(1 + 1e-6)), rtol=1e-6)
    # neighbours see the window one hop (256) off its peak: Hann[256] = Hann[768] = 0.5; two hops away, nothing
    for m, w in [(4, 0.5), (6, 0.5), (3, 0.0), (7, 0.0), (0, 0.0)]:
        np.testing.assert_allclose(spec[:, m].numpy(), np.full(513, np.sqrt(w ** 2 + 1e-6)), rtol=1e-5)


def test_batch_equals_items_and_dtypes():
    y = torch.from_numpy(np.stack([_tone(4096, seed=5), _tone(4096, seed=6)]))
    batch = spectrogram_torch(y)
    for i in range(2): torch.testing.assert_close(batch[i:i + 1], spectrogram_torch(y[i:i + 1]))
    out64 = spectrogram_torch(y.double())
    assert out64.dtype == torch.float32                           # always computed in float32
    torch.testing.assert_close(out64, batch)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert spectrogram_torch(y).dtype == torch.float32
        assert mel_spectrogram_torch(y, 1024, 80, SR, 256, 1024, 0.0, None).dtype == torch.float32


def test_window_and_mel_basis_cached():
    spectrogram_torch(torch.randn(1, 2048)); spectrogram_torch(torch.randn(1, 2048))
    w = audio._hann(1024, torch.device('cpu'), torch.float32)
    assert w is audio._hann(1024, 'cpu', torch.float32)
    torch.testing.assert_close(w, torch.hann_window(1024))
    assert mel_basis(1024, 80, SR, 0.0, None) is mel_basis(1024, 80, SR, 0.0, None)


def test_spectrogram_bad_input():
    with pytest.raises(ValueError, match=r'\[b, T\]'): spectrogram_torch(torch.randn(4096))
    with pytest.raises(ValueError, match=r'\[b, T\]'): spectrogram_torch(np.zeros((1, 4096)))
    with pytest.raises(ValueError, match='too short'): spectrogram_torch(torch.randn(1, 384))


# ---- mel ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('sr,n_fft,hop,n_mels,fmin,fmax', [(22050, 1024, 256, 80, 0.0, None), (16000, 512, 128, 40, 50.0, 7000.0)])
def test_mel_matches_librosa(sr, n_fft, hop, n_mels, fmin, fmax):
    y = np.stack([_tone(8192, sr, seed=7), _tone(8192, sr, f=900, seed=8)])
    mel = mel_spectrogram_torch(torch.from_numpy(y), n_fft, n_mels, sr, hop, n_fft, fmin, fmax)
    pad = (n_fft - hop) // 2
    for i in range(2):
        yp = np.pad(y[i], (pad, pad), mode='reflect')
        M = librosa.feature.melspectrogram(y=yp, sr=sr, n_fft=n_fft, hop_length=hop, win_length=n_fft, window='hann',
                                           center=False, power=1.0, n_mels=n_mels, fmin=fmin, fmax=fmax)
        assert M.shape == mel[i].shape
        # the only modelled difference is the 1e-6 under the square root: each linear bin moves by at most
        # sqrt(1e-6) = 1e-3, so mel band b moves by at most 1e-3 * sum_k M[b, k] (plus float32 round-off)
        basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        bound = 1e-3 * basis.sum(1, keepdims=True) + 1e-5 * M.max()
        ours = np.exp(mel[i].numpy())
        assert (np.abs(ours - M) <= bound).all() and (ours >= M - 1e-5 * M.max()).all()
        loud = M > 0.1                                              # where the epsilon is negligible: 1e-4 in log
        np.testing.assert_allclose(mel[i].numpy()[loud], np.log(M[loud]), rtol=0, atol=1e-4)


def test_mel_routes_agree_and_basis_is_librosa():
    y = torch.from_numpy(_tone(4096))[None]
    spec = spectrogram_torch(y)
    torch.testing.assert_close(spec_to_mel_torch(spec, 1024, 80, SR, 0.0, None), mel_spectrogram_torch(y, 1024, 80, SR, 256, 1024, 0.0, None))
    ref = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=80, fmin=0.0, fmax=None)
    np.testing.assert_array_equal(mel_basis(1024, 80, SR, 0.0, None).numpy(), ref)
    torch.testing.assert_close(spec_to_mel_torch(spec, 1024, 80, SR, 0.0, None), torch.log(torch.clamp(torch.from_numpy(ref) @ spec, min=1e-5)))


def test_mel_silence_floor_and_finite_grad():
    z = torch.zeros(2, 2048, requires_grad=True)
    mel = mel_spectrogram_torch(z, 1024, 80, SR, 256, 1024, 0.0, None)
    floor = torch.log(torch.clamp(1e-3 * mel_basis(1024, 80, SR, 0.0, None).sum(1), min=1e-5))
    torch.testing.assert_close(mel, floor[None, :, None].expand_as(mel))
    mel.sum().backward()
    assert torch.isfinite(z.grad).all()
    spec = torch.full((1, 513, 3), 1e-9)
    torch.testing.assert_close(spec_to_mel_torch(spec, 1024, 80, SR, 0.0, None), torch.full((1, 80, 3), float(np.log(1e-5))))


def test_spec_to_mel_wrong_bins():
    with pytest.raises(ValueError, match='513'):
        spec_to_mel_torch(torch.ones(1, 512, 4), 1024, 80, SR, 0.0, None)
