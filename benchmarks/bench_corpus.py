"""Toy-corpus generation speed: wall time for N sentences on all cores vs one worker, per teacher voice.

    .venv/bin/python benchmarks/bench_corpus.py [--n 600] [--voices slt_hts,flite_rms] [--jobs 2]

For each voice it builds a fresh single-voice corpus of the first N toy sentences twice, in temporary
folders (nothing is kept): with `--jobs` workers (default: all cores) and with 1 worker. It prints the
audio produced, the wall seconds, the real-time factor (audio seconds / wall seconds) and the speed-up
of all cores over one worker as a ratio. One untimed sentence per voice warms up imports and caches. Phonemizing the filelists is left out (clean=False)."""
import argparse, os, sys, tempfile, time
from pathlib import Path

from vits_nb.corpus import VOICES, build_toy_corpus, speak, toy_sentences


def run(voice, n, jobs):
    with tempfile.TemporaryDirectory(prefix='bench_corpus_') as d:
        t = time.perf_counter()
        st = build_toy_corpus(Path(d) / 'toy', n=n, voices=[voice], jobs=jobs, clean=False, progress=False)
        wall = time.perf_counter() - t
        mb = sum(p.stat().st_size for p in (Path(d) / 'toy' / 'wavs').iterdir()) / 2 ** 20
    return st['total_seconds'], wall, mb


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=600, help='sentences per voice (default 600)')
    ap.add_argument('--voices', default=','.join(VOICES), help='comma-separated teacher voices (default: all)')
    ap.add_argument('--jobs', type=int, default=os.cpu_count(), help='workers for the parallel run (default: all cores)')
    a = ap.parse_args(argv)
    voices = a.voices.split(',')
    print(f'# toy corpus generation: {a.n} sentences per voice, {a.jobs} workers vs 1 worker '
          f'({os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")})')
    print(f'| voice | audio s | MB | wall s ({a.jobs} workers) | RTF ({a.jobs} workers) | wall s (1 worker) '
          f'| RTF (1 worker) | speed-up {a.jobs} vs 1 | min per hour of audio ({a.jobs} workers) |')
    print('|---|---|---|---|---|---|---|---|---|')
    for v in voices:
        with tempfile.TemporaryDirectory() as d:   # warm-up: imports (librosa) and the voice's files in the page cache
            speak(toy_sentences()[-1], v, Path(d) / 'w.wav')
        audio, wall_p, mb = run(v, a.n, a.jobs)
        _, wall_1, _ = run(v, a.n, 1)
        print(f'| {v} | {audio:.1f} | {mb:.1f} | {wall_p:.2f} | {audio / wall_p:.1f}x | {wall_1:.2f} | '
              f'{audio / wall_1:.1f}x | {wall_1 / wall_p:.2f} | {60 * wall_p / audio:.1f} |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
