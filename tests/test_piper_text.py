"""vits_nb.piper_text: Piper phoneme ids from espeak-ng, checked against ids piper-tts 1.8.0 made.

tests/fixtures/piper_ids.json holds our own texts, the ids piper-tts gave for them with
en_US-joe-medium and that voice's phoneme_id_map (written by bench_piper_text.py --fixture), so
these tests need no piper-tts; where piper-tts is importable one test also compares live."""
import json, random, subprocess, sys, threading, warnings
from pathlib import Path
import pytest

from vits_nb import piper_text as PT
from vits_nb.piper_text import (PiperFrontend, espeak_phonemes, phonemes_to_ids, palatal_glide,
                                clause_terminator, UnknownPhonemeWarning, EspeakBuildError)

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = json.loads((ROOT / 'tests' / 'fixtures' / 'piper_ids.json').read_text(encoding='utf-8'))
CONFIG = FIXTURE['config']
ID = {k: v[0] for k, v in CONFIG['phoneme_id_map'].items()}


def joined(sentences): return [''.join(s) for s in sentences]


@pytest.fixture(scope='module')
def fe(): return PiperFrontend(CONFIG)


def test_defaults_per_family(fe):
    assert (fe.voice, fe.build, fe.glide) == ('en-us', 'loader', True)
    assert PiperFrontend(dict(CONFIG, espeak={'voice': 'de'})).glide is False
    assert PT.espeak_version('loader') == '1.52.0' and PT.espeak_version('system') == '1.51'


@pytest.mark.parametrize('case', FIXTURE['sentences'], ids=lambda c: c['text'][:30])
def test_fixture_ids_exact(case):
    fe = PiperFrontend(dict(CONFIG, espeak={'voice': case['voice']}))
    assert joined(fe.phonemes(case['text'])) == case['phonemes']
    assert fe.sentences(case['text']) == case['ids']


def test_known_sentence_layout(fe):
    ids = fe.text_to_ids('Is the library open at 9:15 on Sunday?')
    assert ids == FIXTURE['sentences'][2]['ids'][0]
    assert ids[:12] == [1, 0, ID['ɪ'], 0, ID['z'], 0, ID[' '], 0, ID['ð'], 0, ID['ə'], 0]
    assert ids[-3:] == [ID['?'], 0, 2]
    # ^ _ p1 _ p2 _ ... pn _ $: every second id is the pad, BOS and EOS at the ends
    assert ids[0] == 1 and ids[-1] == 2 and set(ids[1:-1:2]) == {0} and len(ids) % 2 == 1
    n = len(fe.phonemes('Is the library open at 9:15 on Sunday?')[0])
    assert len(ids) == 2 * n + 3


def test_phonemes_to_ids_layout_and_map():
    m = {'_': [0], '^': [1], '$': [2], 'a': [4], 'b': [5, 6]}
    assert phonemes_to_ids([], m) == [1, 0, 2]
    assert phonemes_to_ids(['a', 'b'], m) == [1, 0, 4, 0, 5, 6, 0, 2]   # a multi-id symbol
    assert phonemes_to_ids(['x', 'a'], m, phoneme_map={'x': ['b', 'a']}) == [1, 0, 5, 6, 0, 4, 0,
                                                                            4, 0, 2]
    with pytest.raises(ValueError, match='BOS/pad/EOS'): phonemes_to_ids(['a'], {'a': [4]})


def test_nfd_splitting():
    assert espeak_phonemes('ich', voice='de')[0] == ['ɪ', 'c', '\u0327']   # ç = c + cedilla
    ids = phonemes_to_ids('ç', CONFIG['phoneme_id_map'])                 # a str is NFD-split too
    assert ids == [1, 0, ID['c'], 0, ID['\u0327'], 0, 2]


