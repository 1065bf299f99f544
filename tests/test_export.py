"""ONNX export (parity with PyTorch, dynamic lengths, speakers), the torch-free runtime, chunked decoding and streaming."""
import json, subprocess, sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from vits_nb.cli import main
from vits_nb.export import (InferenceGraph, PolyphaseUpsample, check_parity, clipped_range, decode_chunked, decode_chunks,
                            decoder_conv_nodes, decoder_int8_nodes, equalize_decoder, export_onnx, inference_copy,
                            quantize_decoder, register_symbolics, relative_attention)
from vits_nb.models import model_from_config, save_checkpoint, tiny_config
from vits_nb.onnx_synth import OnnxTTS
from vits_nb.synth import TTS
from vits_nb.text_encoder import MultiHeadAttention

ROOT = Path(__file__).resolve().parents[1]
rms = lambda a: float(np.sqrt(np.mean(np.square(a))))


def mid_config():
    "Between tiny and ljs_base: HiFi-GAN V1 resblocks, 2 attention layers, 64 channels."
    hps = tiny_config()
    m = hps.model
    m.inter_channels, m.hidden_channels, m.filter_channels, m.n_layers = 32, 64, 128, 2
    m.resblock, m.resblock_kernel_sizes, m.resblock_dilation_sizes = '1', [3, 7, 11], [[1, 3, 5]] * 3
    m.upsample_initial_channel = 64
    return hps


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    hps = tiny_config()
    model = model_from_config(hps).eval()
    path = export_onnx(model, hps, tmp_path_factory.mktemp('onnx') / 'tiny.onnx')
    return model, hps, path


def torch_audio(model, ids, **kw):
    with torch.no_grad(): return model.infer(ids, torch.tensor([ids.size(1)]), **kw)[0][0, 0].numpy()


def test_relative_attention_equals_eager():
    torch.manual_seed(1)
    mha = MultiHeadAttention(16, 16, 4, window_size=4).double().eval()
    for t in (1, 4, 5, 9, 31):
        q, k, v = torch.randn(3, 2, 16, t, dtype=torch.float64).unbind(0)
        mask = torch.ones(2, 1, t, t, dtype=torch.float64); mask[1, ..., (t + 1) // 2:] = 0
        for a, b in zip(relative_attention(mha, q, k, v, mask), mha.attention(q, k, v, mask)):
            assert torch.allclose(a, b, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match='window'):
        relative_attention(MultiHeadAttention(16, 16, 2), q, k, v)


@pytest.mark.parametrize('right', [True, False])
def test_searchsorted_symbolic_matches_torch(tmp_path, right):
    import onnxruntime as ort
    class S(torch.nn.Module):
        def forward(self, seq, x): return torch.searchsorted(seq, x, right=right)
    register_symbolics()
    seq = torch.sort(torch.randn(2, 5, 9), -1).values
    x = torch.cat([torch.randn(2, 5, 3), seq[..., 2:4]], -1)       # values equal to knots: the `right` case
    torch.onnx.export(S(), (seq, x), tmp_path / 's.onnx', input_names=['seq', 'x'], dynamo=False, opset_version=17)
    out = ort.InferenceSession(str(tmp_path / 's.onnx')).run(None, {'seq': seq.numpy(), 'x': x.numpy()})[0]
    np.testing.assert_array_equal(out, torch.searchsorted(seq, x, right=right).numpy())


def test_graph_inputs_outputs_and_metadata(tiny):
    import onnx
    _, hps, path = tiny
    m = onnx.load(path)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    assert dims == {'input': [1, 'text_length'], 'input_lengths': [1], 'scales': [3]}
    assert [d.dim_param or d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim][1:] == [1, 'samples']
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta['vits_nb_config']) == hps.to_dict() and meta['hop_length'] == '256'
    assert 'RandomNormalLike' in {n.op_type for n in m.graph.node}        # the noise is drawn inside the graph


def test_parity_without_noise_at_every_length(tiny):
    model, _, path = tiny
    otts = OnnxTTS(path, threads=1)
    for t in (1, 3, 17, 50, 120):
        ids = torch.randint(1, 178, (1, t))
        ref = torch_audio(model, ids, noise_scale=0., noise_scale_w=0., length_scale=1.3)
        out = otts.infer_ids(ids[0].numpy(), noise_scale=0., noise_scale_w=0., length_scale=1.3)
        assert out.shape == ref.shape and out.dtype == np.float32
        assert np.abs(out - ref).max() <= 1e-5 and rms(ref) > 1e-4


