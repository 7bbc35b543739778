#!/usr/bin/env python3
"""Prepare speechtok's data for one task; the YAML says which (`task`) and how.

    python recipes/data/prepare.py recipes/data/hparams/manifests.yaml   # codecs: real speech and noise manifests
    python recipes/data/prepare.py recipes/data/hparams/synth.yaml       # TTS: synthetic voices
    python recipes/data/prepare.py recipes/data/hparams/noisy.yaml       # enhancement: noisy/clean pairs

Any key can be overridden on the command line (--key value, e.g. --hours 1). Relative paths
are resolved against the repository root. The work is in `speechtok.data.prepare`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechtok.data.prepare import prepare, print_summary

REPO = Path(__file__).resolve().parents[2]


def repo_path(p: str | Path) -> Path:
    p = Path(p)
    return p if p.is_absolute() else (REPO / p).resolve()


def main(argv: list[str]) -> dict:
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as f:
        hp = load_hyperpyyaml(f, overrides)
    for key in ("output_folder", "shared_data"):  # the noisy task reads no shared data
        if key in hp:
            hp[key] = repo_path(hp[key])
    print(f"== {hp['task']}", flush=True)
    summary = prepare(hp, progress=not run_opts["noprogressbar"])
    print_summary(summary)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
