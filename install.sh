#!/usr/bin/env bash
# fxlens set-up, one command on a fresh Debian machine:
#   apt packages (fluidsynth, soundfonts, real recordings, training soundtracks) -> .venv -> torch -> torchlpc (no build isolation)
#   -> fxlens with its extras -> the main job on shipped defaults (`fxlens demo`, `fxlens analyze` on its output,
#   then `fxlens match` of its dry clip to its wet one).
# Idempotent: a second run only checks. `bash install.sh --no-run` skips the main job (test.sh uses that).
set -euo pipefail
cd "$(dirname "$0")"
RUN_MAIN=1
[ "${1:-}" = "--no-run" ] && RUN_MAIN=0

# fluidsynth + soundfonts (rendering), the real recordings of the benchmarks, game soundtracks to train on, and
# jemalloc (fxlens runs under it when it is there: 1.5x less CPU rendering effect batches, see fxlens/launch.py)
APT_PACKAGES="fluidsynth fluid-soundfont-gm musescore-general-soundfont-small timgm6mb-soundfont
  avldrums.lv2-soundfont fretsonfire-songs-muldjord fretsonfire-songs-sectoid wesnoth-1.16-music
  hedgewars-data supertux-data warzone2100-music libjemalloc2"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[fxlens] apt-get install$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[fxlens] creating .venv"
  "$PY" -m venv .venv || { echo "[fxlens] python3 -m venv failed: apt-get install python3-venv" >&2; exit 1; }
fi
# pip, without the mirror-configuration warnings some machines print for every package ("Location ... ignored")
pip_install() { .venv/bin/pip install -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
# torch: the CPU wheel on disk when there is one (no multi-GB CUDA download), a range otherwise.
if .venv/bin/python -c "import torch" 2>/dev/null; then
  :
elif compgen -G "${PIP_FIND_LINKS:-/opt/wheels}/torch-2.13.0*.whl" >/dev/null; then
  echo "[fxlens] pip install torch==2.13.0 (local wheel)"; pip_install torch==2.13.0
else
  echo "[fxlens] pip install torch>=2.4"; pip_install "torch>=2.4"
fi
# torchlpc is a source distribution with a C++ extension: build it against the torch above, not a fresh one.
if ! .venv/bin/python -c "import torchlpc" 2>/dev/null; then
  echo "[fxlens] pip install --no-build-isolation torchlpc (builds a C++ extension, about a minute)"
  pip_install setuptools wheel numpy numba
  pip_install --no-build-isolation "torchlpc>=0.7"
fi
echo "[fxlens] pip install -e .[peers,test,text,bench]"
pip_install -e ".[peers,test,text,bench]"
.venv/bin/python -c "import fxlens, torchcomp, torchlpc, soundfile, soxr" \
  || { echo "[fxlens] installation incomplete" >&2; exit 1; }
echo "[fxlens] installed: $(.venv/bin/fxlens --help >/dev/null && echo .venv/bin/fxlens)"

if [ "$RUN_MAIN" = 1 ]; then
  echo "[fxlens] main job: render a clip with a random chain (fxlens demo), hear its effects (fxlens analyze),"
  echo "[fxlens] then put the wet clip's sound on the dry one (fxlens match)"
  .venv/bin/fxlens demo --out-dir fxlens-demo
  .venv/bin/fxlens analyze fxlens-demo/wet.wav --json fxlens-demo/analysis.json --plot fxlens-demo/analysis.png \
    --preset fxlens-demo/analysis.preset.json
  .venv/bin/fxlens match fxlens-demo/dry.wav fxlens-demo/wet.wav fxlens-demo/matched.wav
fi