def test_with_noise_lengths_and_statistics_match(tiny):
    model, _, path = tiny
    otts = OnnxTTS(path, threads=1, seed=0)
    ids = torch.randint(1, 178, (1, 60))
    ref = torch_audio(model, ids, noise_scale=.667, noise_scale_w=0.)
    outs = [otts.infer_ids(ids[0].numpy(), noise_scale=.667, noise_scale_w=0.) for _ in range(2)]
    assert all(o.shape == ref.shape for o in outs)
    assert not np.array_equal(outs[0], outs[1])                       # fresh noise on every run
    assert all(0.5 < rms(o) / rms(ref) < 2 for o in outs)
    # duration noise: lengths vary with the draw but stay whole frames
    n = {len(otts.infer_ids(ids[0].numpy(), noise_scale_w=.8)) for _ in range(4)}
    assert all(k % 256 == 0 and k > 0 for k in n)
    # a seed fixes the session's draws
    a, b = (OnnxTTS(path, threads=1, seed=7).infer_ids(ids[0].numpy()) for _ in range(2))
    np.testing.assert_array_equal(a, b)


def test_export_leaves_the_model_untouched(tiny):
    model, hps, _ = tiny
    assert any('parametrizations' in k for k, _ in model.named_parameters())   # weight norm still there
    copy = inference_copy(model, hps)
    assert not any('parametrizations' in k for k, _ in copy.named_parameters())
    ids = torch.randint(1, 178, (1, 20))
    with torch.no_grad():
        a = model.infer(ids, torch.tensor([20]), noise_scale=0., noise_scale_w=0.)[0]
        b = InferenceGraph(copy)(ids, torch.tensor([20]), torch.tensor([0., 1., 0.]))
    assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6)
    assert torch.equal(a, model.infer(ids, torch.tensor([20]), noise_scale=0., noise_scale_w=0.)[0])


def test_parity_mid_size_and_deterministic_duration_predictor(tmp_path):
    torch.manual_seed(2)
    hps = mid_config()
    model = model_from_config(hps).eval()
    d = check_parity(model, export_onnx(model, hps, tmp_path / 'mid.onnx'), length=80)
    assert d['max_abs_diff'] <= 1e-4 and d['samples'] >= 80 * 256 and d['rms'] > 1e-3
    hps = tiny_config(use_sdp=False)
    model = model_from_config(hps).eval()
    assert check_parity(model, export_onnx(model, hps, tmp_path / 'nosdp.onnx'))['max_abs_diff'] <= 1e-5


def test_multispeaker_export(tmp_path):
    torch.manual_seed(3)
    hps = tiny_config(n_speakers=3)
    model = model_from_config(hps).eval()
    path = export_onnx(model, hps, tmp_path / 'multi.onnx')
    otts = OnnxTTS(path, threads=1)
    assert otts.input_names == ['input', 'input_lengths', 'scales', 'sid'] and otts.n_speakers == 3
    ids = torch.randint(1, 178, (1, 30))
    outs = []
    for s in (0, 2):
        ref = torch_audio(model, ids, sid=torch.tensor([s]), noise_scale=0., noise_scale_w=0.)
        outs.append(otts.infer_ids(ids[0].numpy(), s, noise_scale=0., noise_scale_w=0.))
        assert outs[-1].shape == ref.shape and np.abs(outs[-1] - ref).max() <= 1e-5
    assert not (outs[0].shape == outs[1].shape and np.allclose(outs[0], outs[1]))
    with pytest.raises(ValueError, match='speakers'): otts.infer_ids(ids[0].numpy())
    with pytest.raises(ValueError, match='unknown speaker 3'): otts.infer_ids(ids[0].numpy(), 3)


def test_runtime_errors(tmp_path, tiny):
    with pytest.raises(FileNotFoundError, match='not found'): OnnxTTS(tmp_path / 'none.onnx')
    (tmp_path / 'junk.onnx').write_bytes(b'not a model')
    with pytest.raises(ValueError, match='cannot load'): OnnxTTS(tmp_path / 'junk.onnx')
    otts = OnnxTTS(tiny[2])
    with pytest.raises(ValueError, match='single-speaker'): otts.infer_ids([1, 2, 3], speaker=0)
    with pytest.raises(ValueError, match='no symbols'): otts.infer_ids([])
    with pytest.raises(ValueError, match='empty'): otts.synthesize('  ')


