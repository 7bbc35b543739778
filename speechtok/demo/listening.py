"""Listening tests without the web stack: YAML test definitions, cached stimuli, per-listener
randomisation, a SQLite rating store that is safe with concurrent listeners, and statistics.

A test is items x systems. MUSHRA tests add a hidden reference (`reference`, the unprocessed
item) and a 3.5 kHz low-pass anchor (`anchor35`) to the systems; every trial shows the
labelled reference plus all systems in an order shuffled per listener and item, each rated
0-100. A/B tests present every pair of systems per item, sides shuffled; the preferred
system scores 100, the other 0, 50 each for "no preference", so preference rates share the
MUSHRA statistics. Stimuli are rendered once and cached under a name derived from everything
that produced them (item file, system spec, codec config and weights), which also hides the
system's identity from the listener's browser.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import re
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path

import numpy as np
import scipy.signal
import scipy.stats
import soundfile as sf
import torch
import yaml
from matplotlib.figure import Figure

from speechtok.codecs import PRETRAINED_DIR, Codec, CodecError, load_codec
from speechtok.codecs.renderers import SwitchableRenderer
from speechtok.data.audio import AudioError, check_waveform, loudness_normalize, resample, save_audio
from speechtok.errors import cannot
from speechtok.tokens import codec_hash

REFERENCE, ANCHOR = "reference", "anchor35"
LABELLED = "labelled-reference"  # key of the reference shown with its name in MUSHRA trials
ANCHOR_HZ = 3500.0
MODES = ("mushra", "ab")
AB_CHOICES = {"A": (100.0, 0.0), "B": (0.0, 100.0), "No preference": (50.0, 50.0)}
_NAME = re.compile(r"^[\w.+-]{1,64}$")
_LISTENER = re.compile(r"^[\w.@+-]{1,64}$")


class ListeningTestError(ValueError):
    """Bad test definition, listener id or rating; the message says which and where."""


# --- audio ------------------------------------------------------------------------------
def load_clip(path: str | Path, max_seconds: float | None = None, name: str | None = None):
    """Mono float32 [1, T] of at most `max_seconds` (read from the start, the rest never
    decoded), its sample rate and the full duration in seconds. Errors name `name` or the file."""
    label = name or str(path)
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise AudioError(cannot("read audio", label, "the file is empty (0 bytes)"))
    try:
        info = sf.info(str(path))
        stop = None if max_seconds is None else round(max_seconds * info.samplerate)
        data, sr = sf.read(str(path), dtype="float32", always_2d=True, stop=stop)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        detail = str(exc).replace(f"Error opening {str(path)!r}: ", "").rstrip(".")
        raise AudioError(
            cannot("read audio", label, f"not a readable audio file ({detail}); use WAV, FLAC, OGG or MP3")
        ) from exc
    wav = torch.from_numpy(np.ascontiguousarray(data.T)).mean(dim=0, keepdim=True)
    check_waveform(wav, label, "read audio")
    return wav, sr, info.frames / sr


def lowpass(wav: torch.Tensor, sr: int, cutoff_hz: float) -> torch.Tensor:
    """Zero-phase 8th-order Butterworth low-pass (the MUSHRA anchor is one at 3.5 kHz)."""
    sos = scipy.signal.butter(8, cutoff_hz, btype="low", fs=sr, output="sos")
    return torch.from_numpy(scipy.signal.sosfiltfilt(sos, wav.double().numpy(), axis=-1).copy()).float()


# --- codecs at a given setting ------------------------------------------------------------
_codecs: dict[tuple, Codec] = {}
_codecs_lock = threading.Lock()


def get_codec(name: str, decoder: str | None = None) -> Codec:
    """One shared, loaded codec per (name, decoder): its decoder never changes under a concurrent
    caller because each is its own instance; the number of codebooks is a per-call argument
    (`run_codec`)."""
    key = (name, decoder)
    with _codecs_lock:
        if key not in _codecs:
            codec = load_codec(name)
            if decoder is not None:
                if decoder not in ("vocoder", "griffinlim") or not isinstance(codec, SwitchableRenderer):
                    raise CodecError(f"codec '{name}' has no decoder '{decoder}'")
                if decoder not in codec.renderer_choices():
                    raise CodecError(f"codec '{name}' has no trained vocoder; use decoder: griffinlim")
                codec.set_renderer(decoder)
            _codecs[key] = codec
        return _codecs[key]


def codebook_options(codec: Codec) -> list[int]:
    """Codebook counts worth offering: powers of two up to the maximum, and the maximum."""
    k = codec.max_codebooks
    if not codec.variable_bitrate:
        return [k]
    return sorted({2**i for i in range(k.bit_length()) if 2**i <= k} | {k})


def run_codec(codec: Codec, wav: torch.Tensor, sr: int, n_codebooks: int | None = None) -> torch.Tensor:
    """Encode (the first `n_codebooks` codebooks; None: all) and decode mono [1, T] at `sr`; the
    result is [1, T] at `sr` again."""
    x = resample(wav, sr, codec.sample_rate)
    y = codec.decode(codec.encode(x.unsqueeze(0).to(codec.device), n_codebooks=n_codebooks))[0].float().cpu()
    y = torch.nn.functional.pad(y, (0, max(0, x.shape[-1] - y.shape[-1])))[..., : x.shape[-1]]
    y = resample(y, codec.sample_rate, sr)
    return torch.nn.functional.pad(y, (0, max(0, wav.shape[-1] - y.shape[-1])))[..., : wav.shape[-1]]


def _folder_fingerprint(name: str) -> list:
    """Sizes and mtimes of a codec folder's files, so retrained weights give new stimuli."""
    folder = Path(name) if (Path(name) / "config.json").exists() else PRETRAINED_DIR / name
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.glob("*") if p.is_file())


