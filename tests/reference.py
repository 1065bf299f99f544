"""Readers for the official reference tables copied into tests/fixtures (key/shape tables, parameter counts)."""
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / 'fixtures'


def rows(name, prefix=''):
    "`[(key without prefix, shape as a list)]` of a `state_dict_*.tsv` table, in the official order."
    out = []
    for line in (FIXTURES / name).read_text().splitlines():
        if not line or line.startswith('#'): continue
        key, shape, _ = line.split('\t')
        if key.startswith(prefix): out.append((key[len(prefix):], [int(d) for d in shape.strip('[]').split(',') if d.strip()]))
    return out


def shapes(name, prefix=''):
    "The same rows as a `{key: shape}` dict."
    return dict(rows(name, prefix))


def param_count(model, sub):
    "`(n_params, n_params_without_weight_g)` of `sub` in `model` from param_counts.tsv."
    for line in (FIXTURES / 'param_counts.tsv').read_text().splitlines():
        f = line.split('\t')
        if f[0] == model and f[1] == sub: return int(f[2]), int(f[3])
    raise KeyError((model, sub))


def layout(obj):
    "`[(key, shape as a list)]` of a module or state dict, in order."
    sd = obj.state_dict() if hasattr(obj, 'state_dict') else obj
    return [(k, list(v.shape)) for k, v in sd.items()]
