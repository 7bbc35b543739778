#!/usr/bin/env bash
# Builds, here, what the GPU machine needs beside the checkout (both folders are git-ignored):
#   .whl   wheels (CPython 3.12, x86-64) of speechtok's dependencies that the device image lacks
#   .pack  the speech and noise manifests' audio as Ogg/Opus, with relative manifests (pack.py)
# and checks that the checkout plus both stay within the 64 MiB that may travel. To make room it
# first offloads the bundled models the enhancer's run does not read (offload.sh): after the
# device calls, `bash recipes/device/offload.sh --restore`.
# Needs ./setup.sh and the data of recipes/data/hparams/{manifests,synth}.yaml (recipes/data/prepare.py, `--hours 1`).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
# speechtok's dependencies and theirs, less what the image has (pesq: evaluation only, sdist;
# ruamel.yaml.clib: ruamel.yaml runs without it), at the versions installed here
NAMES="audioread cffi decorator einx encodec frozendict hyperpyyaml librosa loguru platformdirs pooch
       pycparser pystoi ruamel.yaml soundfile soxr speechbrain torch-einops-utils vector-quantize-pytorch"
bash recipes/device/offload.sh
mkdir -p .whl
for name in $NAMES; do
    spec="$name==$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$spec" 2>/dev/null \
    || "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl "$spec"  # pure-Python sdists (encodec)
done
"$PY" recipes/data/pack.py --manifests work_data/manifests --out .pack "$@"
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}')
carry=$(find .whl .pack -type f -printf '%s\n' | awk '{s += $1} END {print s}')
awk -v t="$tree" -v c="$carry" 'BEGIN {
    printf "checkout %.1f MiB + .whl and .pack %.1f MiB = %.1f of 64 MiB\n", t / 2^20, c / 2^20, (t + c) / 2^20
    exit (t + c > 64 * 2^20) }' || { echo "kit.sh: too large to travel: rm -rf .pack and pack again at a higher --compression-level (e.g. 0.92)" >&2; exit 1; }
