"""Fine-tuning variants measured against the `acoustic` schedule (RESULTS.md, issue 14), kept so the figures can be
redone; none is in the library, because none beat `acoustic` on intelligibility.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/finetune_variants.py VARIANT [--minutes 10]
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_finetune.py --schedule VARIANT --eval-only \\
        --run-dir runs/bench_finetune/VARIANT --json out.json

VARIANT:
  kl4         `acoustic` with c_kl = 4 in the config: the posterior pulled harder toward the voice's prior;
  prior_path  `acoustic` plus a second reconstruction term on the inference path: the decoder also renders
              z = f^-1(z_p), z_p ~ N(m_p, (0.667 sigma_p)^2) at the MAS durations, against the same teacher
              window (not an ELBO term: a regression of what inference decodes onto the teacher's audio);
  twophase    `enc_q` alone for the first quarter of the minutes (mel + KL through the frozen decoder, so the
              posterior moves to latents the decoder already renders), then `acoustic` for the rest;
  early       `acoustic` with only the decoder's first two upsampling stages trained (`conv_pre`, `ups.0-1` and
              their residual blocks; the voice has three): the last stage and `conv_post`, which render the
              waveform's fine structure and were learned adversarially, stay the voice's;
  lr_half     `acoustic` at half its learning rate (5e-5);
  lr_double   `acoustic` at twice its learning rate (2e-4, the paper's);
  adv         `acoustic` with the paper's adversarial and feature-matching terms (eq. 10): a fresh
              discriminator (the official MPD: one scale and five period sub-discriminators) first learns
              for --d-warmup steps against the frozen voice, then D and `enc_q` + decoder update in turn;
  adv_mpd     `adv` with the five period sub-discriminators only (the scale one, the costliest, skipped;
              its weights stay in D_ unused, so the checkpoint keeps the official layout);
  adv_short   `adv` on 4096-sample windows (half the decoder and discriminator work per step).
Checkpoints every 2.5 training minutes; the run folder is runs/bench_finetune/VARIANT (a re-run resumes)."""
import argparse, json, sys
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))