def test_terminator_punctuation():
    s = espeak_phonemes('Hello, world: one; two. Yes? No!')
    assert joined(s) == ['həlˈoʊ, wˈɜːld: wˌʌn; tˈuː.', 'jˈɛs?', 'nˈoʊ!']
    assert s[0][6:8] == [',', ' '] and s[0].count(' ') == 3      # ', ' ': ' '; ' keep their space
    assert all(p in ''.join(s[0]) for p in (', ', ': ', '; ')) and s[0][-1] == '.'
    assert clause_terminator('Hello, w', False) == (',', False)
    assert clause_terminator('Really?"', False) == ('?', True)
    assert clause_terminator('here?!', True) == ('?', True)
    assert clause_terminator('ok ... f', False) == ('', False)
    assert clause_terminator('Hello world', True) == ('', True)
    assert clause_terminator('مرحبا، ك', False) == (',', False)       # Arabic comma: Piper's ','
    assert clause_terminator('你好，世', False) == ('', False)         # CJK comma: a pause, no symbol


def test_sentence_splitting(fe):
    assert len(fe.sentences('One. Two? Three!')) == 3
    assert len(fe.sentences('Wait... what?')) == 1                    # an ellipsis is a pause
    assert len(fe.sentences('Line one\n\nLine two')) == 2             # a paragraph ends a sentence
    assert len(fe.sentences('He said: "no", twice')) == 1
    assert joined(fe.phonemes('One,\n\nTwo.')) == ['wˌʌn', 'tˈuː.']  # a blank line drops the ','
    long = ' '.join(['the quick brown fox jumps over the lazy dog and'] * 20) + '.'
    assert len(PT.espeak_engine('loader').clauses(long, 'en-us')) == 2   # espeak splits it ...
    assert len(fe.sentences(long)) == 1                                  # ... in one sentence
    with pytest.raises(ValueError, match=r'holds 2 sentences: use \.sentences'):
        fe.text_to_ids('Stop the car! I think we left the dog.')


def test_glide_rule():
    assert palatal_glide('ðɪ ˈɛnd') == 'ðɪʲ ˈɛnd'
    assert palatal_glide('ɐkwˈɛɹiəm') == 'ɐkwˈɛɹiəm'        # iə is one espeak phoneme
    assert palatal_glide('pˈeɪ ɪt ˈɛmpti ænd') == 'pˈeɪ ɪt ˈɛmpti ænd'
    assert palatal_glide('maɪ ˈʌŋkəl') == 'maɪʲ ˈʌŋkəl'
    plain = joined(espeak_phonemes('The end of the story.'))
    assert plain == ['ðɪ ˈɛnd ʌvðə stˈɔːɹi.']
    glided = joined(espeak_phonemes('The end of the story.', glide=True))
    assert glided == ['ðɪʲ ˈɛnd ʌvðə stˈɔːɹi.']


def test_builds_differ_where_measured():
    assert joined(espeak_phonemes('four', build='loader')) == ['fˈɔːɹ']
    assert joined(espeak_phonemes('four', build='system')) == ['fˈoːɹ']


def test_unknown_phonemes_one_warning():
    cfg = dict(CONFIG, phoneme_id_map={k: v for k, v in CONFIG['phoneme_id_map'].items()
                                       if k not in ('ɹ', 'ʃ')})
    fe = PiperFrontend(cfg)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        ids = fe.sentences('She ran. Fresh fish, red shirts!')
    assert len(w) == 1 and issubclass(w[0].category, UnknownPhonemeWarning)
    msg = str(w[0].message)
    assert "'ɹ'" in msg and "'ʃ'" in msg and 'LATIN SMALL LETTER ESH' in msg
    full = PiperFrontend(CONFIG).sentences('She ran. Fresh fish, red shirts!')
    drop = {ID['ɹ'], ID['ʃ']}
    assert len(ids) == len(full) == 2
    for got, want in zip(ids, full):    # the same ids, the unknown symbols (and their pads) gone
        pairs = [(want[i], want[i + 1]) for i in range(2, len(want) - 1, 2)]
        assert got == [1, 0] + [x for p, pad in pairs if p not in drop for x in (p, pad)] + [2]
        assert len(got) < len(want)


