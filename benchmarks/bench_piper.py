"""The shipped Piper voice (en_US-joe-medium) run four ways: piper-tts, vits_nb eager PyTorch, vits_nb's ONNX export, its int8-decoder export.

    .venv/bin/python benchmarks/bench_piper.py [--threads 2] [--rounds 5] [--quick]

Runtimes, all on `--threads` threads (2 by default):
  piper-tts 1.8.0 (GPL; a benchmark reference only) on the original `en_US-joe-medium.onnx`: `PiperVoice` as
    `PiperVoice.load` builds it, but with its onnxruntime session given the same options as vits_nb's `OnnxTTS`
    (intra_op_num_threads=threads, inter_op 1, ORT_ENABLE_ALL, no spinning), timed through `phoneme_ids_to_audio`
    (`session.run` + squeeze). A second row keeps `PiperVoice.load`'s own session (default `SessionOptions`: one
    thread per physical core, spinning workers) to show the equal options do not handicap it.
  vits_nb eager: `TTS.from_piper()` (the voice imported into `SynthesizerTrn`, weight norm as a parametrization, as
    `TTS` runs it), `model.infer` under `torch.no_grad`, `torch.set_num_threads(threads)`; and a copy with weight
    norm removed (`vits_nb.commons.remove_weight_norm` on every parametrized module; attention unchanged).
  vits_nb ONNX: `export_onnx(tts.model, tts.hps, ...)` float32, `quantize='int8'` (the whole decoder from the first
    upsampling to conv_post in int8: polyphase upsampling, equalized streams, clipped ranges) and, for comparison,
    `quantize='int8-resblocks'` (the residual-block convolutions only, the previous default); default calibration
    sentences; run by `OnnxTTS(path, threads=threads).infer_ids`.
Input: the ids of SENTENCES below (our own, 1-40 words) from piper-tts's phonemizer (`phonemize` + `phonemes_to_ids`),
identical for every runtime; noise off (noise_scale 0, length_scale 1, noise_w 0), so every runtime computes the same
durations and the outputs are comparable sample by sample.
Table 1, real-time factor (compute seconds / audio seconds over all sentences): one warm-up, then `--rounds` rounds
  interleaved sentence by sentence (sentence 1: a, b, c, ...; sentence 2: a, b, c, ...; `bench_decoder.interleaved_times`)
  so machine load hits every runtime alike; best = sum over sentences of each sentence's best time, median likewise;
  ratios against piper-tts (equal options). SNR (`vits_nb.export.snr_db`, per sentence: mean and
  min) of each runtime's audio against the original file run by its own onnxruntime session (`vits_nb.piper.run_piper_onnx`),
  noise off.
Table 2, time to first audio of PARAGRAPH (5 sentences) streamed sentence by sentence: text -> piper-tts phonemizer ->
  first sentence's audio (piper-tts: its own `synthesize` generator, which does exactly that), interleaved rounds.
Table 3, peak resident memory (VmHWM) of a fresh process per runtime that loads the voice and speaks every sentence once.
Table 4 (where the time goes): per-module share (enc_p, dp, flow, dec) of eager PyTorch (forward hooks) and of
  onnxruntime on the original file and on the int8 export (session profiling), and the top operators of each.
`--quick`: 2 sentences x 1 round (a smoke test). The full run takes a few minutes on a 2-core machine."""
import argparse, json, os, platform, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# passive OpenMP waiting for torch, no spinning for onnxruntime: the fair settings on a shared machine (bench_onnx.py)
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

SENTENCES = [
    'Yes, of course.',
    'Where did you leave the keys this time?',
    'Please call me back as soon as you get this message.',
    'The old lighthouse keeper climbed the winding stairs every evening at dusk.',
    'She laughed, shook her head, and walked out into the bright afternoon sun.',
    'After three weeks of steady rain, the river finally rose above its banks and flooded the lower fields.',
    'Is the museum on Baker Street open on Sundays, or only during the week?',
    'Although the committee had already met twice, nobody could agree on the budget, so the chair postponed the '
    'vote until everyone had read the full report, including its many tables and appendices.',
]
PARAGRAPH = ('The morning train left the station a little after seven. Most of the passengers were still half asleep, '
             'and a few had not even found their seats. A conductor walked slowly through the carriages and checked '
             'every ticket. Outside, the fields were covered in a thin grey mist that hid the hills. By the time the '
             'sun came out, the city was already in sight.')
