"""Recovering the shipped voice's posterior by the sleep phase (vits_nb.sleep): cost, curve and proofs.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_sleep.py [--threads 2] [--steps 300] [--dreams 32]
        [--batch 4] [--lr 3e-3] [--noise 1.0] [--sdp-steps 100] [--sentences 6] [--teacher] [--json out.json]
        [--shipped]

Recovers enc_q and the SDP posterior of `en_US-joe-medium` from dreams of the toy corpus's sentences (text only),
then checks, on held-out sentences (not in the dream texts):
  (a) mel L1 of decoding the posterior mean of speech vs the prior path with the same durations (noise 0 and
      0.667), on the voice's own audio and (--teacher) on festival slt's audio of the same sentences;
  (b) frame agreement of MAS through the posterior with the durations the voice spoke with;
  (c) the SDP bound on held-out durations the SDP sampled, before and after.
Rows 'before' use the freshly initialised enc_q that load_piper builds (what a model without recovery has).
CPU time is the process's (time.process_time), wall time is the loop's; the machine may be shared: say so.
--shipped checks the recovery the project ships (data/recovered/, fp16) instead of recovering: its cost and curve
are the card's (what the recovery that made it measured)."""
import argparse, json, os, platform, tempfile, time
from pathlib import Path
import numpy as np
import torch
from vits_nb.corpus import toy_sentences, speak, check_teacher
from vits_nb.audio import load_wav
from vits_nb.piper import load_piper, shipped_voice
from vits_nb.sleep import (dream, pad_ids, recover_posterior, recover_sdp_posterior, speech_checks,
                           voice_text_to_ids)

HELD_OUT = ['The museum opens its new wing to visitors next spring.',
            'Please remember to water the plants while I am away.',
            'A gentle rain fell on the quiet harbour all afternoon.',
            'Could the next train to the airport leave a little earlier?',
            'She counted seventeen boats sailing past the lighthouse.',
            'Nobody expected the old clock to start ticking again.',
            'We painted the fence a bright shade of yellow last summer.',
            'His answer was short, polite, and completely unexpected.']


def checks(model, hps, t2i, sentences, teacher_wavs):
    "Proof rows (a)/(b) for each held-out sentence: own audio (seeded, default noise), then teacher audio."
    rows = []
    for i, text in enumerate(sentences):
        ids = t2i(text)
        x, xl = pad_ids([ids])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(100 + i)
            own = dream(model, x, xl, hps.data, noise_scale=.667, noise_scale_w=.8)
        rows.append(dict(audio='own', text=text, **speech_checks(model, hps.data, ids, own['audio'][0], w=own['w'])))
    for text, wav in zip(sentences, teacher_wavs):
        rows.append(dict(audio='teacher', text=text, **speech_checks(model, hps.data, t2i(text), wav)))
    return rows