# --- test definitions ---------------------------------------------------------------------
@dataclass(frozen=True)
class System:
    """One condition: `kind` is reference | anchor | original | lowpass | codec | files."""

    name: str
    kind: str
    codec: str | None = None
    decoder: str | None = None
    n_codebooks: int | None = None
    cutoff_hz: float | None = None
    files: str | None = None

    def spec(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Item:
    id: str
    path: Path


@dataclass
class TestSpec:
    name: str
    mode: str
    items: list[Item]
    systems: list[System]  # the systems under test, as written in the file
    title: str = ""
    instructions: str = ""
    sample_rate: int = 16000
    max_seconds: float = 10.0
    normalize_db: float | None = None
    source: Path | None = None

    @property
    def conditions(self) -> list[System]:
        """Everything rated: MUSHRA adds the hidden reference and the 3.5 kHz anchor."""
        if self.mode == "ab":
            return list(self.systems)
        return [System(REFERENCE, "reference"), System(ANCHOR, "lowpass", cutoff_hz=ANCHOR_HZ), *self.systems]


_TOP_KEYS = {"name", "mode", "title", "instructions", "sample_rate", "max_seconds", "normalize_db", "items", "systems"}
_SYSTEM_KEYS = {"name", "codec", "decoder", "n_codebooks", "bitrate", "lowpass_hz", "original", "files"}


def load_test(path: str | Path) -> TestSpec:
    """Parse and check a test YAML; item and `files` paths are relative to the YAML file."""
    path = Path(path)

    def fail(msg: str) -> ListeningTestError:
        return ListeningTestError(cannot("load listening test", path, msg))

    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise fail(f"cannot read test definition ({exc})") from exc
    if not isinstance(raw, dict):
        raise fail("expected a mapping with name, mode, items and systems")
    if unknown := set(raw) - _TOP_KEYS:
        raise fail(f"unknown keys {sorted(unknown)} (allowed: {sorted(_TOP_KEYS)})")
    name, mode = str(raw.get("name", "")), raw.get("mode", "mushra")
    if not _NAME.match(name):
        raise fail(f"'name' must be 1-64 letters, digits or . _ + -, got {name!r}")
    if mode not in MODES:
        raise fail(f"'mode' must be one of {MODES}, got {mode!r}")
    sr = raw.get("sample_rate", 16000)
    if not isinstance(sr, int) or sr < 8000:
        raise fail(f"'sample_rate' must be an integer >= 8000, got {sr!r}")
    max_seconds = float(raw.get("max_seconds", 10.0))
    if max_seconds <= 0:
        raise fail("'max_seconds' must be positive")

    items = []
    for i, entry in enumerate(raw.get("items") or []):
        entry = {"path": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or "path" not in entry:
            raise fail(f"items[{i}]: expected a path or a mapping with 'path' (and optional 'id')")
        item_path = (path.parent / str(entry["path"])).resolve()
        item_id = str(entry.get("id", item_path.stem))
        if not _NAME.match(item_id):
            raise fail(f"items[{i}]: id {item_id!r} must be 1-64 letters, digits or . _ + -")
        if not item_path.is_file():
            raise fail(f"items[{i}]: audio file {item_path} does not exist")
        items.append(Item(item_id, item_path))
    if not items:
        raise fail("no items")
    if len({it.id for it in items}) != len(items):
        raise fail("item ids must be unique")

    systems = [_parse_system(s, i, path, sr, fail) for i, s in enumerate(raw.get("systems") or [])]
    if len(systems) < (1 if mode == "mushra" else 2):
        raise fail(f"a {mode} test needs at least {1 if mode == 'mushra' else 2} systems")
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise fail(f"system names must be unique, got {names}")
    if mode == "mushra" and {REFERENCE, ANCHOR, LABELLED} & set(names):
        raise fail(f"'{REFERENCE}', '{ANCHOR}' and '{LABELLED}' are added by MUSHRA tests; rename those systems")
    nd = raw.get("normalize_db")
    return TestSpec(
        name,
        mode,
        items,
        systems,
        title=str(raw.get("title", name)),
        instructions=str(raw.get("instructions", "")),
        sample_rate=sr,
        max_seconds=max_seconds,
        normalize_db=None if nd is None else float(nd),
        source=path,
    )


def _parse_system(entry, i: int, path: Path, sr: int, fail) -> System:
    if not isinstance(entry, dict) or "name" not in entry:
        raise fail(f"systems[{i}]: expected a mapping with 'name'")
    if unknown := set(entry) - _SYSTEM_KEYS:
        raise fail(f"systems[{i}]: unknown keys {sorted(unknown)} (allowed: {sorted(_SYSTEM_KEYS)})")
    name = str(entry["name"])
    if not _NAME.match(name):
        raise fail(f"systems[{i}]: name {name!r} must be 1-64 letters, digits or . _ + -")
    kinds = [k for k in ("codec", "lowpass_hz", "original", "files") if entry.get(k) not in (None, False)]
    if len(kinds) != 1:
        raise fail(f"systems[{i}] '{name}': give exactly one of codec, lowpass_hz, original: true, files")
    kind = kinds[0]
    if kind == "original":
        return System(name, "original")
    if kind == "lowpass_hz":
        cutoff = float(entry["lowpass_hz"])
        if not 0 < cutoff < sr / 2:
            raise fail(f"systems[{i}] '{name}': lowpass_hz must lie in (0, {sr / 2:g})")
        return System(name, "lowpass", cutoff_hz=cutoff)
    if kind == "files":
        return System(name, "files", files=str((path.parent / str(entry["files"])).resolve()))
    try:
        codec = load_codec(entry["codec"])
        n = entry.get("n_codebooks")
        if "bitrate" in entry:
            n = _codebooks_for_bitrate(codec, float(entry["bitrate"]))
        get_codec(str(entry["codec"]), entry.get("decoder")).check_n_codebooks(n)
    except CodecError as exc:
        raise fail(f"systems[{i}] '{name}': {exc}") from exc
    return System(name, "codec", codec=str(entry["codec"]), decoder=entry.get("decoder"), n_codebooks=n)


def _codebooks_for_bitrate(codec: Codec, bitrate: float) -> int:
    ks = range(1, codec.max_codebooks + 1) if codec.variable_bitrate else [codec.max_codebooks]
    options = {k: codec.bitrate_at(k) for k in ks}
    best = min(options, key=lambda k: abs(options[k] - bitrate))
    if abs(options[best] - bitrate) > 0.01 * bitrate:
        raise CodecError(
            f"codec '{codec.name}' has no setting at {bitrate:g} bit/s "
            f"(available: {', '.join(f'{b:g}' for b in sorted(set(options.values())))})"
        )
    return best


def find_tests(paths: Iterable[str | Path]) -> list[TestSpec]:
    """Load test YAMLs (files, or folders of *.yaml); test names must be unique."""
    files = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.yaml")) if p.is_dir() else [p]
    tests = [load_test(f) for f in files]
    names = [t.name for t in tests]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise ListeningTestError(f"several test files define the test name(s) {dup}")
    return tests


# --- stimuli ----------------------------------------------------------------------------
_prepare_locks: dict[str, threading.Lock] = {}


def stimulus_key(spec: TestSpec, item: Item, system: System) -> str:
    st = item.path.stat()
    ident = {
        "v": 1,
        "item": [str(item.path), st.st_size, st.st_mtime_ns],
        "sr": spec.sample_rate,
        "max_seconds": spec.max_seconds,
        "normalize_db": spec.normalize_db,
        "system": system.spec(),
    }
    if system.kind == "codec":
        codec = get_codec(system.codec, system.decoder)
        ident["codec"] = [codec_hash(codec), _folder_fingerprint(system.codec)]
    if system.kind == "files":
        f = Path(system.files.format(item=item.id))
        ident["file"] = [f.stat().st_size, f.stat().st_mtime_ns] if f.exists() else None
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def render(spec: TestSpec, item: Item, system: System) -> torch.Tensor:
    """The stimulus [1, T] at the test's sample rate, cut to `max_seconds`."""
    wav, sr, _ = load_clip(item.path, spec.max_seconds)
    wav = resample(wav, sr, spec.sample_rate)
    if system.kind == "lowpass":
        out = lowpass(wav, spec.sample_rate, system.cutoff_hz)
    elif system.kind == "codec":
        out = run_codec(get_codec(system.codec, system.decoder), wav, spec.sample_rate, system.n_codebooks)
    elif system.kind == "files":
        f = Path(system.files.format(item=item.id))
        if not f.is_file():
            raise ListeningTestError(
                cannot(
                    "render listening test", spec.source, f"system '{system.name}' has no file {f} for item '{item.id}'"
                )
            )
        out, fsr, _ = load_clip(f, spec.max_seconds)
        out = resample(out, fsr, spec.sample_rate)
    else:  # reference, original
        out = wav
    if spec.normalize_db is not None:
        out = loudness_normalize(out, spec.normalize_db)
    return out


def prepare_stimuli(spec: TestSpec, cache_dir: str | Path) -> dict[tuple[str, str], Path]:
    """Render (or find cached) every item x condition; returns (item, system) -> audio path
    (plus (item, LABELLED) for MUSHRA).

    Files are written to a temporary name and renamed, so another process preparing the same
    test at the same time never sees a half-written file.
    """
    folder = Path(cache_dir) / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    # The labelled MUSHRA reference is a FLAC copy: same audio, different bytes, so the web
    # server's content-hashed URL does not give away which sample is the hidden reference.
    labelled = [System(LABELLED, "reference")] if spec.mode == "mushra" else []
    with _prepare_locks.setdefault(spec.name, threading.Lock()):
        out = {}
        for item in spec.items:
            for system in spec.conditions + labelled:
                suffix = ".flac" if system.name == LABELLED else ".wav"
                dest = folder / f"{stimulus_key(spec, item, system)}{suffix}"
                if not dest.exists():
                    fd, tmp = tempfile.mkstemp(suffix=suffix, dir=folder)
                    os.close(fd)
                    try:
                        save_audio(tmp, render(spec, item, system), spec.sample_rate)
                        os.replace(tmp, dest)
                    finally:
                        Path(tmp).unlink(missing_ok=True)
                out[(item.id, system.name)] = dest
        return out


# --- trials -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trial:
    """One screen: `systems` in presentation order (A/B: left, right); `key` names the
    comparison (MUSHRA: 'mushra'; A/B: the pair, sorted) so either side order is one trial."""

    item: str
    key: str
    systems: tuple[str, ...]


def check_listener(listener: str) -> str:
    listener = (listener or "").strip()
    if not _LISTENER.match(listener):
        raise ListeningTestError("listener id: use 1-64 letters, digits or . _ @ + - (no spaces)")
    return listener


def plan_trials(spec: TestSpec, listener: str) -> list[Trial]:
    """All trials for a listener, in that listener's order: items (and A/B pairs) shuffled by
    (test, listener), systems within a MUSHRA trial by (test, listener, item). Seeded from
    strings, so the same listener always gets the same order, on any machine."""
    listener = check_listener(listener)
    rng = random.Random(f"{spec.name}\0{listener}")
    names = [s.name for s in spec.conditions]
    trials = []
    for item in spec.items:
        if spec.mode == "mushra":
            order = list(names)
            random.Random(f"{spec.name}\0{listener}\0{item.id}").shuffle(order)
            trials.append(Trial(item.id, "mushra", tuple(order)))
        else:
            for a, b in combinations(names, 2):
                pair = (a, b) if rng.random() < 0.5 else (b, a)
                trials.append(Trial(item.id, "|".join(sorted(pair)), pair))
    rng.shuffle(trials)
    return trials


def trial_scores(spec: TestSpec, trial: Trial, answer) -> dict[str, float]:
    """System -> score for a MUSHRA list of slider values or an A/B choice; checks ranges."""
    if spec.mode == "ab":
        if answer not in AB_CHOICES:
            raise ListeningTestError(f"choose one of {', '.join(AB_CHOICES)}")
        return dict(zip(trial.systems, AB_CHOICES[answer]))
    values = list(answer)
    if len(values) != len(trial.systems):
        raise ListeningTestError(f"expected {len(trial.systems)} ratings, got {len(values)}")
    scores = {}
    for system, v in zip(trial.systems, values):
        v = float(v) if v is not None else math.nan
        if not 0.0 <= v <= 100.0:
            raise ListeningTestError(f"ratings must lie in 0..100, got {v}")
        scores[system] = v
    return scores


# --- storage ------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    listener TEXT NOT NULL, test TEXT NOT NULL, mode TEXT NOT NULL, item TEXT NOT NULL,
    trial TEXT NOT NULL, system TEXT NOT NULL, score REAL NOT NULL, time TEXT NOT NULL,
    UNIQUE (test, listener, item, trial, system)
);
"""
COLUMNS = ("listener", "test", "mode", "item", "trial", "system", "score", "time")


class RatingStore:
    """Ratings in one SQLite file in WAL mode. Every write opens its own connection and writes
    one trial's ratings in a single IMMEDIATE transaction, so threads and processes serialise
    on the database lock (waiting up to `timeout` s) and a trial is stored whole or not at
    all. Re-submitting a trial replaces its scores."""

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        self.path, self.timeout = Path(path), timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect()
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
        finally:
            con.close()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        con.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        return con

    def save(self, listener: str, test: str, mode: str, item: str, trial: str, scores: Mapping[str, float]) -> None:
        listener = check_listener(listener)
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        rows = [(listener, test, mode, item, trial, system, float(score), now) for system, score in scores.items()]
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            con.executemany(
                "INSERT INTO ratings (listener, test, mode, item, trial, system, score, time) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (test, listener, item, trial, system) "
                "DO UPDATE SET score = excluded.score, time = excluded.time, mode = excluded.mode",
                rows,
            )
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def rows(self, test: str | None = None) -> list[dict]:
        con = self._connect()
        try:
            sql = f"SELECT {', '.join(COLUMNS)} FROM ratings"
            cur = (
                con.execute(sql + " WHERE test = ? ORDER BY id", (test,)) if test else con.execute(sql + " ORDER BY id")
            )
            return [dict(zip(COLUMNS, r)) for r in cur.fetchall()]
        finally:
            con.close()

    def completed(self, test: str, listener: str) -> set[tuple[str, str]]:
        """(item, trial key) pairs this listener has rated."""
        con = self._connect()
        try:
            cur = con.execute(
                "SELECT DISTINCT item, trial FROM ratings WHERE test = ? AND listener = ?", (test, listener)
            )
            return set(cur.fetchall())
        finally:
            con.close()

    def export_csv(self, path: str | Path, test: str | None = None) -> Path:
        """Write the ratings as CSV; atomically, as a web server may be sending the old file."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(suffix=".csv", dir=path.parent)
        try:
            with os.fdopen(fd, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(self.rows(test))
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path


# --- statistics -----------------------------------------------------------------------------
@dataclass
class SystemStats:
    system: str
    n: int
    mean: float
    ci_low: float  # 95% confidence interval of the mean (Student t); NaN with one rating
    ci_high: float
    listeners: int = 0


def mean_ci(scores: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    x = np.asarray(scores, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci: no scores")
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(scipy.stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def summarize(rows: Iterable[Mapping], exclude: Iterable[str] = ()) -> list[SystemStats]:
    """Mean and 95% CI per system over all (listener, item[, pair]) ratings, best first."""
    excluded = set(exclude)
    by_system: dict[str, list[float]] = {}
    who: dict[str, set] = {}
    for r in rows:
        if r["listener"] in excluded:
            continue
        by_system.setdefault(r["system"], []).append(float(r["score"]))
        who.setdefault(r["system"], set()).add(r["listener"])
    stats = [SystemStats(s, len(v), *mean_ci(v), listeners=len(who[s])) for s, v in by_system.items()]
    return sorted(stats, key=lambda s: (-s.mean, s.system))


@dataclass
class Screening:
    listener: str
    items: int  # items where this listener rated the hidden reference
    low: int  # ... below the threshold
    flagged: bool = field(default=False)

    @property
    def fraction(self) -> float:
        return self.low / self.items if self.items else 0.0


def post_screen(rows: Iterable[Mapping], threshold: float = 90.0, max_fraction: float = 0.15) -> list[Screening]:
    """MUSHRA post-screening: flag listeners who rated the hidden reference below `threshold`
    on more than `max_fraction` of the items they rated."""
    out: dict[str, Screening] = {}
    for r in rows:
        if r["mode"] == "mushra" and r["system"] == REFERENCE:
            s = out.setdefault(r["listener"], Screening(r["listener"], 0, 0))
            s.items += 1
            s.low += float(r["score"]) < threshold
    for s in out.values():
        s.flagged = s.fraction > max_fraction
    return sorted(out.values(), key=lambda s: s.listener)


def plot_summary(stats: Sequence[SystemStats], title: str = "", xlabel: str = "score (0-100)") -> Figure:
    """Horizontal bars of the mean with 95% CI whiskers, best system on top."""
    fig = Figure(figsize=(7, 0.5 * len(stats) + 1.4), layout="constrained")
    ax = fig.subplots()
    names = [s.system for s in stats][::-1]
    means = np.array([s.mean for s in stats][::-1])
    err = np.array([[s.mean - s.ci_low, s.ci_high - s.mean] for s in stats][::-1]).T
    ax.barh(names, means, xerr=np.nan_to_num(err), color="#4c78a8", capsize=4)
    ax.set_xlim(0, 100)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return fig