def prior_path_step(tr, batch, noise=0.667):
    "`acoustic`'s generator step plus L_recon of the decoder on f^-1(z_p) (see the module docstring)."
    from vits_nb import commons
    from vits_nb.train import _generator_forward, _update, _NoAlignment
    from vits_nb.audio import mel_spectrogram_torch
    from vits_nb.losses import mel_loss, kl_loss
    t, d, g = tr.hps.train, tr.hps.data, tr.g
    try: f = _generator_forward(tr, batch)
    except FloatingPointError: return tr._skip('loss', 'non-finite values in the generator pass')
    except _NoAlignment as e: return tr._skip('input', str(e).split(':')[0])
    gs = g.speaker_embedding(batch[6]) if tr.multi else None
    with torch.no_grad():                                   # the prior and the flow are frozen
        z_p = (f['m_p'] + torch.randn_like(f['m_p']) * torch.exp(f['logs_p']) * noise) * f['z_mask']
        z = g.flow(z_p, f['z_mask'], g=gs, reverse=True)
        z_slice = commons.slice_segments(z, f['ids_slice'], t.segment_size // d.hop_length)
    y_hat_p = g.dec(z_slice, g=gs)
    mel_p = mel_spectrogram_torch(y_hat_p.squeeze(1).float(), d.filter_length, d.n_mel_channels,
                                  d.sampling_rate, d.hop_length, d.win_length, d.mel_fmin, d.mel_fmax)
    loss_mel = mel_loss(f['y_mel'], f['y_hat_mel'], t.c_mel)
    loss_mel_prior = mel_loss(f['y_mel'], mel_p, t.c_mel)
    loss_kl = kl_loss(f['z_p'], f['logs_q'], f['m_p'], f['logs_p'], f['z_mask']) * t.c_kl
    loss_dur = torch.sum(f['l_length'].float())
    loss = loss_mel + loss_mel_prior + loss_kl + loss_dur
    if not torch.isfinite(loss): return tr._skip('loss', 'non-finite generator loss')
    gn = _update(tr, loss, tr.optim_g, tr.net_g).item()
    return dict(loss_g=loss.item(), loss_mel=loss_mel.item(), loss_mel_prior=loss_mel_prior.item(),
                loss_kl=loss_kl.item(), loss_dur=loss_dur.item(), grad_norm_g=gn,
                mel_l1=loss_mel.item() / t.c_mel, lr=tr.lr)


def use_discriminators(keep):
    "Run only the sub-discriminators whose indices are in `keep` (0: scale, 1-5: periods 2-11)."
    from vits_nb.discriminators import MultiPeriodDiscriminator
    full_forward = MultiPeriodDiscriminator.forward
    def forward(self, y, y_hat):
        every = self.discriminators                # the saved D_ keeps them all; this pass runs `keep`
        self.discriminators = torch.nn.ModuleList([d for i, d in enumerate(every) if i in keep])
        try: return full_forward(self, y, y_hat)
        finally: self.discriminators = every
    MultiPeriodDiscriminator.forward = forward


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('variant', choices=['kl4', 'prior_path', 'twophase', 'early', 'lr_half', 'lr_double',
                                       'adv', 'adv_mpd', 'adv_short'])
    ap.add_argument('--minutes', type=float, default=10.)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--steps', type=int, default=None, help='stop at step N too (a smoke test)')
    ap.add_argument('--run-dir', type=Path, default=None)
    ap.add_argument('--d-warmup', type=int, default=100, help='adv*: D-only steps before G is adversarial')
    ap.add_argument('--lr', type=float, default=None, help='adv*: learning rate of G and D (default 1e-4)')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import bench_finetune as B
    import vits_nb.finetune as F
    from vits_nb.piper import shipped_voice
    cfg, _ = B.corpus_config(ROOT / 'runs' / 'bench_finetune')
    run = a.run_dir or ROOT / 'runs' / 'bench_finetune' / a.variant
    kw = dict(save_minutes=2.5, keep=1000, progress=True, steps=a.steps)
    if a.variant == 'kl4':
        c = json.loads(cfg.read_text()); c['train']['c_kl'] = 4.0
        cfg = cfg.with_name('corpus_config_kl4.json'); cfg.write_text(json.dumps(c, indent=1) + '\n')
        F.finetune(shipped_voice(), cfg, run, minutes=a.minutes, schedule='acoustic', **kw)
    elif a.variant == 'prior_path':
        plain = F.schedule_step
        F.schedule_step = lambda tr, b, s: prior_path_step(tr, b) if s.get('prior_path') else plain(tr, b, s)
        F.finetune(shipped_voice(), cfg, run, minutes=a.minutes,
                   schedule=dict(F.SCHEDULES['acoustic'], prior_path=True), **kw)
    elif a.variant == 'early':
        F.finetune(shipped_voice(), cfg, run, minutes=a.minutes, schedule=dict(
            F.SCHEDULES['acoustic'], train=('enc_q', 'dec.conv_pre', 'dec.ups.0', 'dec.ups.1')
            + tuple(f'dec.resblocks.{j}' for j in range(6))), **kw)
    elif a.variant == 'lr_half':
        F.finetune(shipped_voice(), cfg, run, minutes=a.minutes, schedule='acoustic', lr=5e-5, **kw)
    elif a.variant.startswith('adv'):
        if a.variant == 'adv_mpd': use_discriminators({1, 2, 3, 4, 5})
        F.finetune(shipped_voice(), cfg, run, minutes=a.minutes, lr=a.lr, schedule=dict(
            F.SCHEDULES['acoustic'], adversarial=True, d_warmup=a.d_warmup,
            segment_size=4096 if a.variant == 'adv_short' else 8192), **kw)
    elif a.variant == 'lr_double':
        F.finetune(shipped_voice(), cfg, run, minutes=a.minutes, schedule='acoustic', lr=2e-4, **kw)
    else:
        F.finetune(shipped_voice(), cfg, run, minutes=a.minutes / 4,
                   schedule=dict(F.SCHEDULES['acoustic'], train=('enc_q',)), **kw)
        F.finetune(shipped_voice(), cfg, run, minutes=a.minutes * 3 / 4, schedule='acoustic', **kw)


if __name__ == '__main__':
    main()