def test_chunked_decode_equals_whole_decode():
    torch.manual_seed(4)
    model = model_from_config(mid_config()).eval()
    z = torch.randn(1, 32, 90)
    with torch.no_grad():
        whole = model.dec(z)
        chunks = list(decode_chunks(model, z, 40, 16))
        seamless = torch.cat(chunks, 2)
        blind = decode_chunked(model, z, 40, 0)
    assert [c.size(2) for c in chunks] == [40 * 256] * 2 + [10 * 256]
    peak = whole.abs().max()
    # bound: with 16 frames of context per side (≥ the decoder's receptive field, ~12 frames) every sample,
    # seams included, is the whole decode's up to float32 round-off: ≤ 1e-5 of the peak
    assert (seamless - whole).abs().max() <= 1e-5 * peak
    # without context the seams are wrong, but frames 12 or more from a seam are still right
    err = (blind - whole).abs()[0, 0].view(-1, 256).amax(1)           # per frame
    far = [f for f in range(90) if min(abs(f - s) for s in (0, 40, 80)) >= 12]
    assert len(far) > 30 and err.max() > 1e-2 * peak and err[far].max() <= 1e-5 * peak
    with pytest.raises(ValueError, match='chunk_frames'): next(decode_chunks(model, z, 0))
    with pytest.raises(ValueError, match='overlap'): next(decode_chunks(model, z, 4, -1))


@pytest.fixture(scope='module')
def tts():
    torch.manual_seed(5)
    hps = tiny_config()
    return TTS(model_from_config(hps), hps)


TEXT = 'The first sentence. A second, longer sentence follows it. Third! And the fourth one ends it.'


def test_stream_yields_sentence_by_sentence(tts, monkeypatch):
    calls = []
    infer = tts.model.infer
    monkeypatch.setattr(tts.model, 'infer', lambda *a, **k: calls.append(1) or infer(*a, **k))
    it = tts.stream(TEXT, seed=11, pause=0.1)
    first = next(it)
    assert len(calls) == 1                                             # later sentences not computed yet
    rest = list(it)
    assert len(calls) == 4 and len(rest) == 6
    np.testing.assert_array_equal(first, tts.synthesize('The first sentence.', seed=11)[0])
    assert all(not r.any() and len(r) == int(0.1 * 22050) for r in rest[::2])   # pauses between sentences
    np.testing.assert_array_equal(np.concatenate([first, *rest]), tts.synthesize(TEXT, seed=11, pause=0.1)[0])


def test_chunked_stream_matches_synthesize(tts):
    pieces = list(tts.stream(TEXT, seed=2, chunk_frames=5, overlap_frames=16))
    full = tts.synthesize(TEXT, seed=2)[0]
    assert len(pieces) > 10 and all(p.dtype == np.float32 for p in pieces)
    joined = np.concatenate(pieces)
    assert joined.shape == full.shape and np.abs(joined - full).max() <= 1e-5 * np.abs(full).max()
    with pytest.raises(ValueError, match='chunk_frames'): tts.stream('Hi.', chunk_frames=0)
    with pytest.raises(ValueError, match='single-speaker'): tts.stream('Hi.', speaker=1)
    with pytest.raises(TypeError): tts.stream(None)


def test_onnx_stream_and_text_front_end_match_torch(tiny, tts):
    otts = OnnxTTS(tiny[2], threads=1)
    s = 'Hello there, world.'
    assert otts.text_to_ids(s).tolist() == tts.text_to_ids(s).tolist()
    pieces = list(otts.stream('One. Two.', noise_scale=0., noise_scale_w=0., pause=0.2))
    assert len(pieces) == 3 and len(pieces[1]) == int(0.2 * otts.sample_rate) and not pieces[1].any()
    audio, sr = otts.synthesize('One. Two.', noise_scale=0., noise_scale_w=0., pause=0.2)
    np.testing.assert_array_equal(audio, np.concatenate(pieces))
    ref, _ = TTS(tiny[0], tiny[1]).synthesize('One. Two.', noise_scale=0., noise_scale_w=0., pause=0.2)
    assert audio.shape == ref.shape and np.abs(audio - ref).max() <= 1e-5


