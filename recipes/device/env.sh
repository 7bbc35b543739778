# Sourced by the device scripts: puts the carried wheels (if any) and this checkout on the Python
# path. The GPU machine's image has torch 2.11, numpy, scipy and the rest; `.whl`
# (recipes/device/kit.sh) holds what speechtok needs beyond it. Without that folder the
# interpreter must have them already (PYTHON=.venv/bin/python here, as the test runs it).
PY=${PYTHON:-python3}
if [ -d "${WHEELS:-.whl}" ]; then
    SITE=${SITE:-/tmp/site}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "${WHEELS:-.whl}"/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c "import speechtok.codecs, speechbrain, librosa, soundfile" || { echo "env.sh: imports fail" >&2; exit 1; }
