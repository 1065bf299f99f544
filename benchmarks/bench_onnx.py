"""ONNX Runtime vs PyTorch eager inference at ljs_base size on CPU, streaming time to first audio, peak memory.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_onnx.py [--threads 2] [--repeats 7]

Model: `SynthesizerTrn` built from configs/ljs_base.json, random init (seed 0): speed does not depend on the weights.
Input: 100 fixed symbol ids; fixed durations: `noise_scale_w=0` makes the (random-init) stochastic duration
predictor output log w = 0 exactly, and `length_scale=2` then gives every symbol 2 frames (200 frames = 2.32 s of
22.05 kHz audio; asserted); prior noise `noise_scale=0.667` as in use.
Table 1, real-time factor (compute seconds per second of audio), interleaved round by round after one warm-up:
  eager as trained (`model.infer`, weight norm recomputed each call, what `TTS` runs), eager on the export copy
  (weight norm folded, gather attention: the graph that is exported, run by PyTorch), and ONNX Runtime on the
  exported file (ORT_ENABLE_ALL, intra_op_num_threads=threads, no spinning) and without graph optimizations, and
  ONNX Runtime on the int8-decoder export (`export_onnx(quantize='int8')`, default calibration sentences).
Table 1b, fidelity of each ONNX file against PyTorch with the noise off (SNR, log-mel L1): on the random ljs_base
  model, and with `--checkpoint G.pth` (config.json beside it) on a trained voice speaking held-out sentences.
Table 2, time to first audio for a 5-sentence paragraph: `synthesize` (all sentences, then return) vs `stream`
  (first yielded piece), for PyTorch and ONNX Runtime.
Table 3, peak resident memory (VmHWM in /proc/self/status; `ru_maxrss` would inherit the parent's peak) of a fresh process that loads the model and speaks the
  100 symbols once: PyTorch from the checkpoint vs onnxruntime from the .onnx and the int8 .onnx (those processes never import torch)."""
import argparse, json, os, platform, resource, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# OpenMP's default active wait makes torch's 2 threads collapse (≈10x slower) when another process holds a core;
# passive waiting is the fair setting on a shared machine (ORT's pool gets the same: no spinning). Set before torch loads.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
PARAGRAPH = ('The morning train left the station a little after seven. Most of the passengers were still half asleep. '
             'A conductor walked slowly through the carriages and checked every ticket. Outside, the fields were '
             'covered in a thin grey mist. By the time the sun came out, the city was already in sight.')
N_SYMBOLS, LENGTH_SCALE = 100, 2.0


def child(kind, path, threads):
    "Load and speak once in this fresh process; print peak RSS (MiB) and whether torch was imported."
    import numpy as np
    def rss():   # peak RSS of this process (VmHWM: unlike ru_maxrss it does not carry over the parent's peak)
        for line in open('/proc/self/status'):
            if line.startswith('VmHWM:'): return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ids = np.random.default_rng(0).integers(1, 178, N_SYMBOLS)
    if kind == 'onnx':
        from vits_nb.onnx_synth import OnnxTTS
        base = rss(); tts = OnnxTTS(path, threads=threads); loaded = rss()
        audio = tts.infer_ids(ids, noise_scale_w=0., length_scale=LENGTH_SCALE)
    else:
        import torch
        torch.set_num_threads(threads)
        from vits_nb.synth import TTS
        base = rss(); tts = TTS.from_checkpoint(path); loaded = rss()
        audio = tts._infer_ids([torch.as_tensor(ids)], None, .667, 0., LENGTH_SCALE)[0]
    print(json.dumps({'base': base, 'loaded': loaded, 'peak': rss(), 'samples': len(audio), 'torch': 'torch' in sys.modules}))


