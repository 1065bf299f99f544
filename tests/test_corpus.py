"""The offline toy corpus: the sentence file, the teacher voices, and a 4-sentence build (single and
multi-speaker) checked for layout, audio format, filelists, idempotency and determinism."""
import json, shutil, string
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vits_nb import corpus
from vits_nb.corpus import (SAMPLE_RATE, VOICES, Voice, build_toy_corpus, check_teacher, get_voice, speak,
                            toy_sentences)

ROOT = Path(__file__).resolve().parents[1]
HAVE_TEACHERS = shutil.which('text2wave') is not None and shutil.which('flite') is not None
needs_teachers = pytest.mark.skipif(not HAVE_TEACHERS, reason='festival/flite not installed '
                                    '(apt-get install festival festvox-us-slt-hts festvox-kallpc16k flite)')
MULTI_VOICES = ['slt_hts', 'kal_diphone', 'flite_rms']   # 4 sentences over 3 voices: sid 0, 1, 2, 0
N = 4


# ---- the sentence file (no teacher needed) -------------------------------------------------------------------
def test_sentence_file():
    S = toy_sentences()
    assert S == toy_sentences(ROOT / 'data' / 'toy_sentences.txt')
    assert len(S) >= 620
    assert len(set(S)) == len(S), 'duplicate sentences'
    printable = set(string.printable) - set('\t\n\r\x0b\x0c')
    for i, s in enumerate(S, 1):
        assert 3 <= len(s.split()) <= 25, (i, s)
        assert set(s) <= printable, (i, s)
        assert '|' not in s and s == ' '.join(s.split()), (i, s)
    # the mix the text frontend needs: questions, exclamations, numbers, money, percent, abbreviations, punctuation
    assert sum(s.endswith('?') for s in S) >= 40 and sum(s.endswith('!') for s in S) >= 30
    assert sum(any(c.isdigit() for c in s) for s in S) >= 80
    for token in ['$', '%', 'Mr.', 'Dr.', 'St.', ';', ':', '"', '(', ' -- ', ',']:
        assert any(token in s for s in S), token
    assert len({w.lower().strip('.,;:!?"()') for s in S for w in s.split()}) > 2000   # varied vocabulary


def test_sentence_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match='toy corpus sentences not found'):
        toy_sentences(tmp_path / 'nope.txt')
    (tmp_path / 's.txt').write_text('One two three.\n\n  Four five six.  \n')
    assert toy_sentences(tmp_path / 's.txt') == ['One two three.', 'Four five six.']


def test_voice_table():
    assert len(VOICES) == 7 and len({(v.engine, v.name) for v in VOICES.values()}) == 7
    assert get_voice('slt_hts') == Voice('festival', 'cmu_us_slt_arctic_hts', 'female', 'festival festvox-us-slt-hts',
                                         VOICES['slt_hts'].about)
    with pytest.raises(ValueError, match="unknown teacher voice 'nobody'.*slt_hts"):
        get_voice('nobody')


def test_missing_binary_names_the_apt_package(monkeypatch):
    monkeypatch.setattr(corpus.shutil, 'which', lambda exe: None)
    with pytest.raises(RuntimeError, match='needs `text2wave`.*apt-get install festival festvox-us-slt-hts'):
        check_teacher('slt_hts')
    with pytest.raises(RuntimeError, match='needs `flite`.*apt-get install flite'):
        build_toy_corpus('/nonexistent/toy', sentences=['a b c', 'd e f'], voices=['flite_awb'], progress=False)


# ---- a 4-sentence build ----------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def built(tmp_path_factory):
    if not HAVE_TEACHERS: pytest.skip('festival/flite not installed')
    d = tmp_path_factory.mktemp('corpus')
    single = build_toy_corpus(d / 'toy', n=N, progress=False)
    multi = build_toy_corpus(d / 'toy_multi', n=N, multispeaker=True, voices=MULTI_VOICES, progress=False)
    return d, single, multi


def _rows(p): return [l.split('|') for l in Path(p).read_text(encoding='utf-8').splitlines()]


