"""Long text, bounded memory (issue 15): peak RSS of a fresh process speaking 50, 1,000 and 5,000 words.

    .venv/bin/python benchmarks/bench_long_text.py [--threads 2] [--runtimes torch,onnx] [--words 50,1000,5000]
        [--modes synthesize,stream] [--torch-max-words 5000] [--heaps default,bounded]

Voice: the shipped Piper voice (`vits_nb.piper.shipped_voice()`, en_US-joe-medium): `TTS.from_piper()` for PyTorch,
`OnnxTTS(shipped_voice())` for onnxruntime (that process never imports torch).
Texts: the 50-word text is one sentence of a fixed list of common English words with a full stop; the 1,000- and
5,000-word texts cycle the same list (order shuffled with numpy seed 0) with no punctuation at all, so nothing but
`split_long` (`MAX_WORDS` = 40 words a piece) cuts them.
Each (runtime, text, mode) runs in a fresh child process (this script with --one) with `threads` threads; the
child prints its peak RSS after import + load and after speaking (VmHWM from /proc/self/status, and
`ru_maxrss`), wall time of the speaking, seconds of audio and the real-time factor (wall / audio).
Modes: `synthesize` returns the whole float32 waveform (it grows with the text: 4 bytes x 22,050 a second);
`stream` consumes `stream(...)` piece by piece and keeps only a running sample count (and the peak |x|).
Heaps: `default` is glibc malloc as it starts; `bounded` calls `vits_nb.onnx_synth.bound_heap()` first (a fixed
1 MiB mmap threshold, as `vits-nb synth` does), so large blocks are mapped and freed whole.
"""
import argparse, json, os, platform, resource, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')   # fair torch threading on a shared machine (see bench_onnx)

WORDS = ('the people of the town walked along the river every morning and talked about the weather the market '
         'the children and the new school near the old church while the baker sold warm bread to everyone who '
         'passed by his small shop on the corner of the main street before the long day of work began').split()