# --- the command line, end to end -------------------------------------------------------------------------
DRIVER = r'''
import json, sys, traceback, importlib.abc
first = []
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == 'torch' and not first: first.append([f.filename for f in traceback.extract_stack()])
        return None
sys.meta_path.insert(0, Watch())
from vits_nb.cli import main
rc = main(sys.argv[1:])
via = [f for f in (first[0] if first else []) if '/vits_nb/' in f.replace('\\', '/')]
sys.stderr.write('\nDRIVER ' + json.dumps({'rc': rc, 'torch': 'torch' in sys.modules, 'importer': via[-1] if via else None}) + '\n')
'''


def run_cli(*argv, cwd):
    p = subprocess.run([sys.executable, '-c', DRIVER, *map(str, argv)], cwd=cwd, capture_output=True,
                       env={'OMP_NUM_THREADS': '1', 'PATH': '/usr/bin:/bin', 'PYTHONPATH': str(ROOT)})
    report = json.loads(p.stderr.decode().rsplit('DRIVER ', 1)[1])
    return p, report


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp('cli')
    torch.manual_seed(6)
    save_checkpoint(model_from_config(tiny_config()), None, 2e-4, 0, d / 'G_0.pth')
    (d / 'config.json').write_text(json.dumps(tiny_config().to_dict()))
    assert main(['export-onnx', '-k', str(d / 'G_0.pth'), '-o', str(d / 'm.onnx')]) == 0
    return d


def test_cli_export_onnx(exported, capsys):
    assert main(['export-onnx', '-k', str(exported / 'G_0.pth'), '-o', str(exported / 'n.onnx')]) == 0
    out = capsys.readouterr().out
    assert 'n.onnx' in out and 'parity with noise off: max |onnx - torch| =' in out
    diff = float(out.split('torch| = ')[1].split(',')[0])
    assert diff <= 1e-5
    assert main(['export-onnx', '-k', str(exported / 'missing.pth'), '-o', str(exported / 'x.onnx')]) == 1
    assert 'checkpoint not found' in capsys.readouterr().err and not (exported / 'x.onnx').exists()


def test_cli_synth_onnx_writes_a_wav_without_importing_torch(exported):
    import soundfile as sf
    p, rep = run_cli('synth', '--onnx', exported / 'm.onnx', '-t', 'Hello there. Bye.', '-o', exported / 'o.wav',
                     '--seed', '3', '--threads', '1', cwd=exported)
    assert rep['rc'] == 0, p.stderr.decode()
    audio, sr = sf.read(exported / 'o.wav', dtype='float32')
    assert sr == 22050 and len(audio) > 0 and 'o.wav' in p.stdout.decode()
    # nothing of the ONNX path needs torch, the text front end included
    assert rep['importer'] is None and not rep['torch'], rep


def test_cli_synth_onnx_runs_without_torch(exported):
    p, rep = run_cli('synth', '--onnx', exported / 'm.onnx', '-t', 'Hello.', '-o', exported / 'p.wav', cwd=exported)
    assert rep['rc'] == 0 and not rep['torch'], rep


