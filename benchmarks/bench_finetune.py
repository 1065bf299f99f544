"""Fine-tuning the shipped voice on the toy corpus (vits_nb.finetune): the curve over CPU minutes.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_finetune.py [--schedule prior] [--minutes 15]
        [--every 2.5] [--run-dir runs/bench_finetune/SCHEDULE] [--threads 2] [--json out.json]
        [--eval-only] [--only STEP ...] [--posterior] [--rows out.json]

Trains with `vits_nb.finetune.finetune` (the main job's function; a re-run resumes), saving a checkpoint
every --every minutes of training, then scores every checkpoint (step 0 is the voice before fine-tuning,
its posterior recovered) on the toy corpus's 20 held-out sentences against the teacher's recordings of
the same sentences (festival's HTS slt, the corpus's own wavs):
  WER     pocketsphinx (its US-English model installs with the package); the teacher's own WER is the floor;
  F0      median F0 (pYIN) over all 20 utterances, Hz;
  dist    mean DTW mel-cepstral distance (MFCC 1-24, loudness normalised) to the teacher's recording;
  agree   held-out alignment agreement of heldout_metrics (MAS through the posterior vs the prior's
          durations), from the run's history;
  WER q   with --posterior: the recognizer's WER on the decoder's rendering of the posterior mean of the
          teacher's own spectrogram (the VAE's reconstruction path; inference never takes it), which
          separates how well the decoder renders speech from how well the prior's latents suit it.
--only scores just the listed checkpoint steps. --blend A scores each checkpoint's weights interpolated toward
the voice's (step 0): theta_0 + A (theta - theta_0), A = 1 the checkpoint itself (weight-space ensembling, as in
Wortsman et al. 2022's WiSE-FT: a fine-tune pulled back toward the model it started from). By default a library
schedule is scored with its own `blend` (acoustic: 0.8), i.e. as the voice the fine-tune hands over
(finetuned.pth); --blend 1 scores the trained weights. --seeds N averages every measure over N seeded renderings.
"half F0/dist" = (before - now) / (before - teacher): 0 no change, >= 0.5 the issue's target.
Sentences are spoken seeded (noise 0.667, noise_w 0.8). Minutes are the fine-tune's own training time
(wall, the loop only), CPU minutes its process time; the machine may be shared: say so."""
import argparse, json, os, platform, re, sys, time
from pathlib import Path
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tests'))


def corpus_config(run_root):
    "configs/toy_small.json with the toy corpus's raw filelists (the voice's frontend reads raw text)."
    from vits_nb.data import load_config
    from vits_nb.corpus import build_toy_corpus
    toy = ROOT / 'data' / 'toy'
    train, val = toy / 'toy_audio_text_train_filelist.txt', toy / 'toy_audio_text_val_filelist.txt'
    if not (train.is_file() and val.is_file()): build_toy_corpus(toy)
    hps = load_config(ROOT / 'configs' / 'toy_small.json')
    hps.data['training_files'], hps.data['validation_files'] = str(train), str(val)
    hps.data['cleaned_text'] = False
    run_root.mkdir(parents=True, exist_ok=True)
    cfg = run_root / 'corpus_config.json'
    cfg.write_text(json.dumps(hps.to_dict(), indent=1) + '\n')
    return cfg, val


def heldout(val):
    "(wav path, text) of the held-out rows."
    rows = [l.split('|') for l in val.read_text(encoding='utf-8').splitlines() if l.strip()]
    return [(r[0], r[-1]) for r in rows]


def score(tts, rows, teacher, recognize, seed=0, seeds=1):
    """WER, F0 median and DTW distance of `tts` speaking `rows` against `teacher` audio; with `seeds` > 1,
    the mean over that many seeded renderings of every row (seed, seed + 1000, ...)."""
    from vits_nb.finetune import speaker_measures
    if seeds > 1:
        runs = [score(tts, rows, teacher, recognize, seed + 1000 * j) for j in range(seeds)]
        return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    audios = []
    for i, (_, text) in enumerate(rows):
        a = tts.synthesize(text, seed=seed + i)
        audios.append(np.asarray(a[0] if isinstance(a, tuple) else a, np.float32).reshape(-1))
    return speaker_measures(audios, teacher, tts.sample_rate, recognize=recognize,
                            texts=[t for _, t in rows])


def posterior_wer(tts, rows, recognize):
    "WER of the decoder rendering the posterior mean of each row's teacher recording (noise off)."
    from vits_nb.audio import load_wav, spectrogram_torch
    from vits_nb.finetune import wer
    d, g, audios = tts.hps.data, tts.model, []
    for path, _ in rows:
        y = load_wav(path, d.sampling_rate)[0].reshape(1, -1)
        spec = spectrogram_torch(y, d.filter_length, d.hop_length, d.win_length)
        with torch.no_grad():
            _, m_q, _, mask = g.enc_q(spec, torch.tensor([spec.shape[-1]]))
            audios.append(g.dec(m_q * mask)[0, 0].numpy())
    return wer(recognize, audios, [t for _, t in rows], d.sampling_rate)


