"""The full model: official state-dict layout, checkpoints in the official format, synthesis API."""
import json
from reference import rows, layout
from pathlib import Path
import numpy as np
import pytest
import torch
from vits_nb.models import (model_from_config, tiny_config, save_checkpoint, load_checkpoint, read_checkpoint,
                            CheckpointMismatchError, describe_state_dict, matching_configs)
from vits_nb.synth import TTS, split_sentences

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / 'tests' / 'fixtures'





def _plain_count(sd): return sum(v.numel() for k, v in sd.items() if not k.endswith('weight_g'))


@pytest.fixture(scope='module')
def ljs(): return model_from_config(ROOT / 'configs' / 'ljs_base.json')


@pytest.mark.parametrize('cfg,table,count', [('ljs_base', 'state_dict_ljs_base_G.tsv', 36_287_856),
                                             ('vctk_base', 'state_dict_vctk_base_G.tsv', 39_654_704)])
def test_state_dict_is_official(cfg, table, count, ljs):
    net = ljs if cfg == 'ljs_base' else model_from_config(ROOT / 'configs' / f'{cfg}.json')
    sd = net.state_dict()
    assert layout(sd) == rows(table)      # same keys, shapes and order
    assert _plain_count(sd) == count
    assert all(v.dtype == torch.float32 for v in sd.values())


def test_official_checkpoint_loads_strict_and_changes_output(tmp_path, ljs):
    "A checkpoint in the official format (weight_g/weight_v) loads strictly and its weights really take effect."
    torch.manual_seed(1)
    src = model_from_config(ROOT / 'configs' / 'ljs_base.json').eval()
    official = {'model': src.state_dict(), 'iteration': 1000, 'optimizer': None, 'learning_rate': 2e-4}
    torch.save(official, tmp_path / 'G_1000.pth')
    assert any(k.endswith('weight_g') for k in official['model'])
    dst = ljs.eval()
    x, xl = torch.randint(1, 178, (1, 12)), torch.tensor([12])
    w = torch.full((1, 1, 12), 2.)
    with torch.no_grad():
        before = dst.infer(x, xl, w=w, noise_scale=0.)[0]
        _, _, lr, it = load_checkpoint(tmp_path / 'G_1000.pth', dst)
        after = dst.infer(x, xl, w=w, noise_scale=0.)[0]
        ref = src.infer(x, xl, w=w, noise_scale=0.)[0]
    assert (lr, it) == (2e-4, 1000)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, ref)
    # the newer parametrization key layout loads too
    sd_new = {k.replace('weight_g', 'parametrizations.weight.original0').replace('weight_v', 'parametrizations.weight.original1'): v
              for k, v in src.state_dict().items()}
    dst.load_state_dict(sd_new, strict=True)


def test_generator_only_bare_and_ddp_files(tmp_path):
    net = model_from_config(tiny_config())
    sd = net.state_dict()
    torch.save(sd, tmp_path / 'bare.pth')                                           # a bare state dict
    torch.save({'model': {'module.' + k: v for k, v in sd.items()}, 'iteration': 3}, tmp_path / 'ddp.pth')
    for f in ('bare.pth', 'ddp.pth'):
        other = model_from_config(tiny_config())
        load_checkpoint(tmp_path / f, other)
        for k, v in other.state_dict().items(): assert torch.equal(v, sd[k]), k


def test_mismatch_names_keys_and_config(tmp_path, ljs):
    save_checkpoint(ljs, None, 2e-4, 5, tmp_path / 'G_5.pth')
    sd, meta = read_checkpoint(tmp_path / 'G_5.pth')
    assert describe_state_dict(sd)['n_speakers'] == 0 and meta['iteration'] == 5
    assert matching_configs(sd) == ['ljs_base.json']
    vctk = model_from_config(ROOT / 'configs' / 'vctk_base.json')
    with pytest.raises(CheckpointMismatchError) as e: load_checkpoint(tmp_path / 'G_5.pth', vctk)
    msg = str(e.value)
    assert 'missing keys' in msg and 'vctk' not in msg.split('fit it:')[-1]
    assert 'ljs_base.json' in msg