@pytest.mark.parametrize('fmt,dtype', [('s16', '<i2'), ('f32', '<f4')])
def test_cli_stream_to_stdout(exported, fmt, dtype):
    text = 'One sentence here. Another one there.'
    p, rep = run_cli('synth', '-k', exported / 'G_0.pth', '-t', text, '--stream', '--pcm', fmt, '--seed', '4', cwd=exported)
    assert rep['rc'] == 0, p.stderr.decode()
    pcm = np.frombuffer(p.stdout, dtype=dtype)
    ref, sr = TTS.from_checkpoint(exported / 'G_0.pth').synthesize(text, seed=4)
    want = (np.clip(ref, -1, 1) * 32767).round().astype('<i2') if fmt == 's16' else ref
    np.testing.assert_array_equal(pcm, want)
    assert 'streamed' in p.stderr.decode()
    # the ONNX runtime streams too; chunked decoding on a checkpoint gives the same samples up to round-off
    p, rep = run_cli('synth', '--onnx', exported / 'm.onnx', '-t', text, '--stream', '--pcm', fmt, cwd=exported)
    assert rep['rc'] == 0 and len(p.stdout) % np.dtype(dtype).itemsize == 0 and len(p.stdout) > 0
    p, rep = run_cli('synth', '-k', exported / 'G_0.pth', '-t', text, '--stream', '--pcm', 'f32', '--seed', '4',
                     '--chunk-frames', '6', cwd=exported)
    np.testing.assert_allclose(np.frombuffer(p.stdout, dtype='<f4'), ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_cli_synth_argument_errors(exported, capsys):
    k, o = str(exported / 'G_0.pth'), str(exported / 'm.onnx')
    x = str(exported / 'x.wav')
    for argv, msg in [(['-k', k, '--onnx', o, '-t', 'hi', '-o', x], 'one of --checkpoint, --voice or --onnx'),
                      (['--voice', o, '--onnx', o, '-t', 'hi', '-o', x], 'one of --checkpoint, --voice or --onnx'),
                      (['-k', k, '--voice', o, '-t', 'hi', '-o', x], 'either --checkpoint or --voice'),
                      (['-k', k, '-t', 'hi'], 'either --output'),
                      (['-k', k, '-t', 'hi', '-o', x, '--stream'], 'either --output'),
                      (['--onnx', o, '-t', 'hi', '--stream', '--chunk-frames', '4'], '--chunk-frames')]:
        assert main(['synth', *argv]) == 1
        assert msg in capsys.readouterr().err


# --- int8 decoder -------------------------------------------------------------------------------------------

def _initializers(proto): return {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}


@pytest.fixture(scope='module')
def int8_all(tmp_path_factory):
    "A ResBlock1 (HiFi-GAN V1 layout) model exported three ways: float32, int8 decoder, int8 residual-block convolutions."
    torch.manual_seed(7)
    d = tmp_path_factory.mktemp('int8')
    hps = mid_config()
    model = model_from_config(hps).eval()
    return (model, hps, export_onnx(model, hps, d / 'f32.onnx'), export_onnx(model, hps, d / 'int8.onnx', quantize='int8'),
            export_onnx(model, hps, d / 'int8rb.onnx', quantize='int8-resblocks'))


@pytest.fixture(scope='module')
def int8_mid(int8_all):
    "The float32 and the `int8-resblocks` exports (the residual-block convolutions only)."
    model, hps, f32, _, rb = int8_all
    return model, hps, f32, rb


def test_int8_quantizes_exactly_the_residual_block_convolutions(int8_mid):
    model, hps, f32, int8 = int8_mid
    p32, p8 = onnx.load(f32), onnx.load(int8)
    made_by = {o: n.op_type for n in p8.graph.node for o in n.output}
    quantized = {n.name for n in p8.graph.node if n.op_type in ('Conv', 'ConvTranspose') and made_by.get(n.input[1]) == 'DequantizeLinear'}
    expected = set(decoder_conv_nodes(p32))
    # ResBlock1 with kernels 3, 7, 11 and 3 dilations each: 2 convolutions per dilation per kernel, 4 stages
    assert quantized == expected and len(expected) == 4 * 3 * 3 * 2
    # everything else keeps its float32 weights, bit for bit
    w32, w8 = _initializers(p32), _initializers(p8)
    kept = [n for n in p8.graph.node if n.op_type in ('Conv', 'ConvTranspose') and n.name not in quantized]
    assert len(kept) == sum(n.op_type in ('Conv', 'ConvTranspose') for n in p32.graph.node) - len(expected)
    def weight(proto, inits, name):     # through the exporter's Identity nodes for weights it found equal
        src = {o: n for n in proto.graph.node for o in n.output}
        while name not in inits and src[name].op_type == 'Identity': name = src[name].input[0]
        return inits[name]
    for n in kept:
        a, b = weight(p8, w8, n.input[1]), weight(p32, w32, n.input[1])
        assert a.dtype == np.float32 and np.array_equal(a, b)
    meta32 = {p.key: p.value for p in p32.metadata_props}; meta8 = {p.key: p.value for p in p8.metadata_props}
    assert meta8.pop('vits_nb_quantization').startswith(f'int8 decoder: {len(expected)} residual-block Conv nodes')
    assert meta8 == meta32
    assert OnnxTTS(f32).quantization is None and 'calibration on 8 utterances' in OnnxTTS(int8).quantization


def test_polyphase_upsample_is_the_transposed_convolution():
    torch.manual_seed(3)
    for cin, cout, u, k in [(16, 8, 8, 16), (12, 6, 4, 8), (6, 3, 2, 4), (5, 4, 3, 5), (4, 4, 2, 2), (4, 2, 5, 9)]:
        ct = torch.nn.ConvTranspose1d(cin, cout, k, u, padding=(k - u) // 2)
        poly = PolyphaseUpsample(ct)
        assert poly.conv.stride == (1,) and poly.conv.out_channels == cout * u
        for t in (1, 2, 23):
            x = torch.randn(2, cin, t, dtype=torch.float64)
            with torch.no_grad():
                y, yp = ct.double()(x), PolyphaseUpsample(ct.double()).double()(x)
            assert yp.shape == (2, cout, t * u) and torch.allclose(yp, y, atol=1e-12)
    for bad in (torch.nn.ConvTranspose1d(4, 4, 5, 2), torch.nn.ConvTranspose1d(4, 4, 4, 2, padding=1, dilation=2)):
        with pytest.raises(ValueError, match='no polyphase form'): PolyphaseUpsample(bad)


def test_equalize_decoder_is_exact_in_float():
    "Polyphase upsampling, per-channel stream scales and the folded 1/num_kernels change nothing but rounding."
    import copy
    from torch.nn.utils import parametrize
    from vits_nb.commons import remove_weight_norm
    from vits_nb.decoder import Generator
    for rb, gin in (('1', 0), ('2', 5)):
        torch.manual_seed(4)
        gen = Generator(10, rb, [3, 5, 7], [[1, 2], [2, 3], [1, 4]], [4, 2, 2], 32, [8, 4, 4], gin_channels=gin).double().eval()
        for m in gen.modules():
            if parametrize.is_parametrized(m, 'weight'): remove_weight_norm(m)
        z, g = torch.randn(2, 10, 7, dtype=torch.float64), (torch.randn(2, gin, 1, dtype=torch.float64) if gin else None)
        peaks = [torch.rand(c, dtype=torch.float64) * 5 + .1 for c in (32, 16, 8, 4)]
        with torch.no_grad():
            ref = gen(z, g=g)
            eq = equalize_decoder(copy.deepcopy(gen), peaks)
            out = eq(z, g=g)
        assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-10)
        assert all(isinstance(u, PolyphaseUpsample) for u in eq.ups)
        # the scales really moved the weights: stream 2's channels carried as x_c / s_c
        s2 = (peaks[2] / peaks[2].mean()) ** .5
        assert not torch.allclose(eq.ups[1].conv.bias, gen.ups[1].bias.repeat_interleave(2))
        assert torch.allclose(eq.ups[1].conv.bias, (gen.ups[1].bias / s2).repeat_interleave(2))
    with pytest.raises(ValueError, match='fold weight norm first'): equalize_decoder(Generator(10, '2', [3], [[1]], [2], 8, [4]))
    with pytest.raises(ValueError, match='channels per stream'): equalize_decoder(copy.deepcopy(gen), peaks[:2])


def test_clipped_range_trades_rare_peaks_for_finer_steps():
    rng = np.random.default_rng(0)
    x = rng.laplace(size=20000)                    # a long thin tail, like the decoder's activations
    lo, hi = clipped_range(x, x.min(), x.max())
    assert x.min() < lo < 0 < hi < x.max()
    def err(l, h):
        step = (h - l) / 255; zp = np.round(-l / step)
        return np.mean(((np.clip(np.round(x / step) + zp, 0, 255) - zp) * step - x) ** 2)
    assert err(lo, hi) < 0.97 * err(x.min(), x.max())
    assert all(err(lo, hi) <= err(x.min() * a, x.max() * b) + 1e-12 for a in (.2, .5, .8, 1) for b in (.2, .5, .8, 1))
    u = rng.uniform(-1, 2, 20000)                  # no outliers: the range stays (almost) min-max
    lo, hi = clipped_range(u, u.min(), u.max())
    assert lo <= -0.95 and hi >= 1.9
    assert clipped_range(np.ones(10), 1., 1.) == (0., 1.)   # the range always holds 0


def test_int8_decoder_quantizes_from_the_first_upsampling_to_conv_post(int8_all, tmp_path):
    import onnxruntime as ort
    model, hps, f32, int8, _ = int8_all
    p32, p8 = onnx.load(f32), onnx.load(int8)
    made_by = {o: n.op_type for n in p8.graph.node for o in n.output}
    convs = [n for n in p8.graph.node if n.op_type in ('Conv', 'ConvTranspose')]
    quantized = {n.name for n in convs if made_by.get(n.input[1]) == 'DequantizeLinear'}
    dec_convs = {n.name for n in convs if n.name.startswith('/dec/')}
    # ResBlock1 (3 kernels x 3 dilations x 2 convs) x 4 stages + 4 polyphase upsamplings; conv_pre, conv_post float
    assert quantized == dec_convs - {'/dec/conv_pre/Conv', '/dec/conv_post/Conv'} and len(quantized) == 4 * 18 + 4
    assert not any(n.op_type == 'ConvTranspose' for n in p8.graph.node)
    assert not any(n.name.startswith('/dec/ups') and n.op_type == 'Shape' for n in p8.graph.node)   # constant shapes
    assert set(decoder_int8_nodes(p8)) >= quantized
    # outside the decoder every weight is the float32 export's, bit for bit
    w32, w8 = _initializers(p32), _initializers(p8)
    for n in p32.graph.node:
        if n.op_type == 'Conv' and not n.name.startswith('/dec/') and n.input[1] in w32:
            assert np.array_equal(w32[n.input[1]], w8[n.input[1]]), n.name
    meta8 = {p.key: p.value for p in p8.metadata_props}
    assert meta8['vits_nb_quantization'].startswith(f'int8 decoder: {len(decoder_int8_nodes(p8))} nodes ({len(quantized)} Conv')
    assert 'calibration on 8 utterances' in meta8['vits_nb_quantization']
    # onnxruntime runs it as integer kernels end to end: convolutions, leaky ReLUs and additions
    so = ort.SessionOptions(); so.optimized_model_filepath = str(tmp_path / 'opt.onnx'); so.log_severity_level = 3
    ort.InferenceSession(str(int8), so, providers=['CPUExecutionProvider'])
    kinds = [n.op_type for n in onnx.load(tmp_path / 'opt.onnx').graph.node]
    assert kinds.count('QLinearConv') == len(quantized)
    n_lrelu = sum(n.op_type == 'LeakyRelu' for n in p8.graph.node if n.name.startswith('/dec/'))
    assert kinds.count('QLinearLeakyRelu') == n_lrelu - 1          # all but the one after conv_pre
    assert kinds.count('QLinearAdd') == sum(n.op_type == 'Add' for n in p8.graph.node if n.name.startswith('/dec/'))


def test_int8_decoder_keeps_lengths_and_fidelity(int8_all):
    model, hps, f32, int8, rb = int8_all
    d8, drb, d32 = (check_parity(model, p, length=60) for p in (int8, rb, f32))
    assert d8['samples'] == d32['samples'] >= 60 * 256
    assert 15 < d8['snr_db'] < drb['snr_db'] and d32['snr_db'] > 100, (d8, drb, d32)


def test_int8_weights_are_symmetric_per_output_channel(int8_mid):
    "The stored int8 weights are round(W / s_c) with s_c = max|W_c| / 127, W the folded float weight."
    model, hps, f32, int8 = int8_mid
    p8 = onnx.load(int8)
    w8, by_out = _initializers(p8), {o: n for n in p8.graph.node for o in n.output}
    conv = next(n for n in p8.graph.node if n.name == '/dec/resblocks.4/convs1.1/Conv')
    dq = by_out[conv.input[1]]                               # DequantizeLinear(q, scale, zero_point)
    q, scale, zp = (w8[i] for i in dq.input)
    w = inference_copy(model, hps).dec.resblocks[4].convs1[1].weight.detach().numpy()
    assert q.dtype == np.int8 and not zp.any() and scale.shape == (w.shape[0],)
    np.testing.assert_allclose(scale, np.abs(w).max(axis=(1, 2)) / 127, rtol=1e-6)
    assert np.array_equal(q, np.round(w / scale[:, None, None]).astype(np.int8)) and np.abs(q).max() == 127


def test_int8_runs_integer_kernels_and_keeps_lengths_and_fidelity(int8_mid, tmp_path):
    import onnxruntime as ort
    model, hps, f32, int8 = int8_mid
    so = ort.SessionOptions(); so.optimized_model_filepath = str(tmp_path / 'opt.onnx'); so.log_severity_level = 3
    ort.InferenceSession(str(int8), so, providers=['CPUExecutionProvider'])
    kinds = [n.op_type for n in onnx.load(tmp_path / 'opt.onnx').graph.node]
    assert kinds.count('QLinearConv') == len(decoder_conv_nodes(onnx.load(f32)))
    d8, d32 = check_parity(model, int8, length=60), check_parity(model, f32, length=60)
    assert d8['samples'] == d32['samples'] >= 60 * 256
    assert 25 < d8['snr_db'] < 80 and d32['snr_db'] > 100, (d8, d32)
    # with noise: the int8 file draws its own noise like the float one; lengths are fixed by the float32 front end
    ids = np.random.default_rng(0).integers(1, 178, 40)
    a = OnnxTTS(int8, threads=1).infer_ids(ids, noise_scale=.667, noise_scale_w=0.)
    assert a.shape == (torch_audio(model, torch.as_tensor(ids)[None], noise_scale=0., noise_scale_w=0.).shape[0],)


def test_int8_export_is_reproducible_and_follows_the_calibration(tmp_path):
    torch.manual_seed(8)
    hps = tiny_config()
    model = model_from_config(hps).eval()
    scales = lambda p: {k: v for k, v in _initializers(onnx.load(p)).items() if k.endswith('_scale')}
    a = scales(export_onnx(model, hps, tmp_path / 'a.onnx', quantize='int8'))
    b = scales(export_onnx(model, hps, tmp_path / 'b.onnx', quantize='int8'))
    c = scales(export_onnx(model, hps, tmp_path / 'c.onnx', quantize='int8', calibration=[np.arange(1, 30)]))
    assert a.keys() == b.keys() == c.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)      # activation ranges come from the calibration inputs


