#!/usr/bin/env bash
# One-command setup: system tools (when root), .venv, speechtok in editable mode with test extras.
# Idempotent: a second run checks stamps and returns quickly.
set -euo pipefail
cd "$(dirname "$0")"

APT_PKGS=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox chromium)
PYTHON=${PYTHON:-python3.11}
EXTRAS=${SPEECHTOK_EXTRAS:-test,eval,demo,semantic}

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: not root; please install: ${missing[*]} (synthetic-corpus recipes need them)" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.speechtok-installed
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)-$EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing speechtok[$EXTRAS] into .venv (first run downloads torch, a few GB)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi
echo "setup: ready (.venv/bin/speechtok)"
