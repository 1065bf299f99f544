"""An offline recognizer for intelligibility checks: pocketsphinx (its US-English model installs with the package)."""
import functools, re
import numpy as np


@functools.lru_cache(maxsize=1)
def _decoder():
    from pocketsphinx import Decoder
    return Decoder(samprate=16000, logfn='/dev/null')


def recognize(audio, sr):
    "pocketsphinx's transcript of float `audio` at `sr` (resampled to 16 kHz, peak-normalised)."
    import librosa
    a = librosa.resample(np.asarray(audio, np.float32), orig_sr=sr, target_sr=16000)
    pcm = (np.clip(a / max(1e-6, float(np.abs(a).max())) * .9, -1, 1) * 32767).astype('<i2').tobytes()
    dec = _decoder()
    dec.start_utt(); dec.process_raw(pcm, full_utt=True); dec.end_utt()
    hyp = dec.hyp()
    return hyp.hypstr if hyp else ''


def words(text): return re.sub(r"[^a-z' ]", ' ', text.lower()).split()


def word_errors(ref, hyp):
    "(word edit distance, reference word count)."
    r, h = words(ref), words(hyp)
    d = np.arange(len(h) + 1)
    for i, rw in enumerate(r, 1):
        prev, d[0] = d.copy(), i
        for j, hw in enumerate(h, 1): d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (rw != hw))
    return int(d[len(h)]), len(r)