def fidelity(model, hps, otts, seqs, length_scale):
    "SNR (dB) and mean |log-mel difference| (all bins; bins within 60 dB of the peak) of `otts` against `model.infer`, noise off, per id sequence."
    import numpy as np, torch
    from vits_nb.audio import mel_spectrogram_torch
    from vits_nb.export import snr_db
    d = hps.data
    mel = lambda a: mel_spectrogram_torch(torch.as_tensor(a, dtype=torch.float32)[None], d.filter_length, d.n_mel_channels,
                                          d.sampling_rate, d.hop_length, d.win_length, d.mel_fmin, d.mel_fmax)   # log-compressed
    snr, l1 = [], []
    for seq in seqs:
        x = torch.as_tensor(seq)[None]
        with torch.no_grad():
            ref = model.infer(x, torch.tensor([x.shape[1]]), noise_scale=0., noise_scale_w=0., length_scale=length_scale)[0][0, 0].numpy()
        out = otts.infer_ids(seq, noise_scale=0., noise_scale_w=0., length_scale=length_scale)
        assert out.shape == ref.shape, (out.shape, ref.shape)
        snr.append(snr_db(ref, out))
        mo, mr = mel(out), mel(ref)
        loud = mr > mr.max() - 3 * np.log(10)     # log-mel is ln|X|: bins within 60 dB of the utterance's peak
        l1.append((float((mo - mr).abs().mean()), float((mo - mr).abs()[loud].mean())))
    return snr, l1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--repeats', type=int, default=7)
    ap.add_argument('--child', nargs=2, metavar=('KIND', 'PATH'))
    ap.add_argument('--checkpoint', default=None, help='a trained G_*.pth (config.json beside it) for the fidelity table')
    ap.add_argument('--heldout', type=int, default=8, help='held-out sentences of that checkpoint to compare on')
    a = ap.parse_args()
    if a.child: return child(a.child[0], a.child[1], a.threads)

    import numpy as np, torch
    import onnxruntime as ort
    from vits_nb.data import load_config, load_filepaths_and_text
    from vits_nb.train import resolve_path
    from vits_nb.text import get_text
    from vits_nb.models import model_from_config, save_checkpoint
    from vits_nb.export import export_onnx, inference_copy, InferenceGraph
    from vits_nb.onnx_synth import OnnxTTS
    from vits_nb.synth import TTS
    from bench_decoder import interleaved_times    # this folder; imported here, as it loads torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    hps = load_config(ROOT / 'configs' / 'ljs_base.json')
    model = model_from_config(hps).eval()
    tmp = Path(tempfile.mkdtemp())
    t0 = time.perf_counter(); path = export_onnx(model, hps, tmp / 'ljs.onnx'); t_export = time.perf_counter() - t0
    t0 = time.perf_counter(); path8 = export_onnx(model, hps, tmp / 'ljs_int8.onnx', quantize='int8'); t_export8 = time.perf_counter() - t0
    save_checkpoint(model, None, 2e-4, 0, tmp / 'G_0.pth'); (tmp / 'config.json').write_text(json.dumps(hps.to_dict()))
    print(f'# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads {a.threads}, '
          f'load average {os.getloadavg()[0]:.1f}; OMP_WAIT_POLICY={os.environ["OMP_WAIT_POLICY"]}; torch {torch.__version__}, onnxruntime {ort.__version__}')
    print(f'# export: {t_export:.1f} s, {path.stat().st_size / 1e6:.0f} MB; with the int8 decoder: {t_export8:.1f} s, {path8.stat().st_size / 1e6:.0f} MB')

    ids = torch.as_tensor(np.random.default_rng(0).integers(1, 178, N_SYMBOLS))[None]
    lengths, scales = torch.tensor([N_SYMBOLS]), torch.tensor([.667, LENGTH_SCALE, 0.])
    graph = InferenceGraph(inference_copy(model, hps)).eval()
    t0 = time.perf_counter(); fast = OnnxTTS(path, threads=a.threads); t_session = time.perf_counter() - t0
    plain = OnnxTTS(path, threads=a.threads, optimize=False)
    int8 = OnnxTTS(path8, threads=a.threads)
    def eager():
        with torch.inference_mode(): return model.infer(ids, lengths, noise_scale=.667, noise_scale_w=0., length_scale=LENGTH_SCALE)[0]
    def folded():
        with torch.inference_mode(): return graph(ids, lengths, scales)
    onnx_fast = lambda: fast.infer_ids(ids[0].numpy(), noise_scale_w=0., length_scale=LENGTH_SCALE)
    onnx_plain = lambda: plain.infer_ids(ids[0].numpy(), noise_scale_w=0., length_scale=LENGTH_SCALE)
    onnx_int8 = lambda: int8.infer_ids(ids[0].numpy(), noise_scale_w=0., length_scale=LENGTH_SCALE)
    n = {eager().shape[-1], folded().shape[-1], len(onnx_fast()), len(onnx_plain()), len(onnx_int8())}
    assert n == {N_SYMBOLS * int(LENGTH_SCALE) * 256}, n
    secs = N_SYMBOLS * LENGTH_SCALE * 256 / hps.data.sampling_rate
    names = ['PyTorch eager, as trained (weight norm)', 'PyTorch eager, export copy (folded)',
             'ONNX Runtime, ORT_ENABLE_ALL', 'ONNX Runtime, no graph optimizations', 'ONNX Runtime, int8 decoder']
    res = interleaved_times([eager, folded, onnx_fast, onnx_plain, onnx_int8], a.repeats)
    print(f'\n{N_SYMBOLS} symbols -> {secs:.2f} s of audio; ORT session created in {t_session:.1f} s\n')
    print('| runtime | best s | median s | RTF (median) | eager / this (median) |')
    print('|---|---:|---:|---:|---:|')
    for name, (b, m) in zip(names, res):
        print(f'| {name} | {b:.3f} | {m:.3f} | {m / secs:.3f} | {res[0][1] / m:.2f}x |')

    # fidelity against PyTorch, noise off
    print('\n| fidelity vs PyTorch (noise off) | file | SNR dB (mean, min) | log-mel L1, all bins | log-mel L1, bins within 60 dB of peak |')
    print('|---|---|---:|---:|---:|')
    cases = [('ljs_base, random init, 100 random symbols', model, hps, {'f32': path, 'int8': path8}, [ids[0].numpy()], LENGTH_SCALE)]
    if a.checkpoint:
        ck = TTS.from_checkpoint(a.checkpoint)
        d = Path(a.checkpoint).parent
        files = {'f32': export_onnx(ck.model, ck.hps, tmp / 'ck.onnx'), 'int8': export_onnx(ck.model, ck.hps, tmp / 'ck_int8.onnx', quantize='int8')}
        rows_ = load_filepaths_and_text(resolve_path(ck.hps.data.validation_files, d / 'config.json'))[:a.heldout]
        blank = ck.hps.data.get('add_blank', True)
        texts = [get_text(r[-1], cleaned=True, add_blank=blank).numpy() if ck.hps.data.get('cleaned_text')
                 else ck.text_to_ids(r[-1]).numpy() for r in rows_]
        cases.append((f'{Path(a.checkpoint).name} ({ck.hps.model.upsample_initial_channel}-channel decoder), {len(texts)} held-out sentences',
                      ck.model, ck.hps, files, texts, 1.0))
    for label, mdl, h, files, seqs, ls in cases:
        for kind, f in files.items():
            snr, l1 = fidelity(mdl, h, OnnxTTS(f, threads=a.threads), seqs, ls)
            l1 = np.mean(l1, axis=0)
            print(f'| {label} | {kind} | {np.mean(snr):.1f}, {np.min(snr):.1f} | {l1[0]:.4f} | {l1[1]:.4f} |')

    # time to first audio
    tts = TTS(model, hps)
    def ttfa(make_iter):
        t0 = time.perf_counter(); it = make_iter(); next(it); first = time.perf_counter() - t0
        for _ in it: pass
        return first, time.perf_counter() - t0
    kw = dict(noise_scale_w=0.)
    tts.synthesize(PARAGRAPH, seed=0, **kw)                     # warm-up (espeak, allocator)
    rows = []
    for name, synth, stream in [('PyTorch', lambda: tts.synthesize(PARAGRAPH, seed=0, **kw), lambda: tts.stream(PARAGRAPH, seed=0, **kw)),
                                ('ONNX Runtime', lambda: fast.synthesize(PARAGRAPH, **kw), lambda: fast.stream(PARAGRAPH, **kw)),
                                ('ONNX Runtime, int8 decoder', lambda: int8.synthesize(PARAGRAPH, **kw), lambda: int8.stream(PARAGRAPH, **kw))]:
        t0 = time.perf_counter(); audio, sr = synth(); whole = time.perf_counter() - t0
        first, total = ttfa(stream)
        rows.append((name, whole, first, total, len(audio) / sr))
    print('\n| 5-sentence paragraph | audio s | synthesize: first audio s | stream: first audio s | stream: all s | speed-up of first audio |')
    print('|---|---:|---:|---:|---:|---:|')
    for name, whole, first, total, dur in rows:
        print(f'| {name} | {dur:.2f} | {whole:.2f} | {first:.2f} | {total:.2f} | {whole / first:.1f}x |')

    # peak memory in fresh processes
    print('\n| fresh process speaking 100 symbols | RSS after imports MiB | after load MiB | peak MiB | imports torch |')
    print('|---|---:|---:|---:|---|')
    for kind, p in [('torch', tmp / 'G_0.pth'), ('onnx', path), ('onnx', path8)]:
        out = subprocess.run([sys.executable, __file__, '--threads', str(a.threads), '--child', kind, str(p)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        name = 'PyTorch (checkpoint)' if kind == 'torch' else f'onnxruntime ({p.name}, {p.stat().st_size / 1e6:.0f} MB)'
        print(f"| {name} | {r['base']:.0f} | {r['loaded']:.0f} | "
              f"{r['peak']:.0f} | {r['torch']} |")


if __name__ == '__main__':
    main()
