"""Text frontend benchmark: phonemization speed (batched vs one line per call) and fidelity of
english_cleaners2 against the official `.cleaned` filelists (CER, exact lines, dropped characters).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_text.py [FILELIST_DIR] [--sample N]

FILELIST_DIR defaults to ../shared/reference/filelists (next to the repository); the script skips
gracefully when it is absent. It prints figures only, never transcript lines."""
import argparse, collections, difflib, random, sys, time, warnings
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vits_nb import text as T   # noqa: E402

LISTS = ['ljs_audio_text_val_filelist.txt', 'ljs_audio_text_train_filelist.txt',
         'vctk_audio_sid_text_val_filelist.txt', 'vctk_audio_sid_text_train_filelist.txt']


def edit_distance(a, b):
    "Levenshtein distance, one numpy row per character of `a`."
    if a == b: return 0
    if not a or not b: return len(a) + len(b)
    bb = np.array([ord(c) for c in b]); ar = np.arange(len(b) + 1)
    prev = ar.copy()
    for i, ca in enumerate(a, 1):
        t = np.empty_like(prev); t[0] = i
        t[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (bb != ord(ca)))
        prev = np.minimum.accumulate(t - ar) + ar     # insertions: cur[j] = min_k (t[k] + j - k)
    return int(prev[-1])


def read_texts(path):
    return [l.split('|')[-1] for l in path.read_text(encoding='utf-8').split('\n') if l.strip()]


def best_of(f, n=3):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return min(ts)


def bench_speed(texts):
    import phonemizer
    pre = [T._english_pre(t) for t in texts]
    T._espeak_backend()   # create the cached backend outside the timing
    kw = dict(language='en-us', backend='espeak', strip=True, preserve_punctuation=True, with_stress=True,
              punctuation_marks=T.PHONEMIZER_PUNCTUATION)
    rows = [('batched: clean_texts(lines)', best_of(lambda: T.clean_texts(texts))),
            ('per line, cached backend: english_cleaners2(line)', best_of(lambda: [T.english_cleaners2(t) for t in texts])),
            ('per line, new backend each call (official style)', best_of(lambda: [phonemizer.phonemize(p, **kw) for p in pre], 1))]
    base = rows[0][1]
    print(f'\n## phonemization speed, {len(texts)} lines (best of 3; official style: 1 run)')
    print(f"| {'method':52s} | lines/s | time vs batched |\n|---|---:|---:|")
    for name, t in rows: print(f'| {name:52s} | {len(texts) / t:7.0f} | {t / base:6.2f}x |')


def fidelity(folder, sample, rng):
    print('\n## fidelity vs official .cleaned (espeak-ng ' + espeak_version() + ')')
    print('| filelist | lines | CER % | CER % ignoring stress | exact lines % | dropped chars (ours) | dropped (official) | dropped with phonemizer default punctuation |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|')
    ops = collections.Counter()
    table = set(T.symbols)
    for name in LISTS:
        src, ref = folder / name, folder / (name + '.cleaned')
        if not (src.is_file() and ref.is_file()): print(f'| {name} | missing | | | | | | |'); continue
        raw, off = read_texts(src), read_texts(ref)
        assert len(raw) == len(off), name
        idx = list(range(len(raw)))
        if sample and len(idx) > sample: idx = sorted(rng.sample(idx, sample))
        raw, off = [raw[i] for i in idx], [off[i] for i in idx]
        ours = T.clean_texts(raw, progress=True)
        dropped = sum(c not in table for s in ours for c in s)
        dropped_off = sum(c not in table for s in off for c in s)
        # what phonemizer 3.x's default punctuation (which keeps (){}[]) would leave in the text
        br = [p for p in (T._english_pre(t) for t in raw) if any(c in p for c in '(){}[]')]
        dropped_default = 0
        if br:
            from phonemizer.backend import EspeakBackend
            import logging
            lg = logging.getLogger('quiet'); lg.setLevel(logging.ERROR)
            be = EspeakBackend('en-us', preserve_punctuation=True, with_stress=True, logger=lg)
            dropped_default = sum(c not in table for s in be.phonemize(br, strip=True) for c in s)
        dist = sum(edit_distance(o, r) for o, r in zip(ours, off)); n = sum(map(len, off))
        ns = lambda s: s.replace('ˈ', '').replace('ˌ', '')
        dist_ns = sum(edit_distance(ns(o), ns(r)) for o, r in zip(ours, off)); n_ns = sum(len(ns(r)) for r in off)
        exact = sum(o == r for o, r in zip(ours, off))
        tag = f' (sample {len(idx)})' if sample and len(idx) == sample else ''
        print(f'| {name}{tag} | {len(idx)} | {100 * dist / n:.2f} | {100 * dist_ns / n_ns:.2f} | {100 * exact / len(idx):.1f} '
              f'| {dropped} | {dropped_off} | {dropped_default} ({len(br)} lines with brackets) |')
        if 'val' in name:
            for o, r in zip(ours, off):
                for tag_, i1, i2, j1, j2 in difflib.SequenceMatcher(None, r, o, autojunk=False).get_opcodes():
                    if tag_ != 'equal': ops[f'{r[i1:i2] or "∅"} → {o[j1:j2] or "∅"}'] += 1
    print('\n## most frequent differences, official → ours (val lists)')
    print('| edit | count |\n|---|---:|')
    for k, v in ops.most_common(15): print(f'| {k} | {v} |')


def espeak_version():
    from phonemizer.backend import EspeakBackend
    return '.'.join(map(str, EspeakBackend.version()))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('folder', nargs='?', default=str(ROOT.parent / 'shared' / 'reference' / 'filelists'))
    ap.add_argument('--sample', type=int, default=0, help='random lines per train list (0: all)')
    ap.add_argument('--speed-lines', type=int, default=2000)
    a = ap.parse_args()
    folder, rng = Path(a.folder), random.Random(0)
    if not (folder / LISTS[0]).is_file():
        print(f'filelists not found in {folder}: skipping (pass the folder as the first argument)'); return
    texts = read_texts(folder / LISTS[1])
    bench_speed(rng.sample(texts, min(a.speed_lines, len(texts))))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        fidelity(folder, a.sample, rng)


if __name__ == '__main__':
    main()
