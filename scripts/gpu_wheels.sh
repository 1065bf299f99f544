#!/usr/bin/env bash
# What benchmarks/gpu_proof.py needs on the GPU machine, fetched here (PyPI reachable); size check.
#
# The GPU machine's python3 is 3.12 with torch, onnxruntime and numpy (its image also lists numba,
# scipy, matplotlib, tensorboard, tqdm, pillow, protobuf: KINDS.md). `import vits_nb.train` needs
# numpy, torch, soundfile and numba; train() adds tqdm, and tensorboard + matplotlib + pillow for
# its event files; the mel filterbank calls librosa. gpu_proof.py installs a carried wheel only for
# a module that does not import there, and shims numba (the kernel as plain Python) and librosa
# (its own Slaney filterbank) when they are missing, so the carried set stays small: numba +
# llvmlite alone are 61 MiB of wheels and librosa needs scipy (34 MiB), so they cannot travel
# within the 64 MiB tree limit and are not carried.
#
#   bash scripts/gpu_wheels.sh                   # wheels, assets (.cache/gpu_*), size check
#   bash scripts/gpu_wheels.sh --wheels-only     # no assets
#   bash scripts/gpu_wheels.sh --no-tensorboard  # without tensorboard, protobuf, absl (5.7 MiB)
#   bash scripts/gpu_wheels.sh --check           # only the size check
#
# Assets (gpu_proof.py --prepare-assets): the shipped voice's inference weights in fp16 (its .onnx
# is 60 MiB) with the phoneme ids of three sentences, and a toy-corpus subset as 16-bit WAV
# (festival, the default teacher).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WHEELS=.cache/gpu_wheels
ASSETS=.cache/gpu_assets
LIMIT_MIB=64
MARGIN_MIB=3          # room for files other sessions leave untracked in the tree

wheels=1 assets=1 tb=1
for a in "$@"; do
  case $a in
    --wheels-only) assets=0 ;;
    --no-tensorboard) tb=0 ;;
    --check) wheels=0 assets=0 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_wheels.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

# the versions tested here (the dev venv); --no-deps: each needed dependency is named
CORE="soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 tqdm==4.70.1"
TB="tensorboard==2.21.0 protobuf==7.36.2 absl-py==2.5.1"   # what SummaryWriter imports

if [ $wheels = 1 ]; then
  rm -rf "$WHEELS"; mkdir -p "$WHEELS"
  pkgs=$CORE; [ $tb = 1 ] && pkgs="$pkgs $TB"
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$WHEELS" $pkgs
  echo "wheels in $WHEELS:"
  ls -l "$WHEELS" | awk 'NR > 1 {printf "  %8.2f MiB  %s\n", $5 / 2^20, $9}'
fi

if [ $assets = 1 ]; then
  "$PY" benchmarks/gpu_proof.py --prepare-assets --assets "$ASSETS"
fi

# what a `run` call sends: tracked + untracked-not-ignored files, plus the carried folders
tree=$(git ls-files -z -co --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null \
       | awk '{s += $1} END {print s + 0}')
size() { if [ -d "$1" ]; then du -sb "$1" | cut -f1; else echo 0; fi; }
w=$(size "$WHEELS"); v=$(size "$ASSETS/voice"); t=$(size "$ASSETS/toy")
total=$((tree + w + v + t))
mib() { awk -v b="$1" 'BEGIN {printf "%.2f", b / 2^20}'; }
echo "travels with a run: tree $(mib "$tree") + wheels $(mib "$w") + voice $(mib "$v")" \
     "+ toy audio $(mib "$t")" \
     "= $(mib $total) MiB (limit $LIMIT_MIB MiB, margin $MARGIN_MIB)"
if [ "$total" -gt $(((LIMIT_MIB - MARGIN_MIB) * 1048576)) ]; then
  echo "too big: --no-tensorboard, or fewer toy sentences (gpu_proof.py --prepare-assets" \
       "--toy-sentences N)" >&2
  exit 1
fi
