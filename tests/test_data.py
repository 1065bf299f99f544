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