def test_int8_multispeaker_and_errors(tmp_path):
    torch.manual_seed(9)
    hps = tiny_config(n_speakers=3)
    model = model_from_config(hps).eval()
    path = export_onnx(model, hps, tmp_path / 'm8.onnx', quantize='int8', calibration=['One.', 'Two words.', 'And three.', [5, 6, 7]])
    d = check_parity(model, path, speaker=2)
    assert d['snr_db'] > 15 and 'calibration on 4 utterances' in OnnxTTS(path).quantization
    with pytest.raises(ValueError, match="quantize must be None"): export_onnx(model, hps, tmp_path / 'x.onnx', quantize='fp16')
    with pytest.raises(ValueError, match='calibration is empty'): export_onnx(model, hps, tmp_path / 'x.onnx', quantize='int8', calibration=[])
    with pytest.raises(ValueError, match='calibration item 1: text is empty'): export_onnx(model, hps, tmp_path / 'x.onnx', quantize='int8', calibration=['a', ''])
    assert not list(tmp_path.glob('x.onnx*'))
    with pytest.raises(ValueError, match='no decoder convolutions'):
        quantize_decoder(_single_conv(tmp_path), tmp_path / 'y.onnx', [{}])


def _single_conv(tmp_path):
    path = tmp_path / 'conv.onnx'
    torch.onnx.export(torch.nn.Conv1d(2, 2, 3), (torch.randn(1, 2, 8),), path, dynamo=False)
    return path