SCALES = (0., 1., 0.)           # noise_scale, length_scale, noise_w: noise off
MODULES = ('enc_p', 'dp', 'flow', 'dec')


def vm_hwm():
    "Peak RSS of this process in MiB (VmHWM: unlike ru_maxrss it does not carry over the parent's peak)."
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'): return int(line.split()[1]) / 1024


def session_options(threads):
    "onnxruntime options as `OnnxTTS` sets them: `threads` intra-op threads, one inter-op, full graph optimization, no spinning."
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads, so.inter_op_num_threads = int(threads), 1
    so.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return so


def piper_voice(path, threads, own_session=False):
    "piper-tts's PiperVoice for `path`: as `PiperVoice.load` makes it, with the session options of `OnnxTTS` unless `own_session`."
    from piper import PiperVoice
    if own_session: return PiperVoice.load(str(path))
    import onnxruntime as ort
    from piper.config import PiperConfig
    cfg = json.loads(Path(f'{path}.json').read_text(encoding='utf-8'))
    return PiperVoice(config=PiperConfig.from_dict(cfg),
                      session=ort.InferenceSession(str(path), session_options(threads), providers=['CPUExecutionProvider']))


def piper_ids(voice, text):
    "Phoneme ids per sentence of `text`, as `PiperVoice.synthesize` makes them (empty sentences skipped)."
    return [voice.phonemes_to_ids(p) for p in voice.phonemize(text) if p]


def syn_config():
    from piper.config import SynthesisConfig
    return SynthesisConfig(noise_scale=SCALES[0], length_scale=SCALES[1], noise_w_scale=SCALES[2], normalize_audio=False)


def make_runtime(kind, path, threads, tts=None):
    "`speak(ids) -> float32 audio` for one runtime (`tts`: an already imported `TTS` for the eager kinds); only eager imports torch."
    import numpy as np
    if kind in ('piper', 'piper-default'):
        voice, cfg = piper_voice(path, threads, own_session=kind == 'piper-default'), syn_config()
        return lambda ids: np.asarray(voice.phoneme_ids_to_audio(ids, cfg), np.float32).reshape(-1)
    if kind in ('eager', 'eager-nown'):
        import torch
        torch.set_num_threads(threads)
        from vits_nb.synth import TTS
        tts = tts or TTS.from_piper(path)
        model = without_weight_norm(tts.model, tts.hps) if kind == 'eager-nown' else tts.model
        def speak(ids):
            x = torch.as_tensor(ids, dtype=torch.long)[None]
            with torch.no_grad():
                o = model.infer(x, torch.tensor([x.shape[1]]), noise_scale=SCALES[0], noise_scale_w=SCALES[2],
                                length_scale=SCALES[1])[0]
            return o[0, 0].numpy()
        speak.model = model
        return speak
    if kind == 'onnx':
        from vits_nb.onnx_synth import OnnxTTS
        otts = OnnxTTS(path, threads=threads)
        return lambda ids: otts.infer_ids(ids, noise_scale=SCALES[0], noise_scale_w=SCALES[2], length_scale=SCALES[1])
    raise ValueError(f'unknown runtime {kind!r}')


def without_weight_norm(model, hps):
    "A fresh eval copy of `model` (config `hps`) with every weight-norm parametrization folded into a plain weight."
    from torch.nn.utils import parametrize
    from vits_nb.commons import remove_weight_norm
    from vits_nb.models import model_from_config
    copy = model_from_config(hps)        # not deepcopy: that would share the parametrized classes with `model`
    copy.load_state_dict(model.state_dict())
    for m in copy.modules():
        if parametrize.is_parametrized(m, 'weight'): remove_weight_norm(m)
    return copy.eval()


def child(kind, path, ids_file, threads):
    "In this fresh process: load one runtime, speak every sentence once, print RSS after imports / load and the peak."
    ids = json.loads(Path(ids_file).read_text())
    if kind.startswith('eager'): import torch, vits_nb.synth   # noqa: F401  (imports counted before the load)
    elif kind == 'onnx': import onnxruntime, vits_nb.onnx_synth   # noqa: F401
    else: import onnxruntime, piper   # noqa: F401
    imported = vm_hwm()
    t0 = time.perf_counter(); speak = make_runtime(kind, path, threads); t_load = time.perf_counter() - t0
    loaded = vm_hwm()
    n = sum(len(speak(i)) for i in ids)
    print(json.dumps({'imported': imported, 'loaded': loaded, 'peak': vm_hwm(), 'load_s': t_load, 'samples': n,
                      'torch': 'torch' in sys.modules}))