def test_coexists_with_english_cleaners2():
    # in this process: the loader build is loaded by now (module fixture), the official frontend
    # still speaks Debian's 1.51 (oːɹ)
    from vits_nb.text import english_cleaners2
    espeak_phonemes('four', build='loader')
    assert english_cleaners2('four') == 'fˈoːɹ'
    # a fresh process that loads the loader build FIRST, then creates phonemizer's backend
    code = ("from vits_nb.piper_text import espeak_phonemes as e; a = ''.join(e('four')[0]); "
            "from vits_nb.text import english_cleaners2 as c; b = c('four'); "
            "print(a, b, ''.join(e('four', build='system')[0]))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['fˈɔːɹ', 'fˈoːɹ', 'fˈoːɹ']


def test_thread_safe():
    rng = random.Random(0)
    lines = (ROOT / 'data' / 'toy_sentences.txt').read_text().split('\n')
    texts = rng.sample([l for l in lines if l], 40)
    want = [espeak_phonemes(t) for t in texts]
    got, errors = [None] * len(texts), []

    def work(k):
        try:
            for i in range(k, len(texts), 4): got[i] = espeak_phonemes(texts[i])
        except Exception as e: errors.append(e)   # pragma: no cover
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors and got == want


def test_errors(fe, monkeypatch):
    for bad in ('', '   \n'):
        with pytest.raises(ValueError, match='text is empty'): fe.sentences(bad)
    with pytest.raises(ValueError, match=r"nothing to speak in '\.\.\. \?'"):
        fe.text_to_ids('... ?')
    with pytest.raises(TypeError, match='must be a str'): fe.sentences(b'hello')
    with pytest.raises(TypeError, match='must be a str'): espeak_phonemes(None)
    with pytest.raises(TypeError, match='must be a dict'): PiperFrontend('en-us')
    with pytest.raises(ValueError, match='no espeak.voice'): PiperFrontend(dict(CONFIG, espeak={}))
    with pytest.raises(ValueError, match='not supported'):
        PiperFrontend(dict(CONFIG, phoneme_type='text'))
    with pytest.raises(ValueError, match='unknown espeak-ng build'):
        PiperFrontend(CONFIG, build='brew')
    with pytest.raises(ValueError, match="no voice 'zz-none'"):
        espeak_phonemes('hi', voice='zz-none')
    # a build that is not installed: a clear error, and the Piper default falls back with a warning
    monkeypatch.setitem(sys.modules, 'espeakng_loader', None)
    with pytest.raises(EspeakBuildError, match='pip install espeakng-loader'):
        PT.espeak_build_paths('loader')
    with pytest.warns(UserWarning, match='espeakng-loader is not installed'):
        assert PiperFrontend(CONFIG).build == 'system'


def test_live_against_piper_tts():
    "With piper-tts installed: id error rate on 100 toy sentences under 1% (measured: ~0%)."
    pytest.importorskip('piper')
    sys.path.insert(0, str(ROOT / 'benchmarks'))
    from bench_piper_text import piper_ids_fn, edit_distance
    ref_fn = piper_ids_fn(CONFIG)
    fe = PiperFrontend(CONFIG)
    for case in FIXTURE['sentences'][:-1]:   # the fixture's en-us texts, live
        assert fe.sentences(case['text']) == ref_fn(case['text'])
    lines = [l for l in (ROOT / 'data' / 'toy_sentences.txt').read_text().split('\n') if l]
    texts = random.Random(0).sample(lines, 100)
    err = tot = 0
    for t in texts:
        a, b = sum(fe.sentences(t), []), sum(ref_fn(t), [])
        err += edit_distance(a, b); tot += len(b)
    assert err / tot < 0.01