def test_cli_export_int8(exported, capsys):
    (exported / 'cal.txt').write_text('First calibration line.\n\nSecond one here.\n')
    assert main(['export-onnx', '-k', str(exported / 'G_0.pth'), '-o', str(exported / 'q.onnx'), '--int8',
                 '--calibration', str(exported / 'cal.txt')]) == 0
    out = capsys.readouterr().out
    snr = float(out.split('SNR ')[1].split()[0])
    # the whole decoder in int8: ≈19 dB on this random tiny model (the residual-block version: ≈25 dB)
    assert 15 < snr < 100 and 'calibration on 2 utterances' in OnnxTTS(exported / 'q.onnx').quantization
    p, rep = run_cli('synth', '--onnx', exported / 'q.onnx', '-t', 'Hello.', '-o', exported / 'q.wav', cwd=exported)
    assert rep['rc'] == 0 and not rep['torch'], rep
    assert main(['export-onnx', '-k', str(exported / 'G_0.pth'), '-o', str(exported / 'r.onnx'), '--calibration', str(exported / 'cal.txt')]) == 1
    assert 'only applies with --int8' in capsys.readouterr().err
    assert main(['export-onnx', '-k', str(exported / 'G_0.pth'), '-o', str(exported / 'r.onnx'), '--int8', '--calibration', str(exported / 'none.txt')]) == 1
    assert 'calibration file not found' in capsys.readouterr().err and not (exported / 'r.onnx').exists()