def make_text(n_words, seed=0):
    "`n_words` words: the fixed list cycled; 50 words or fewer: one sentence with a full stop, else no punctuation."
    import numpy as np
    if n_words <= 50:
        words = (WORDS * (n_words // len(WORDS) + 1))[:n_words]
        return ' '.join(words).capitalize() + '.'
    order = np.random.default_rng(seed).permutation(len(WORDS))
    words = [WORDS[order[i % len(WORDS)]] for i in range(n_words)]
    return ' '.join(words)


def _rss():
    "(VmHWM MiB, ru_maxrss MiB) of this process."
    hwm = None
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'): hwm = int(line.split()[1]) / 1024
    return hwm, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(runtime, n_words, mode, threads, voice, heap='default'):
    "Load the shipped voice (`voice`: its path, found by `shipped_voice()`), speak the text once, print one JSON line."
    import numpy as np
    text = make_text(n_words)
    assert len(text.split()) == n_words
    if heap == 'bounded':
        from vits_nb.onnx_synth import bound_heap
        assert bound_heap()
    if runtime == 'onnx':                    # vits_nb.piper imports torch: the path comes from the parent
        from vits_nb.onnx_synth import OnnxTTS
        tts = OnnxTTS(voice, threads=threads, seed=0)
        kw = {}
    else:
        import torch
        torch.set_num_threads(threads)
        from vits_nb.synth import TTS
        tts = TTS.from_piper(voice)
        kw = {'seed': 0}
    loaded = _rss()
    t0 = time.perf_counter()
    if mode == 'synthesize':
        audio, sr = tts.synthesize(text, **kw)
        n_samples, peak_abs = len(audio), float(np.abs(audio).max())
        wall = time.perf_counter() - t0
        after = _rss()
        pieces = len(tts.sentence_ids(text))
    else:
        sr, n_samples, peak_abs, n_yield = tts.sample_rate, 0, 0., 0
        for a in tts.stream(text, **kw):
            n_samples += len(a); n_yield += 1
            if len(a): peak_abs = max(peak_abs, float(np.abs(a).max()))
        wall = time.perf_counter() - t0
        after = _rss()
        pieces = (n_yield + 1) // 2                      # piece, gap, piece, ..., piece
    assert np.isfinite(peak_abs) and 0 < peak_abs <= 1.5, peak_abs
    print(json.dumps({'runtime': runtime, 'words': n_words, 'mode': mode, 'heap': heap, 'pieces': pieces,
                      'audio_s': n_samples / sr, 'wall_s': wall, 'hwm_loaded': loaded[0], 'hwm': after[0],
                      'maxrss_loaded': loaded[1], 'maxrss': after[1], 'torch': 'torch' in sys.modules}))


def shipped_voice_path():
    "`shipped_voice()` in a throwaway process (it imports torch; this parent stays small: ru_maxrss carries over exec)."
    return subprocess.run([sys.executable, '-c', 'import sys; sys.path.insert(0, sys.argv[1]); '
                           'from vits_nb.piper import shipped_voice; print(shipped_voice())', str(ROOT)],
                          capture_output=True, text=True, check=True).stdout.strip()


def run_one(runtime, n_words, mode, threads, voice, heap='default'):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    p = subprocess.run([sys.executable, __file__, '--one', runtime, str(n_words), mode, '--threads', str(threads),
                        '--voice', voice, '--heaps', heap],
                       capture_output=True, text=True, env=env)
    if p.returncode: raise SystemExit(f'child {runtime} {n_words} {mode} failed:\n{p.stderr[-3000:]}')
    return json.loads(p.stdout.strip().splitlines()[-1])


def table(rows):
    "The markdown table of `rows` (the children's JSON lines)."
    print('\n| runtime | heap | text | mode | words | pieces | audio s | wall s | RTF | RSS after load MB | '
          'peak RSS MB | synthesis increment MB | peak vs 50-word row | load avg at start |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        same = [x for x in rows if x['runtime'] == r['runtime'] and x.get('heap', 'default') == r.get('heap', 'default')]
        base = next(b for b in same if b['words'] == min(x['words'] for x in same))
        text = 'one sentence' if r['words'] <= 50 else 'no punctuation'
        print(f"| {r['runtime']} | {r.get('heap', 'default')} | {text} | {r['mode']} | {r['words']:,} | {r['pieces']} | {r['audio_s']:.1f} | "
              f"{r['wall_s']:.1f} | {r['wall_s'] / r['audio_s']:.3f} | {r['hwm_loaded']:.0f} | {r['hwm']:.0f} | "
              f"{r['hwm'] - r['hwm_loaded']:.0f} | {r['hwm'] / base['hwm']:.2f} | {r['load']:.2f} |")
    print('\nRSS = VmHWM (/proc/self/status) of the child; ru_maxrss agrees within',
          f"{max(abs(r['maxrss'] - r['hwm']) for r in rows):.0f} MB on these rows.")



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--one', nargs=3, metavar=('RUNTIME', 'WORDS', 'MODE'))
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--rows', nargs='+', help='print the table of the JSON rows in these logs (no runs)')
    ap.add_argument('--voice', help='path of the shipped voice (default: shipped_voice())')
    ap.add_argument('--runtimes', default='torch,onnx')
    ap.add_argument('--words', default='50,1000,5000')
    ap.add_argument('--modes', default='synthesize,stream')
    ap.add_argument('--torch-max-words', type=int, default=5000, help='skip torch rows above this many words')
    ap.add_argument('--heaps', default='default,bounded')
    a = ap.parse_args()
    if a.rows:
        return table([json.loads(l) for f in a.rows for l in open(f) if l.startswith('{"runtime"')])
    voice = a.voice or shipped_voice_path()
    if a.one: return child(a.one[0], int(a.one[1]), a.one[2], a.threads, voice, a.heaps)
    import onnxruntime
    try:
        import importlib.metadata as md; tv = md.version('torch')
    except Exception: tv = '?'
    from vits_nb.onnx_synth import MAX_WORDS, MAX_SECONDS, MAX_WORD_CHARS
    print(f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {time.strftime("%Y-%m-%d")}; '
          f'torch {tv}, onnxruntime {onnxruntime.__version__}; threads {a.threads}; '
          f'MAX_WORDS {MAX_WORDS}, MAX_SECONDS {MAX_SECONDS}, MAX_WORD_CHARS {MAX_WORD_CHARS}', flush=True)
    rows = []
    for runtime in a.runtimes.split(','):
        for heap in a.heaps.split(','):
            for n in map(int, a.words.split(',')):
                if runtime == 'torch' and n > a.torch_max_words: continue
                for mode in a.modes.split(','):
                    if n <= 50 and mode == 'stream' and 'synthesize' in a.modes: continue   # the baseline row
                    load = os.getloadavg()[0]
                    r = run_one(runtime, n, mode, a.threads, voice, heap); r['load'] = load; rows.append(r)
                    print(json.dumps(r), flush=True)
    table(rows)


if __name__ == '__main__':
    main()
