"""The `vits-nb` command: the main job end to end on 4 sentences, re-run, errors, and the console-script wiring."""
import configparser, importlib, json, shutil
from pathlib import Path

import pytest

from vits_nb.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
HAVE_TEACHERS = all(shutil.which(b) for b in ('text2wave', 'flite'))
needs_teachers = pytest.mark.skipif(not HAVE_TEACHERS, reason='festival/flite not installed '
                                    '(apt-get install festival festvox-us-slt-hts festvox-kallpc16k flite)')


@needs_teachers
def test_main_job_end_to_end(tmp_path, capsys):
    out = tmp_path / 'toy'
    assert main(['main', '--n', '4', '--out', str(out), '--multispeaker', '--no-progress', '--train-minutes', '0']) == 0
    text = capsys.readouterr().out
    single = json.loads((out / 'stats.json').read_text())
    multi = json.loads((tmp_path / 'toy_multi' / 'stats.json').read_text())   # default: <out>_multi
    assert (single['n_utterances'], single['n_speakers'], single['n_generated']) == (4, 1, 4)
    assert (multi['n_utterances'], multi['n_speakers'], multi['n_generated']) == (4, 7, 4)
    assert len(list((out / 'wavs').glob('toy_*.wav'))) == 4
    # statistics, the sample with phonemes, and where things are
    assert text.count('utterances   4 (3 train, 1 val)') == 2
    assert 'speakers     7 (slt_hts, kal_diphone, ked_diphone, flite_slt, flite_rms, flite_awb, flite_kal16)' in text
    assert f"audio        {single['total_seconds']:.1f} s" in text
    train = [l.split('|') for l in Path(single['filelists']['train']).read_text().splitlines()]
    for row in (train[0], train[-1]):
        assert f'{Path(row[0]).stem} (slt_hts)  {row[1]}' in text
    if single['cleaned']:
        cleaned = Path(single['filelists']['train'] + '.cleaned').read_text().splitlines()
        assert cleaned[0].split('|')[1] in text and 'no phonemes' not in text
    for f in ('metadata.csv', 'stats.json', 'toy_audio_text_train_filelist.txt', 'toy_audio_sid_text_val_filelist.txt'):
        assert f in text, f
    # a re-run reuses every wav
    assert main(['main', '--n', '4', '--out', str(out), '--no-progress', '--train-minutes', '0']) == 0
    cap = capsys.readouterr()
    assert 'generated    0 new, 4 reused' in cap.out and 'warning' not in cap.err
    # a .cleaned row that is not what the cleaner makes of its sentence is reported, not passed over
    if single['cleaned']:
        p = Path(single['filelists']['train'] + '.cleaned')
        rows = p.read_text(encoding='utf-8').splitlines()
        rows[-1] = rows[-1].split('|')[0] + '|ʃɪftᵻd ɹˈoʊ.'
        p.write_text('\n'.join(rows) + '\n', encoding='utf-8')
        assert main(['main', '--n', '4', '--out', str(out), '--no-progress', '--train-minutes', '0']) == 0
        err = capsys.readouterr().err
        last = Path(train[-1][0]).stem
        assert f'disagrees with english_cleaners2 on {last}' in err and 'ʃɪftᵻd ɹˈoʊ.' in err


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(['main', '--n', '1', '--out', str(tmp_path / 't'), '--train-minutes', '0']) == 1
    err = capsys.readouterr().err
    assert err.startswith('vits-nb main: error: n must be at least 2') and 'Traceback' not in err
    assert main(['main', '--sentences', str(tmp_path / 'missing.txt'), '--out', str(tmp_path / 't'), '--train-minutes', '0']) == 1
    assert 'toy corpus sentences not found' in capsys.readouterr().err
    assert not (tmp_path / 't').exists()


@pytest.mark.parametrize('argv', [[], ['nosuchjob'], ['main', '--voice', 'nobody'], ['main', '--n', 'many']])
def test_bad_command_lines_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e: main(argv)
    assert e.value.code == 2 and 'usage: vits-nb' in capsys.readouterr().err


def test_parser_and_console_script(capsys):
    args = build_parser().parse_args(['main'])
    assert (args.n, args.out, args.multispeaker, args.voice, args.jobs) == (None, None, False, 'slt_hts', None)
    from vits_nb.finetune import DEFAULT_SCHEDULE, SCHEDULES
    assert args.schedule == DEFAULT_SCHEDULE == 'acoustic' and args.schedule in SCHEDULES
    assert args.blend is None and build_parser().parse_args(['main', '--blend', '0.5']).blend == 0.5
    assert {'main', 'train', 'synth', 'info', 'export-onnx'} <= set(COMMANDS)
    with pytest.raises(SystemExit) as e: main(['--version'])
    assert e.value.code == 0 and capsys.readouterr().out.startswith('vits-nb 0.')
    # settings.ini wires `vits-nb` to this very function
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    name, target = cfg['DEFAULT']['console_scripts'].split('=', 1)
    mod, fn = target.split(':')
    assert name.strip() == 'vits-nb' and getattr(importlib.import_module(mod), fn) is main


