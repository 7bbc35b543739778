"""The one manifest format: a CSV that SpeechBrain's `DynamicItemDataset.from_csv` reads as is.

Columns: ID, path, duration, speaker, text, phonemes, split (plus optional extras such as
`clean_path` and `snr_db` for enhancement pairs). SpeechBrain requires the `ID` column and
parses `duration` as float. Paths are written absolute; a relative path (as in a portable
training pack) is read relative to the manifest's own folder.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from speechtok.errors import cannot

COLUMNS = ["ID", "path", "duration", "speaker", "text", "phonemes", "split"]


@dataclass
class Utterance:
    ID: str
    path: str
    duration: float
    speaker: str = ""
    text: str = ""
    phonemes: str = ""
    split: str = "train"
    extra: dict = field(default_factory=dict)

    def row(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        d["duration"] = f"{self.duration:.4f}"
        d.update({k: str(v) for k, v in extra.items()})
        return d


def write_manifest(path: str | Path, utts: Iterable[Utterance]) -> Path:
    """Write utterances (sorted by ID, so output is deterministic); IDs must be unique."""
    utts = sorted(utts, key=lambda u: u.ID)
    ids = [u.ID for u in utts]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(cannot("write manifest", path, f"duplicate utterance IDs {dup}"))
    extra_cols = sorted({k for u in utts for k in u.extra})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS + extra_cols)
        writer.writeheader()
        for u in utts:
            writer.writerow(u.row())
    tmp.replace(path)
    return path


def read_manifest(path: str | Path) -> list[Utterance]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(cannot("read manifest", path, "file does not exist"))
    known = {f.name for f in fields(Utterance)} - {"extra"}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("ID", "path", "duration") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(cannot("read manifest", path, f"required columns {missing} are missing"))
        out = []
        for row in reader:
            extra = {k: v for k, v in row.items() if k not in known}
            base = {k: v for k, v in row.items() if k in known}
            base["duration"] = float(base["duration"])
            if not Path(base["path"]).is_absolute():
                base["path"] = str((path.parent / base["path"]).resolve())
            out.append(Utterance(**base, extra=extra))
    return out


def total_hours(utts: Iterable[Utterance]) -> float:
    return sum(u.duration for u in utts) / 3600.0
