#!/usr/bin/env python3
"""Fill empty `text` in manifests with Whisper tiny.en transcripts (pseudo-labels), offline.

    python recipes/data/pseudo_label.py work_data/manifests/librispeech_train.csv work_data/manifests/crowd_train.csv

Writes `<name>_pl.csv` beside each manifest: every row kept, official text kept, empty text filled
with Whisper's transcript and marked `text_source=whisper-tiny.en` (official rows: `reference`).
Resumable: rows already in an existing `_pl.csv` are not transcribed again. Clips Whisper finds
nothing in keep an empty text. Whisper tiny.en is close to right on clean read speech and less so
on crowd clips (far microphones, noise; recipes/asr/README.md measures both), so recipes weigh
them as labels of lower trust, not as references.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from speechtok.data.audio import load_audio
from speechtok.data.manifest import read_manifest, write_manifest
from speechtok.eval.judges import whisper_judge


def pseudo_label(manifest: Path, save_every: int = 20) -> Path:
    out = manifest.with_name(manifest.stem + "_pl.csv")
    done = {u.ID: u for u in read_manifest(out)} if out.exists() else {}
    asr, utts, failed = whisper_judge(), read_manifest(manifest), []
    for k, u in enumerate(tqdm(utts, desc=manifest.name, unit="clip", disable=None)):
        if u.ID in done:
            continue
        if u.text.strip():
            u.extra["text_source"] = "reference"
        else:
            try:
                u.text = asr.transcribe(load_audio(u.path, 16000)[0].numpy(), 16000)
            except Exception as exc:  # a malformed clip is reported, not fatal
                failed.append(f"{u.path}: {exc}")
            u.extra["text_source"] = "whisper-tiny.en"
        done[u.ID] = u
        if (k + 1) % save_every == 0:
            write_manifest(out, done.values())
    write_manifest(out, done.values())
    for line in failed:
        print(f"pseudo_label: cannot transcribe {line}", file=sys.stderr)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("manifests", nargs="+", type=Path)
    for manifest in p.parse_args().manifests:
        print(f"wrote {pseudo_label(manifest)}")


if __name__ == "__main__":
    main()