def evaluate_run(run_dir, rows, teacher, recognize, only=None, posterior=False, alpha=None, seeds=1):
    "One row per checkpoint G_<step>.pth of the run (or the steps in `only`): step, minutes, CPU minutes, measures."
    from vits_nb.synth import TTS
    from vits_nb.finetune import blend_state
    hist = json.loads((run_dir / 'finetune_history.json').read_text())
    evals = {e['step']: e for e in hist['evals']}
    out = []
    cks = sorted(run_dir.glob('G_*.pth'), key=lambda p: int(re.findall(r'\d+', p.name)[0]))
    tts0 = TTS.from_checkpoint(run_dir / 'G_0.pth', run_dir / 'config.json') if alpha is not None else None
    for ck in cks:
        step = int(re.findall(r'\d+', ck.name)[0])
        if only and step not in only: continue
        tts = TTS.from_checkpoint(ck, run_dir / 'config.json')
        if alpha is not None:                             # theta_0 + alpha (theta - theta_0), as finetune hands over
            tts.model.load_state_dict(blend_state(tts.model.state_dict(), tts0.model.state_dict(), alpha))
        e = evals.get(step, {})
        out.append(dict(step=step, minutes=e.get('seconds', float('nan')) / 60,
                        cpu_minutes=e.get('cpu_seconds', float('nan')) / 60,
                        agreement=e.get('align_agreement', float('nan')),
                        **score(tts, rows, teacher, recognize, seeds=seeds)))
        if posterior: out[-1]['wer_posterior'] = posterior_wer(tts, rows, recognize)
        print(f"  scored step {step}: WER {out[-1]['wer']:.3f}, F0 {out[-1]['f0_median']:.0f} Hz, "
              f"dist {out[-1]['spectral_distance']:.2f}", flush=True)
    return out


def table(res):
    t = res['teacher']
    q = any('wer_posterior' in r for r in res['rows'])
    lines = [f"teacher (floor): WER {t['wer']:.3f}, F0 median {t['f0_median']:.0f} Hz; "
             f"{res['n']} held-out sentences; schedule {res['schedule']}; {res['machine']}",
             '| step | train min | CPU min | WER | F0 median, Hz | half F0 | DTW dist | half dist | agree |'
             + (' WER q |' if q else ''), '|---:|---:|---:|---:|---:|---:|---:|---:|---:|' + ('---:|' if q else '')]
    b = res['rows'][0]
    for r in res['rows']:
        hf = (b['f0_median'] - r['f0_median']) / (b['f0_median'] - t['f0_median'])
        hd = (b['spectral_distance'] - r['spectral_distance']) / b['spectral_distance']
        lines.append(f"| {r['step']} | {r['minutes']:.1f} | {r['cpu_minutes']:.1f} | {r['wer']:.3f} | "
                     f"{r['f0_median']:.0f} | {hf:.2f} | {r['spectral_distance']:.2f} | {hd:.2f} | "
                     f"{r['agreement']:.3f} |" + (f" {r.get('wer_posterior', float('nan')):.3f} |" if q else ''))
    lines.append('half dist = the fraction of the distance to the teacher closed '
                 '(the teacher is at distance 0 from itself)')
    return '\n'.join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--schedule', default='prior')
    ap.add_argument('--minutes', type=float, default=15.)
    ap.add_argument('--every', type=float, default=2.5, help='save a checkpoint every M training minutes')
    ap.add_argument('--run-dir', type=Path, default=None)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--eval-only', action='store_true', help='score the run folder as it is')
    ap.add_argument('--json', type=Path)
    ap.add_argument('--rows', type=Path, help='reprint the table of a --json file and exit')
    ap.add_argument('--only', type=int, nargs='*', help='score only these checkpoint steps')
    ap.add_argument('--posterior', action='store_true', help='add the posterior-path WER column')
    ap.add_argument('--seeds', type=int, default=1, help='average the measures over N seeded renderings')
    ap.add_argument('--blend', type=float, default=None, help="score theta_0 + A (theta - theta_0)")
    a = ap.parse_args()
    if a.rows: print(table(json.loads(a.rows.read_text()))); return
    if a.only and 0 not in a.only: a.only = [0] + a.only     # step 0 is the table's baseline
    from vits_nb.finetune import SCHEDULES
    if a.blend is None: a.blend = SCHEDULES.get(a.schedule, {}).get('blend')   # what the run hands over
    if a.blend == 1: a.blend = None
    torch.set_num_threads(a.threads)
    from vits_nb.finetune import finetune, speaker_measures
    from vits_nb.piper import shipped_voice
    from vits_nb.audio import load_wav
    from asr import recognize
    run_root = ROOT / 'runs' / 'bench_finetune'
    run_dir = a.run_dir or run_root / a.schedule
    cfg, val = corpus_config(run_root)
    if not a.eval_only:
        t0 = time.time()
        finetune(shipped_voice(), cfg, run_dir, minutes=a.minutes, schedule=a.schedule,
                 save_minutes=a.every, keep=1000, progress=True)
        print(f'fine-tune: {(time.time() - t0) / 60:.1f} min wall in all', flush=True)
    rows = heldout(val)
    sr = json.loads((run_dir / 'config.json').read_text())['data']['sampling_rate']
    teacher = [load_wav(p, sr)[0].numpy() for p, _ in rows]
    t = speaker_measures(teacher, teacher, sr, recognize=recognize, texts=[x for _, x in rows])
    name = (a.schedule + (f', blend {a.blend}' if a.blend is not None else '')
            + (f', mean of {a.seeds} seeds' if a.seeds > 1 else ''))
    res = dict(schedule=name, n=len(rows), teacher=t, threads=a.threads,
               machine=f'{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, '
                       f'{a.threads} threads',
               rows=evaluate_run(run_dir, rows, teacher, recognize, only=a.only, posterior=a.posterior,
                                alpha=a.blend, seeds=a.seeds))
    if a.json: a.json.write_text(json.dumps(res, indent=1) + '\n')
    print(table(res))


if __name__ == '__main__':
    main()