def test_bad_checkpoint_files(tmp_path):
    net = model_from_config(tiny_config())
    with pytest.raises(FileNotFoundError): load_checkpoint(tmp_path / 'nope.pth', net)
    (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='cannot read'): load_checkpoint(tmp_path / 'junk.pth', net)
    torch.save({'foo': 1}, tmp_path / 'odd.pth')
    with pytest.raises(ValueError, match='not a VITS checkpoint'): load_checkpoint(tmp_path / 'odd.pth', net)


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    net = model_from_config(tiny_config())
    save_checkpoint(net, None, 1e-4, 1, tmp_path / 'G.pth')
    good = (tmp_path / 'G.pth').read_bytes()
    def boom(*a, **k): raise RuntimeError('disk full')
    monkeypatch.setattr(torch, 'save', boom)
    with pytest.raises(RuntimeError): save_checkpoint(net, None, 1e-4, 2, tmp_path / 'G.pth')
    assert (tmp_path / 'G.pth').read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ['G.pth']


def test_training_forward_shapes_and_alignment():
    torch.manual_seed(0)
    for use_sdp in (True, False):
        net = model_from_config(tiny_config(n_speakers=3, use_sdp=use_sdp))
        x, xl = torch.randint(1, 178, (2, 9)), torch.tensor([9, 6])
        y, yl = torch.rand(2, 513, 40), torch.tensor([40, 25])
        o, l_length, attn, ids, x_mask, y_mask, (z, z_p, m_p, logs_p, m_q, logs_q) = net(x, xl, y, yl, sid=torch.tensor([0, 2]))
        assert o.shape == (2, 1, 1024) and l_length.shape == (2,) and torch.isfinite(l_length).all()
        assert torch.equal(attn.sum((1, 3)), y_mask.squeeze(1))
        assert torch.equal(attn.sum(2).squeeze(1) > 0, x_mask.squeeze(1) > 0)
        assert (ids + net.segment_size <= yl.clamp(min=net.segment_size)).all()
        l_length.sum().backward()
        assert net.dp.state_dict() and any(p.grad is not None for p in net.dp.parameters())


def test_synthesis_api(tmp_path):
    hps = tiny_config()
    save_checkpoint(model_from_config(hps), None, 2e-4, 0, tmp_path / 'G_0.pth')
    (tmp_path / 'config.json').write_text(json.dumps(hps.to_dict()))
    tts = TTS.from_checkpoint(tmp_path / 'G_0.pth')
    a, sr = tts.synthesize('Hello there, world.', seed=4)
    b, _ = tts.synthesize('Hello there, world.', seed=4)
    c, _ = tts.synthesize('Hello there, world.', seed=5)
    assert sr == 22050 and a.dtype == np.float32 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a).max() <= 1.0
    assert split_sentences('Mr. Brown left. Then what? Nothing!') == ['Mr. Brown left.', 'Then what?', 'Nothing!']
    two, _ = tts.synthesize('One. Two.', seed=0, pause=0.5)
    assert len(two) >= int(0.5 * sr)
    with pytest.raises(ValueError, match='empty'): tts.synthesize('')
    with pytest.raises(TypeError): tts.synthesize(None)
    with pytest.raises(ValueError, match='single-speaker'): tts.synthesize('hi', speaker=0)
    info = tts.info()
    assert info['sample_rate'] == 22050 and info['n_speakers'] == 0 and info['parameters'] > 0


def test_multispeaker_synthesis_and_speaker_errors(tmp_path):
    hps = tiny_config(n_speakers=3)
    save_checkpoint(model_from_config(hps), None, 2e-4, 0, tmp_path / 'G_0.pth')
    (tmp_path / 'config.json').write_text(json.dumps(hps.to_dict()))
    tts = TTS.from_checkpoint(tmp_path / 'G_0.pth', tmp_path / 'config.json')
    a, _ = tts.synthesize('Hi there.', speaker=1, seed=0)
    b, _ = tts.synthesize('Hi there.', speaker=2, seed=0)
    assert len(a) > 0 and not (len(a) == len(b) and np.array_equal(a, b))
    with pytest.raises(ValueError, match='unknown speaker'): tts.synthesize('Hi.', speaker=3)
    with pytest.raises(ValueError, match='speakers'): tts.synthesize('Hi.')
    outs = tts.synthesize_batch(['One.', 'Two words.'], speaker=0, seed=0)
    assert len(outs) == 2