def summary(rows, audio):
    r = [x for x in rows if x['audio'] == audio]
    if not r: return {}
    out = {k: float(np.mean([x[k] for x in r])) for k in ('l1_posterior', 'l1_prior_mean', 'l1_prior')}
    if 'agreement' in r[0]:
        frames = sum(x['frames'] for x in r)
        out['agreement'] = sum(x['agreement'] * x['frames'] for x in r) / frames      # per frame, pooled
        out['agreement_min'] = min(x['agreement'] for x in r)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--steps', type=int, default=300)
    ap.add_argument('--dreams', type=int, default=32, help='dream batches made once and revisited (0: fresh)')
    ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--lr', type=float, default=3e-3)
    ap.add_argument('--noise', type=float, default=1.0, help='noise_scale of the dreams')
    ap.add_argument('--sdp-steps', type=int, default=100)
    ap.add_argument('--sentences', type=int, default=6)
    ap.add_argument('--teacher', action='store_true', help="also check festival slt's audio (needs festival)")
    ap.add_argument('--json', type=Path)
    ap.add_argument('--shipped', action='store_true', help='check the shipped fp16 recovery (no recovery run)')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, hps = load_piper(shipped_voice())
    t2i = voice_text_to_ids(model, hps)
    texts = [t for t in toy_sentences() if t not in HELD_OUT]
    held = HELD_OUT[:a.sentences]
    teacher = []
    if a.teacher:
        check_teacher('slt_hts')
        with tempfile.TemporaryDirectory() as tmp:
            for i, text in enumerate(held):
                speak(text, 'slt_hts', Path(tmp) / f'{i}.wav', sr=hps.data.sampling_rate)
                teacher.append(load_wav(Path(tmp) / f'{i}.wav')[0])
    before = checks(model, hps, t2i, held, teacher)
    c0, t0 = time.process_time(), time.perf_counter()
    if a.shipped:
        from vits_nb.sleep import load_or_recover
        with tempfile.TemporaryDirectory() as empty:             # no cache: the shipped recovery or nothing
            model, hps = load_or_recover(shipped_voice(), empty, progress=False)
        card = model.recovery
        assert card.get('dtype') == 'float16' and 'source' in card, 'the shipped recovery was not used'
        print(f"shipped: {card['source']} ({card['bytes'] / 1e6:.1f} MB, {card['parameters']:,} parameters fp16)")
        hq, hd = card['enc_q'], card['sdp']
        c1, c2 = c0 + card['cpu_seconds'] * (hq['seconds'][-1] / card['wall_seconds']), c0 + card['cpu_seconds']
        t2 = t0 + card['wall_seconds']
    else:
        hq = recover_posterior(model, texts, t2i, steps=a.steps, batch_size=a.batch, lr=a.lr,
                               dreams=a.dreams or None, noise_scale=a.noise, data=hps.data, progress=False)
        c1 = time.process_time()
        hd = recover_sdp_posterior(model, texts, t2i, steps=a.sdp_steps, progress=False)
        c2, t2 = time.process_time(), time.perf_counter()
    after = checks(model, hps, t2i, held, teacher)
    cpu = platform.processor() or platform.machine()
    try: cpu = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): pass
    print(f'## sleep-phase recovery of en_US-joe-medium: {cpu}, {os.cpu_count()} cores, {a.threads} threads, '
          f'torch {torch.__version__}; load average at the end {os.getloadavg()[0]:.1f}')
    print(f'settings: enc_q {a.steps} steps x batch {a.batch}, {a.dreams or "fresh"} dream batches, lr {a.lr}, '
          f'noise_scale {a.noise}; SDP {a.sdp_steps} steps x batch 16; {len(texts)} dream texts')
    print(f'cost: enc_q {(c1 - c0) / 60:.1f} CPU min ({hq["seconds"][-1] / 60:.1f} min wall: dreaming '
          f'{hq["dream_seconds"] / 60:.1f}, learning {hq["train_seconds"] / 60:.1f}); SDP {(c2 - c1) / 60:.1f} CPU min '
          f'({hd["seconds"][-1] / 60:.1f} wall); total {(c2 - c0) / 60:.1f} CPU min, {(t2 - t0) / 60:.1f} min wall')
    print('\ncurve (held-out dreams at noise 0.667/0.8: -log q nats/dim, MAS frame agreement; SDP bound nats/token)')
    print('| step | -log q(z|x) | agreement | | SDP step | SDP bound |\n|---:|---:|---:|---|---:|---:|')
    for i in range(max(len(hq['eval_step']), len(hd['eval_step']))):
        q = (f'{hq["eval_step"][i]} | {hq["eval_nll"][i]:.3f} | {hq["eval_agreement"][i]:.3f}'
             if i < len(hq['eval_step']) else ' | | ')
        s = f'{hd["eval_step"][i]} | {hd["eval_bound"][i]:.3f}' if i < len(hd['eval_step']) else ' | '
        print(f'| {q} | | {s} |')
    print(f'\nproofs on {len(held)} held-out sentences (mean over sentences; agreement pooled over frames)')
    print('| audio | enc_q | (b) agreement (min) | (a) mel L1 posterior mean | prior mean path | prior path 0.667 |')
    print('|---|---|---:|---:|---:|---:|')
    for audio in ('own', 'teacher'):
        for name, rows in (('fresh (before)', before), ('recovered', after)):
            s = summary(rows, audio)
            if not s: continue
            agree = f'{s["agreement"]:.3f} ({s["agreement_min"]:.3f})' if 'agreement' in s else '—'
            print(f'| {audio} | {name} | {agree} | {s["l1_posterior"]:.3f} | {s["l1_prior_mean"]:.3f} | '
                  f'{s["l1_prior"]:.3f} |')
    if a.json:
        a.json.write_text(json.dumps(dict(args={k: str(v) for k, v in vars(a).items()}, enc_q=hq, sdp=hd,
                                          cpu_minutes=dict(enc_q=(c1 - c0) / 60, sdp=(c2 - c1) / 60),
                                          before=before, after=after), indent=1))


if __name__ == '__main__':
    main()
