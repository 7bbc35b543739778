"""Manifests for the real recordings in ../shared/data (read in place, never copied).

Each corpus keeps its own train/dev split (cathy: by prompt, LibriSpeech: by speaker, noise: by
recording), so dev material never leaks into training. Durations come from FLAC headers.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from speechtok.data.audio import AudioError, duration_seconds
from speechtok.data.manifest import Utterance
from speechtok.errors import cannot

SPLITS = ("train", "dev")


def read_metadata(root: str | Path, required: tuple[str, ...]) -> list[dict]:
    """Rows of `root/metadata.tsv`; text may contain quotes, so no CSV quoting is applied."""
    path = Path(root) / "metadata.tsv"
    if not path.is_file():
        problem = f"file not found (is the shared data at {Path(root).parent}?)"
        raise FileNotFoundError(cannot("read corpus metadata", path, problem))
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                cannot("read corpus metadata", path, f"missing columns {missing} (has {reader.fieldnames})")
            )
        rows = list(reader)
    for i, row in enumerate(rows, start=2):
        if row["split"] not in SPLITS:
            raise ValueError(
                cannot("read corpus metadata", path, f"line {i}: split {row['split']!r} is not one of {SPLITS}")
            )
    return rows


def _utterance(root: Path, row: dict, prefix: str, speaker: str, text: str = "", **extra) -> Utterance | None:
    """The row as an Utterance; None, with a line on stderr naming the file, if its audio is unreadable
    (one malformed clip should not stop a corpus of thousands). A listed file that is missing is an error."""
    path = (root / row["path"]).resolve()
    if not path.is_file():
        raise AudioError(cannot("read audio", path, f"listed in {root / 'metadata.tsv'} but missing"))
    try:
        duration = duration_seconds(path)
    except AudioError as exc:
        print(f"{exc}; skipped", file=sys.stderr)
        return None
    return Utterance(
        ID=f"{prefix}_{path.stem}",
        path=str(path),
        duration=duration,
        speaker=speaker,
        text=text,
        split=row["split"],
        extra=extra,
    )


def _present(utts) -> list[Utterance]:
    return [u for u in utts if u is not None]


def cathy_manifest(root: str | Path) -> list[Utterance]:
    """One US-English female speaker reading CMU ARCTIC prompts (dev = prompts arctic_b0440+)."""
    root = Path(root)
    rows = read_metadata(root, ("path", "prompt_id", "split", "text"))
    return _present(_utterance(root, r, "cathy", "cathy", r["text"], prompt_id=r["prompt_id"], sex="F") for r in rows)


def _librispeech_sexes(root: Path) -> dict[str, str]:
    """reader_id -> 'F'/'M' from LibriSpeech's SPEAKERS.TXT, if it is shipped with the audio."""
    found = next((p for p in (root / "SPEAKERS.TXT", root / "audio" / "SPEAKERS.TXT") if p.is_file()), None)
    if found is None:
        return {}
    sexes = {}
    for line in found.read_text(encoding="utf-8").splitlines():
        fields = [f.strip() for f in line.split("|")]
        if line.startswith(";") or len(fields) < 2:
            continue
        sexes[fields[0]] = fields[1]
    return sexes


def librispeech_manifest(root: str | Path) -> list[Utterance]:
    """LibriSpeech train-clean-100 subset, one utterance per speaker (dev = 25 held-out speakers)."""
    root = Path(root)
    rows = read_metadata(root, ("path", "speaker", "split", "text"))
    sexes = _librispeech_sexes(root)
    return _present(_utterance(root, r, "ls", r["speaker"], r["text"], sex=sexes.get(r["speaker"], "")) for r in rows)


def noise_manifest(root: str | Path) -> list[Utterance]:
    """Real background-noise recordings (dev = running_tap)."""
    root = Path(root)
    rows = read_metadata(root, ("path", "split"))
    return _present(_utterance(root, r, "noise", "", license=r.get("license", "")) for r in rows)


def crowd_manifest(root: str | Path) -> list[Utterance]:
    """Many real voices in short clips (wake words, commands, interviews; dev = unseen speakers).

    Sources without speaker ids (picovoice, mycroft) get one pseudo-speaker per clip, so that a
    speaker-balanced sampler treats each anonymous clip as its own voice.
    """
    root = Path(root)
    rows = read_metadata(root, ("path", "source", "speaker", "split", "text"))
    return _present(
        _utterance(
            root, r, "crowd", f"{r['source']}_{r['speaker'] or Path(r['path']).stem}", r["text"], source=r["source"]
        )
        for r in rows
    )


def ambient_noise_manifest(root: str | Path) -> list[Utterance]:
    """Real ambient recordings in 11 kinds (`category`); dev = every sixth recording."""
    root = Path(root)
    rows = read_metadata(root, ("path", "split", "category"))
    return _present(
        _utterance(root, r, "ambient", "", category=r["category"], source=r.get("source", "")) for r in rows
    )


def rir_manifest(root: str | Path) -> list[Utterance]:
    """Measured room impulse responses (first channel, peak-normalised)."""
    root = Path(root)
    rows = read_metadata(root, ("path", "split"))
    return _present(_utterance(root, r, "rir", "", source=r.get("source", "")) for r in rows)


def split(utts: list[Utterance], name: str) -> list[Utterance]:
    return [u for u in utts if u.split == name]


def shared_manifests(shared_data: str | Path) -> dict[str, list[Utterance]]:
    """Every shared corpus by name (cathy, librispeech, crowd, noise, noise_ambient, rir)."""
    shared_data = Path(shared_data)
    return {
        "cathy": cathy_manifest(shared_data / "speech" / "cathy"),
        "librispeech": librispeech_manifest(shared_data / "speech" / "librispeech_tc100"),
        "crowd": crowd_manifest(shared_data / "speech" / "crowd"),
        "noise": noise_manifest(shared_data / "noise"),
        "noise_ambient": ambient_noise_manifest(shared_data / "noise_ambient"),
        "rir": rir_manifest(shared_data / "rir"),
    }