class EagerProfile:
    "Wall seconds per top-level module of eager PyTorch (forward hooks); `ops()`: torch.profiler's top operators (an extra pass)."
    def __init__(self, model, speak):
        self.model, self.speak, self.spent, self.handles = model, speak, {m: 0. for m in MODULES}, []
        for name in MODULES:
            mod, start = getattr(model, name), {}
            self.handles.append(mod.register_forward_pre_hook(lambda m, i, s=start: s.__setitem__('t', time.perf_counter())))
            self.handles.append(mod.register_forward_hook(
                lambda m, i, o, s=start, n=name: self.spent.__setitem__(n, self.spent[n] + time.perf_counter() - s['t'])))

    def __call__(self, ids): self.speak(ids)

    def finish(self, ids):
        "`(seconds per module, top operators)`; removes the hooks, then profiles one more pass over `ids` for the operators."
        import torch
        for h in self.handles: h.remove()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for i in ids: self.speak(i)
        ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        op_total = sum(e.self_cpu_time_total for e in ops)
        return self.spent, [(e.key, e.self_cpu_time_total / op_total) for e in ops[:6]]


class OrtProfile:
    "Kernel seconds per top-level module and per operator type from an onnxruntime session profile of `path`."
    def __init__(self, path, threads, tmp, warm_ids):
        import onnxruntime as ort
        so = session_options(threads)
        so.enable_profiling, so.profile_file_prefix = True, str(Path(tmp) / f'prof_{Path(path).stem}')
        self.session = ort.InferenceSession(str(path), so, providers=['CPUExecutionProvider'])
        self(warm_ids)                                   # a warm-up run, counted out in `finish`

    def __call__(self, ids):
        from vits_nb.piper import run_piper_onnx
        run_piper_onnx(self.session, ids, SCALES)

    def finish(self, ids=None):
        import re
        events = json.loads(Path(self.session.end_profiling()).read_text())
        runs = [e for e in events if e.get('name') == 'model_run']
        after = runs[1]['ts'] if len(runs) > 1 else 0     # skip the warm-up run's nodes
        spent, ops = {m: 0. for m in MODULES}, {}
        for e in events:
            if e.get('cat') != 'Node' or not e['name'].endswith('_kernel_time') or e['ts'] < after: continue
            m = re.search(r'/(?:model/)?(' + '|'.join(MODULES) + r')/', e['name'])
            if m: spent[m.group(1)] += e['dur'] / 1e6
            op = e.get('args', {}).get('op_name', '?')
            ops[op] = ops.get(op, 0.) + e['dur'] / 1e6
        op_total = sum(ops.values())
        return spent, [(k, v / op_total) for k, v in sorted(ops.items(), key=lambda kv: -kv[1])[:6]]


def uptime():
    try: return subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()
    except OSError: return 'load average %.2f, %.2f, %.2f' % os.getloadavg()