@needs_teachers
def test_layout_and_filelists(built):
    d, single, multi = built
    S = toy_sentences()[:N]
    ids = [f'toy_{i:04d}' for i in range(1, N + 1)]
    for st, sub in ((single, 'toy'), (multi, 'toy_multi')):
        root = d / sub
        assert sorted(p.name for p in (root / 'wavs').iterdir()) == [f'{i}.wav' for i in ids]
        assert _rows(root / 'metadata.csv') == [[i, s, s] for i, s in zip(ids, S)]
        assert (st['n_utterances'], st['n_train'], st['n_val'], st['n_generated']) == (N, N - 1, 1, N)
        assert json.loads((root / 'stats.json').read_text()) == st
    # single speaker: path|text, the official ljs format; train and val partition the corpus
    tr, va = (_rows(d / 'toy' / f'toy_audio_text_{s}_filelist.txt') for s in ('train', 'val'))
    assert all(len(r) == 2 for r in tr + va)
    assert sorted(tuple(r) for r in tr + va) == [(str(d / 'toy' / 'wavs' / f'{i}.wav'), s) for i, s in zip(ids, S)]
    assert single['speakers'] == {'slt_hts': 0} and single['n_speakers'] == 1
    # multi-speaker: path|sid|text with round-robin speaker ids
    tr, va = (_rows(d / 'toy_multi' / f'toy_audio_sid_text_{s}_filelist.txt') for s in ('train', 'val'))
    assert sorted(tuple(r) for r in tr + va) == [(str(d / 'toy_multi' / 'wavs' / f'{i}.wav'), str(k % 3), s)
                                                for k, (i, s) in enumerate(zip(ids, S))]
    assert multi['speakers'] == {'slt_hts': 0, 'kal_diphone': 1, 'flite_rms': 2} and multi['n_speakers'] == 3
    man = json.loads((d / 'toy_multi' / 'manifest.json').read_text())
    assert [man[i]['voice'] for i in ids] == ['slt_hts', 'kal_diphone', 'flite_rms', 'slt_hts']


@needs_teachers
def test_cleaned_filelists(built):
    pytest.importorskip('vits_nb.text')
    d, single, multi = built
    assert single['cleaned'] and multi['cleaned']
    for p in list(single['filelists'].values()) + list(multi['filelists'].values()):
        raw, cl = _rows(p), _rows(p + '.cleaned')
        assert [r[:-1] for r in raw] == [r[:-1] for r in cl]               # paths and sids untouched
        assert all('ˈ' in r[-1] and r[-1] != s[-1] for r, s in zip(cl, raw))   # stressed IPA, not the raw text


@needs_teachers
def test_audio_format_and_durations(built):
    d, single, multi = built
    S = toy_sentences()[:N]
    for st, sub in ((single, 'toy'), (multi, 'toy_multi')):
        durs = []
        for i, s in enumerate(S, 1):
            p = d / sub / 'wavs' / f'toy_{i:04d}.wav'
            info = sf.info(str(p))
            assert (info.samplerate, info.channels, info.subtype, info.format) == (SAMPLE_RATE, 1, 'PCM_16', 'WAV')
            y, _ = sf.read(str(p))
            secs, words = len(y) / SAMPLE_RATE, len(s.split())
            durs.append(secs)
            assert 0.15 * words <= secs <= 0.3 + 0.8 * words, (p, secs, words)   # about 2-6 words per second
            assert np.sqrt(np.mean(y ** 2)) > 0.01 and np.abs(y).max() > 0.1        # speech, not silence
            # moderate trim: the 0.1 s pad is quiet, and speech starts within ~0.2 s
            peak = np.abs(y).max()
            assert np.abs(y[:441]).max() < 0.1 * peak and np.abs(y[-441:]).max() < 0.1 * peak
            assert np.argmax(np.abs(y) > 0.1 * peak) < 0.2 * SAMPLE_RATE
        assert st['total_seconds'] == pytest.approx(sum(durs), abs=2e-3)
        assert (st['min_seconds'], st['max_seconds']) == pytest.approx((min(durs), max(durs)), abs=1e-3)


