#!/usr/bin/env bash
# One entry point for the two README commands:
#   bash scripts/dev.sh main   -> set up everything, then run the main job
#   bash scripts/dev.sh test   -> set up everything, then run every test (pytest + notebooks)
#   bash scripts/dev.sh setup  -> set up only
# Set-up is idempotent: a second run checks stamps and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
# System packages: espeak-ng (phonemizer backend), the offline teacher voices for the toy corpus
# (festival + HTS/diphone voices, flite), sox for inspecting audio, chromium for the real-browser test
# of the inference notebook (driven by Playwright for Python; no browser is ever downloaded).
APT_PKGS="espeak-ng festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k flite sox chromium"

log() { printf '\033[1m[vits_nb]\033[0m %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  log "need root to run: $*"; return 1; fi; }

setup_apt() {
  local missing=""
  for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  # python3 -m venv needs Debian's python3-venv when the system python is used
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then missing="$missing python3-venv"; fi
  if [ -n "$missing" ]; then
    log "installing system packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
}

setup_venv() {
  [ -x "$PY" ] || { log "creating $VENV"; python3 -m venv "$VENV"; }
  if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    # torch==2.13.0 is a local CPU build on the project's machines; elsewhere it comes from PyPI.
    # An existing torch (e.g. a CUDA build) in the venv is kept: this branch only runs without one.
    log "installing torch"
    "$PY" -m pip install -q "torch==2.13.0" || "$PY" -m pip install -q torch
  fi
  local stamp="$VENV/.vits_nb-installed" want
  want=$(cat settings.ini setup.py | md5sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing vits_nb (editable) with its dev extras"
    "$PY" -m pip install -q -e ".[dev]"
    echo "$want" > "$stamp"
  fi
}

setup() { setup_apt; setup_venv; }

cmd=${1:-main}; shift || true
case "$cmd" in
  setup) setup ;;
  main)  setup; exec "$VENV/bin/vits-nb" main "$@" ;;
  test)
    setup
    # two pytest workers on a 2-core machine, one torch thread each (no oversubscription)
    export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
    export MPLBACKEND=Agg PYTHONHASHSEED=0
    exec "$PY" -m pytest tests -n "${VITS_NB_TEST_WORKERS:-2}" -p no:cacheprovider "$@" ;;
  *) log "usage: bash scripts/dev.sh [setup|main|test]"; exit 2 ;;
esac