def cpu_name():
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
        return next(l.split(':', 1)[1].strip() for l in out.splitlines() if l.startswith('Model name'))
    except (OSError, StopIteration): return platform.processor() or platform.machine()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--rounds', type=int, default=5, help='timed interleaved rounds after the warm-up')
    ap.add_argument('--quick', action='store_true', help='2 sentences x 1 round: a smoke test')
    ap.add_argument('--child', nargs=3, metavar=('KIND', 'PATH', 'IDS_JSON'), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: return child(*a.child, a.threads)
    sentences, rounds = (SENTENCES[:2], 1) if a.quick else (SENTENCES, a.rounds)
    up0 = uptime()
    import importlib.metadata as md
    import numpy as np, torch, onnxruntime as ort
    from vits_nb.piper import shipped_voice, onnx_session, run_piper_onnx
    from vits_nb.export import export_onnx, snr_db
    from vits_nb.synth import TTS
    from bench_decoder import interleaved_times    # this folder; imported here, as it loads torch
    torch.set_num_threads(a.threads)
    t_start = time.perf_counter()
    print(f'# {cpu_name()}, {os.cpu_count()} cores, {a.threads} threads; OMP_WAIT_POLICY={os.environ["OMP_WAIT_POLICY"]}; '
          f'torch {torch.__version__}, onnxruntime {ort.__version__}, piper-tts {md.version("piper-tts")}')
    print(f'# before: {up0}')

    orig = shipped_voice()
    tmp = Path(tempfile.mkdtemp(prefix='bench_piper_'))
    t0 = time.perf_counter(); tts = TTS.from_piper(orig); t_import = time.perf_counter() - t0
    t0 = time.perf_counter(); f32 = export_onnx(tts.model, tts.hps, tmp / 'joe.onnx'); t_f32 = time.perf_counter() - t0
    t0 = time.perf_counter(); i8 = export_onnx(tts.model, tts.hps, tmp / 'joe_int8.onnx', quantize='int8'); t_i8 = time.perf_counter() - t0
    i8rb = export_onnx(tts.model, tts.hps, tmp / 'joe_int8rb.onnx', quantize='int8-resblocks')
    print(f'# voice {orig.name} ({orig.stat().st_size / 1e6:.0f} MB); TTS.from_piper {t_import:.1f} s; export float32 '
          f'{t_f32:.1f} s ({f32.stat().st_size / 1e6:.0f} MB), int8 decoder {t_i8:.1f} s ({i8.stat().st_size / 1e6:.0f} MB)')

    voice = piper_voice(orig, a.threads)
    ids = [piper_ids(voice, s) for s in sentences]
    assert all(len(i) == 1 for i in ids), 'every benchmark sentence must be one sentence to the phonemizer'
    ids = [i[0] for i in ids]
    sr = voice.config.sample_rate
    ref_session = onnx_session(orig, a.threads)
    ref = [run_piper_onnx(ref_session, i, SCALES) for i in ids]
    audio_s = sum(len(r) for r in ref) / sr
    print(f'# {len(ids)} sentences, {min(map(len, ids))}-{max(map(len, ids))} phoneme ids, {audio_s:.1f} s of audio '
          f'({min(map(len, ref)) / sr:.1f}-{max(map(len, ref)) / sr:.1f} s each); noise off; {rounds} interleaved round(s) after a warm-up')

    runtimes = [('piper-tts (original .onnx)', 'piper', orig), ('piper-tts, PiperVoice.load session defaults', 'piper-default', orig),
                ('vits_nb eager PyTorch (weight norm, as TTS runs)', 'eager', orig),
                ('vits_nb eager PyTorch, weight norm removed', 'eager-nown', orig),
                ('vits_nb ONNX float32 (onnxruntime)', 'onnx', f32), ('vits_nb ONNX, int8 decoder', 'onnx', i8),
                ('vits_nb ONNX, int8 residual-block convs only', 'onnx', i8rb)]
    speakers = [make_runtime(kind, p, a.threads, tts=tts) for _, kind, p in runtimes]
    K, outs = len(runtimes), [[None] * len(ids) for _ in runtimes]
    def speak_one(k, j):
        def f(): outs[k][j] = speakers[k](ids[j])
        return f
    # interleaved sentence by sentence (s1: a, b, c, ...; s2: a, b, c, ...; round after round): a burst of load
    # from other processes lands on every runtime alike; a runtime's best / median = the sum over sentences of its
    # per-sentence best / median
    per = interleaved_times([speak_one(k, j) for j in range(len(ids)) for k in range(K)], rounds)
    res = [tuple(sum(per[j * K + k][q] for j in range(len(ids))) for q in (0, 1)) for k in range(K)]

    pb, pm = res[0]
    print(f'\n| runtime | RTF best | RTF median | time vs piper-tts (median) | speed vs piper-tts (best / median) | SNR dB vs original (mean, min) |')
    print('|---|---:|---:|---:|---:|---:|')
    for k, ((name, kind, p), (b, m)) in enumerate(zip(runtimes, res)):
        snr, same = [], True
        for r, o in zip(ref, outs[k]):
            same &= len(r) == len(o)
            n = min(len(r), len(o)); snr.append(snr_db(r[:n], o[:n]))
        fid = f'{np.mean(snr):.1f}, {min(snr):.1f}' + ('' if same else ' (lengths differ!)')
        print(f'| {name} | {b / audio_s:.3f} | {m / audio_s:.3f} | {m / pm:.2f}x | {pb / b:.2f}x / {pm / m:.2f}x | {fid} |')
    eb, em = res[2]; qb, qm = res[5]
    print(f'\ntargets: int8 >= 2x piper-tts speed: {pb / qb:.2f}x best, {pm / qm:.2f}x median -> '
          f'{"met" if pm / qm >= 2 else "NOT met"}; eager within 1.25x of piper-tts time: {eb / pb:.2f}x best, '
          f'{em / pm:.2f}x median -> {"met" if em / pm <= 1.25 else "NOT met"}')

    # time to first audio: the paragraph streamed sentence by sentence
    cfg = syn_config()
    streams = [lambda: (c.audio_float_array for c in voice.synthesize(PARAGRAPH, syn_config=cfg))] + [
        (lambda s=s: (s(i) for i in piper_ids(voice, PARAGRAPH))) for s in speakers[1:]]
    firsts = [[] for _ in streams]
    def first_of(k):
        def f():
            t0 = time.perf_counter(); it = streams[k](); next(it); firsts[k].append(time.perf_counter() - t0)
            it.close()
        return f
    interleaved_times([first_of(k) for k in range(len(streams))], rounds)
    par = piper_ids(voice, PARAGRAPH)
    first_s = len(run_piper_onnx(ref_session, par[0], SCALES)) / sr
    print(f'\n| paragraph of {len(par)} sentences, streamed | first audio s (best) | first audio s (median) | vs piper-tts (median) |')
    print('|---|---:|---:|---:|')
    f0 = float(np.median(firsts[0][1:]))
    for (name, _, _), f in zip(runtimes, firsts):
        f = f[1:]                                   # the first entry is the warm-up
        print(f'| {name} | {min(f):.3f} | {np.median(f):.3f} | {np.median(f) / f0:.2f}x |')
    print(f'(first sentence: {len(par[0])} ids, {first_s:.2f} s of audio)')

    # peak memory of a fresh process per runtime
    ids_file = tmp / 'ids.json'; ids_file.write_text(json.dumps([list(map(int, i)) for i in ids]))
    print('\n| fresh process: load + speak every sentence | RSS after imports MiB | after load MiB | peak MiB | load s | imports torch |')
    print('|---|---:|---:|---:|---:|---|')
    for name, kind, p in [runtimes[0], runtimes[2], runtimes[4], runtimes[5]]:
        out = subprocess.run([sys.executable, __file__, '--threads', str(a.threads), '--child', kind, str(p), str(ids_file)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {name} | {r['imported']:.0f} | {r['loaded']:.0f} | {r['peak']:.0f} | {r['load_s']:.1f} | {r['torch']} |")

    # where the time goes: one pass per runtime, interleaved sentence by sentence as above
    profs = [('vits_nb eager PyTorch (forward hooks, wall)', EagerProfile(tts.model, speakers[2])),
             ('piper-tts original .onnx (ORT kernel time)', OrtProfile(orig, a.threads, tmp, ids[0])),
             ('vits_nb ONNX float32 (ORT kernel time)', OrtProfile(f32, a.threads, tmp, ids[0])),
             ('vits_nb ONNX int8 decoder (ORT kernel time)', OrtProfile(i8, a.threads, tmp, ids[0])),
             ('vits_nb ONNX int8 residual-block convs (ORT kernel time)', OrtProfile(i8rb, a.threads, tmp, ids[0]))]
    passes = [0.] * len(profs)
    for i in ids:
        for k, (_, prof) in enumerate(profs):
            t0 = time.perf_counter(); prof(i); passes[k] += time.perf_counter() - t0
    rows = [(name, total, *prof.finish(ids)) for (name, prof), total in zip(profs, passes)]
    print('\n| one pass over the sentences | pass s | vs piper-tts | enc_p s | dp s | flow s | dec s | rest of the pass s | dec share of pass |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|---:|')
    for name, total, spent, _ in rows:   # rest: glue between the modules (eager), or unattributed nodes + session overhead (ORT)
        print(f'| {name} | {total:.2f} | {total / passes[1]:.2f}x | ' + ' | '.join(f'{spent[m]:.3f}' for m in MODULES)
              + f' | {total - sum(spent.values()):.3f} | {spent["dec"] / total:.0%} |')
    for name, _, _, top in rows:
        print(f'top operators, {name}: ' + ', '.join(f'{k} {v:.0%}' for k, v in top))
    print(f'\n# after: {uptime()}; whole benchmark {time.perf_counter() - t_start:.0f} s')


if __name__ == '__main__':
    main()