@needs_teachers
def test_rerun_regenerates_nothing(built):
    d, single, multi = built
    for sub, kw in (('toy', {}), ('toy_multi', dict(multispeaker=True, voices=MULTI_VOICES))):
        files = sorted((d / sub).rglob('*'))
        before = {p: p.stat().st_mtime_ns for p in files if p.name != 'stats.json'}
        st = build_toy_corpus(d / sub, n=N, progress=False, **kw)
        assert (st['n_generated'], st['n_reused'], st['realtime_factor']) == (0, N, None)
        assert {p: p.stat().st_mtime_ns for p in before} == before   # wavs, filelists, .cleaned untouched


@needs_teachers
def test_rerun_repairs_what_changed(built, tmp_path):
    d, single, _ = built
    shutil.copytree(d / 'toy', tmp_path / 'toy')
    w = tmp_path / 'toy' / 'wavs'
    (w / 'toy_0002.wav').write_bytes((w / 'toy_0002.wav').read_bytes()[:44])   # header only: no samples
    keep = {i: (w / f'toy_000{i}.wav').stat().st_mtime_ns for i in (1, 4)}
    S = toy_sentences()[:N]
    S[2] = 'A different third sentence, spoken fresh.'
    st = build_toy_corpus(tmp_path / 'toy', sentences=S, progress=False)
    assert (st['n_generated'], st['n_reused']) == (2, 2)
    assert {i: (w / f'toy_000{i}.wav').stat().st_mtime_ns for i in (1, 4)} == keep
    assert json.loads((tmp_path / 'toy' / 'manifest.json').read_text())['toy_0003']['text'] == S[2]
    assert not list(w.glob('*.tmp'))                                             # atomic writes leave nothing


@needs_teachers
@pytest.mark.parametrize('voice', ['slt_hts', 'ked_diphone', 'flite_awb'])
def test_speaking_is_deterministic(voice, tmp_path):
    text = 'Mr. Ward paid $4.50 for 12 eggs; "cheap," he said.'
    a, b = tmp_path / 'a.wav', tmp_path / 'b.wav'
    sa, sb = speak(text, voice, a), speak(text, voice, b)
    assert sa == sb and a.read_bytes() == b.read_bytes()


@needs_teachers
def test_build_matches_speak(built, tmp_path):
    "The corpus wav is exactly what `speak` makes of the sentence with the voice: builds are reproducible."
    d, _, _ = built
    S = toy_sentences()
    speak(S[1], 'kal_diphone', tmp_path / 'x.wav')
    assert (tmp_path / 'x.wav').read_bytes() == (d / 'toy_multi' / 'wavs' / 'toy_0002.wav').read_bytes()


@needs_teachers
def test_missing_voices_and_bad_input(tmp_path):
    with pytest.raises(RuntimeError, match="festival voice 'no_such_voice' failed.*apt-get install festival"):
        speak('Hello there.', Voice('festival', 'no_such_voice', 'female', 'festival', ''), tmp_path / 'a.wav')
    with pytest.raises(RuntimeError, match="flite has no voice 'no_such_voice'"):
        speak('Hello there.', Voice('flite', 'no_such_voice', 'female', 'flite', ''), tmp_path / 'a.wav')
    with pytest.raises(ValueError, match="unknown teacher voice 'nobody'"):
        build_toy_corpus(tmp_path / 't', n=2, voices=['nobody'], progress=False)
    with pytest.raises(ValueError, match='text is empty'): speak('  ', 'slt_hts', tmp_path / 'a.wav')
    with pytest.raises(TypeError, match='text must be a str'): speak(3, 'slt_hts', tmp_path / 'a.wav')
    with pytest.raises(ValueError, match='n must be at least 2'): build_toy_corpus(tmp_path / 't', n=1)
    with pytest.raises(ValueError, match='takes one voice'):
        build_toy_corpus(tmp_path / 't', n=2, voices=['slt_hts', 'flite_rms'])
    with pytest.raises(ValueError, match='at least 2 voices'):
        build_toy_corpus(tmp_path / 't', n=2, multispeaker=True, voices=['slt_hts'])
    with pytest.raises(ValueError, match='voices repeat'):
        build_toy_corpus(tmp_path / 't', n=2, multispeaker=True, voices=['slt_hts', 'slt_hts'])
    with pytest.raises(ValueError, match=r'sentences \[2\]'):
        build_toy_corpus(tmp_path / 't', sentences=['fine one here', 'a|b c'])
    assert not (tmp_path / 'a.wav').exists() and not (tmp_path / 't').exists()