def test_main_job_trains_resumes_and_speaks_heldout_sentences(tmp_path, capsys):
    "The main job's from-scratch path end to end at tiny scale: corpus → 2 steps → held-out WAVs + PNG; a re-run resumes."
    import json
    import soundfile as sf
    from vits_nb.models import tiny_config
    if not shutil.which('text2wave'): pytest.skip('festival (text2wave) is not installed')
    cfg = tiny_config().to_dict()
    cfg['train'].update(batch_size=2, log_interval=1, eval_interval=1000)
    (tmp_path / 'tiny.json').write_text(json.dumps(cfg))
    argv = ['main', '--n', '4', '--out', str(tmp_path / 'toy'), '--no-progress', '--config', str(tmp_path / 'tiny.json'),
            '--run-dir', str(tmp_path / 'run'), '--from-scratch', '--train-steps', '2']
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert 'Listen:' in out and 'heldout_1.wav' in out
    run = tmp_path / 'run'
    assert (run / 'G_2.pth').exists() and (run / 'D_2.pth').exists() and (run / 'samples' / 'heldout.png').exists()
    wav, sr = sf.read(run / 'samples' / 'heldout_1.wav')
    assert sr == 22050 and len(wav) > 0
    used = json.loads((run / 'config.json').read_text())['data']['training_files']
    assert used == str(tmp_path / 'toy' / 'toy_audio_text_train_filelist.txt.cleaned')   # the corpus just built
    assert main(argv[:-1] + ['3']) == 0                                                      # resumes: one more step
    assert (run / 'G_3.pth').exists()


def test_main_job_finetunes_a_voice_resumes_and_speaks_before_and_after(tmp_path, capsys, monkeypatch):
    "The main job's default path at tiny scale: corpus → recover a tiny voice's posterior → 2 fine-tuning steps → samples before and after; a re-run resumes."
    import json
    import soundfile as sf
    from vits_nb import sleep
    from vits_nb.finetune import tiny_voice
    if not shutil.which('text2wave'): pytest.skip('festival (text2wave) is not installed')
    monkeypatch.setattr(sleep, 'RECOVERY_DEFAULTS', dict(sleep.RECOVERY_DEFAULTS, steps=3, dreams=2, sdp_steps=3,
                                                         batch_size=2, sdp_batch_size=2))
    monkeypatch.setattr('vits_nb.finetune.default_cache_dir', lambda: tmp_path / 'recovered')
    voice = tiny_voice(tmp_path / 'tiny.onnx')
    run = tmp_path / 'run'
    argv = ['main', '--n', '6', '--out', str(tmp_path / 'toy'), '--no-progress', '--no-voice', '--init-from', str(voice),
            '--run-dir', str(run), '--train-steps', '2', '--train-minutes', '0']
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert 'fine-tuning tiny.onnx' in out and 'to step 2' in out and 'F0 median' in out
    assert out.count('the voice overrides') == 1       # said once, though step 0 and the run are two calls
    assert (run / 'G_0.pth').is_file() and (run / 'G_2.pth').is_file() and (run / 'D_2.pth').is_file()
    assert (run / 'finetuned.pth').is_file() and 'blended 0.8 of the way from the voice' in out
    assert json.loads((run / 'samples_after' / 'metrics.json').read_text())['checkpoint'] == str(run / 'finetuned.pth')
    for d in ('samples_before', 'samples_after'):
        assert (run / d / 'heldout.png').is_file() and (run / d / 'metrics.json').is_file()
        wav, sr = sf.read(run / d / 'heldout_1.wav'); assert sr == 22050 and len(wav) > 0
    cfg = json.loads((run / 'config.json').read_text())
    assert cfg['data']['training_files'] == str(tmp_path / 'toy' / 'toy_audio_text_train_filelist.txt')   # raw text
    assert cfg['data']['text_cleaners'] == ['piper'] and cfg['model']['hidden_channels'] == 16      # the voice's
    speaker = json.loads((run / 'speaker_change.json').read_text())
    assert set(speaker) == {'before', 'after', 'teacher'} and speaker['teacher']['f0_median'] > 0
    hist = json.loads((run / 'finetune_history.json').read_text())
    assert hist['schedule']['name'] == 'acoustic' and hist['schedule']['train'] == ['enc_q', 'dec']
    assert (tmp_path / 'recovered' / 'recovered.json').is_file()           # the recovery is cached
    assert main(argv[:-3] + ['3', '--train-minutes', '0', '--blend', '1']) == 0   # resumes: one more step
    assert (run / 'G_3.pth').is_file()                                          # --blend 1: the trained weights speak
    assert json.loads((run / 'samples_after' / 'metrics.json').read_text())['checkpoint'] == str(run / 'G_3.pth')
    assert 'step 3' in capsys.readouterr().out
