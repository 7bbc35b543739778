"""Synthetic multi-speaker speech: many voices with exact transcripts and phonemes.

Three offline TTS engines (espeak-ng, flite, festival) with accent/variant/rate/pitch settings
give dozens of distinguishable "speakers". Each voice is a speaker id; a set of voices is held
out for a voice- and sentence-disjoint dev split. Sentence->voice assignment depends only on the
seed, and a run can be interrupted and resumed: finished FLACs are kept and skipped.
Phonemes are espeak-ng's en-us IPA for the text (one canonical transcription for every voice,
not the accent actually spoken).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from speechtok.data.audio import load_audio_with_sr, peak_normalize, resample, save_audio
from speechtok.data.manifest import Utterance
from speechtok.errors import cannot
from speechtok.tts.text import TextError, phonemize_many

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TEXT_DIR = Path(os.environ.get("SPEECHTOK_SHARED_DATA", REPO.parent / "shared" / "data")) / "text"

# engine -> (binary, Debian package(s) providing it and its voices)
ENGINES = {
    "espeak": ("espeak-ng", "espeak-ng"),
    "flite": ("flite", "flite"),
    "festival": ("festival", "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"),
}
# Allowed numeric params per engine: espeak s=words/min, p=pitch 0-99; flite/festival stretch=duration
# factor, flite f0=mean pitch in Hz.
PARAMS = {"espeak": ("s", "p"), "flite": ("stretch", "f0"), "festival": ("stretch",)}
FESTIVAL_PACKAGES = {
    "voice_kal_diphone": "festvox-kallpc16k",
    "voice_ked_diphone": "festvox-kdlpc16k",
    "voice_cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
}


class EngineMissing(RuntimeError):
    """A TTS binary or voice is not installed."""


class SynthError(RuntimeError):
    """A TTS engine failed on a sentence; the message names voice, sentence and engine output."""


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: engine, engine voice name, numeric settings."""

    engine: str
    name: str
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"unknown TTS engine {self.engine!r}; choose from {sorted(ENGINES)}")
        bad = sorted(set(self.params) - set(PARAMS[self.engine]))
        if bad:
            raise ValueError(f"{self.engine} voice {self.name!r}: unknown params {bad}; allowed {PARAMS[self.engine]}")

    @property
    def id(self) -> str:
        """Stable speaker id, e.g. 'espeak-en-gb-f3-s175-p62', 'flite-slt', 'festival-kal_diphone'."""
        name = self.name.removeprefix("voice_") if self.engine == "festival" else self.name
        parts = [self.engine, name] + [f"{k}{v:g}" for k, v in sorted(self.params.items())]
        return re.sub(r"[^A-Za-z0-9_.]+", "-", "-".join(parts))

    @property
    def spec(self) -> str:
        """Round-trips through parse_voice: 'engine:name[:k=v,k=v]'."""
        p = ",".join(f"{k}={v:g}" for k, v in sorted(self.params.items()))
        return f"{self.engine}:{self.name}" + (f":{p}" if p else "")


def parse_voice(spec: str | Voice) -> Voice:
    """'espeak:en-us+f3:s=170,p=60' | 'flite:slt' | 'festival:voice_kal_diphone' -> Voice."""
    if isinstance(spec, Voice):
        return spec
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise ValueError(f"bad voice spec {spec!r}; expected 'engine:name[:key=value,...]'")
    params = {}
    for kv in filter(None, (parts[2] if len(parts) == 3 else "").split(",")):
        key, _, value = kv.partition("=")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"bad voice spec {spec!r}: param {kv!r} is not key=number") from None
    return Voice(parts[0], parts[1], params)


def _espeak(name: str, s: int, p: int) -> Voice:
    return Voice("espeak", name, {"s": s, "p": p})


# Accents x variants (formant sets, male/female/klatt) x rate x pitch, each combination unique.
# ("en" is British English; espeak-ng 1.51 ignores the +variant on "en-gb".)
DEFAULT_VOICES: list[Voice] = [
    _espeak("en-us+m1", 165, 45),
    _espeak("en-us+f2", 170, 60),
    _espeak("en-us+m3", 155, 40),
    _espeak("en-us+f4", 180, 65),
    _espeak("en-us+klatt", 170, 50),
    _espeak("en-us+m6", 190, 38),
    _espeak("en-us+klatt3", 160, 45),
    _espeak("en+m2", 160, 50),
    _espeak("en+f3", 175, 62),
    _espeak("en+m7", 150, 35),
    _espeak("en+klatt4", 175, 55),
    _espeak("en+f5", 160, 70),
    _espeak("en-gb-scotland+m4", 165, 48),
    _espeak("en-gb-scotland+f1", 160, 58),
    _espeak("en-gb-x-rp+m6", 170, 42),
    _espeak("en-gb-x-rp+f5", 155, 68),
    _espeak("en-029+m5", 175, 52),
    _espeak("en-029+f2", 165, 55),
    _espeak("en-us-nyc+m2", 185, 46),
    _espeak("en-us-nyc+f4", 170, 63),
    _espeak("en-gb-x-gbclan+m3", 160, 44),
    _espeak("en-gb-x-gbclan+f1", 175, 60),
    _espeak("en-gb-x-gbcwmd+m1", 155, 50),
    _espeak("en-gb-x-gbcwmd+f3", 165, 66),
    Voice("flite", "slt"),
    Voice("flite", "awb"),
    Voice("flite", "rms"),
    Voice("flite", "kal16"),
    Voice("festival", "voice_kal_diphone"),
    Voice("festival", "voice_ked_diphone"),
    Voice("festival", "voice_cmu_us_slt_arctic_hts"),
]
# Held out for dev: no dev voice is heard in training (three espeak, one flite, one festival).
DEFAULT_DEV_VOICES: list[str] = [
    "espeak-en-gb-scotland-f1-p58-s160",
    "espeak-en-029-m5-p52-s175",
    "espeak-en-us-m6-p38-s190",
    "flite-rms",
    "festival-ked_diphone",
]


def resolve_voices(voices: Iterable[str | Voice] | str | None) -> list[Voice]:
    """None/'default' -> DEFAULT_VOICES; otherwise parse specs; ids must be unique."""
    if voices is None or voices == "default":
        return list(DEFAULT_VOICES)
    out = [parse_voice(v) for v in ([voices] if isinstance(voices, (str, Voice)) else voices)]
    ids = [v.id for v in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"duplicate voices {dup}")
    return out


def check_engines(voices: Iterable[Voice]) -> None:
    """Fail early, naming the missing binary or voice and how to install it."""
    voices = list(voices)
    for engine in sorted({v.engine for v in voices} | {"espeak"}):  # espeak-ng also does phonemes
        binary, pkgs = ENGINES[engine]
        if shutil.which(binary) is None:
            raise EngineMissing(
                f"'{binary}' not found on PATH (needed for {engine} voices and phonemes); "
                f"./setup.sh installs it (apt-get install {pkgs})"
            )
    variants = sorted({v.name.partition("+")[2] for v in voices if v.engine == "espeak"} - {""})
    if variants:  # espeak-ng silently ignores an unknown +variant, which would merge two "speakers"
        info = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
        data = Path(info.split("Data at:")[-1].strip())
        missing = [x for x in variants if not (data / "voices" / "!v" / x).is_file()]
        if missing:
            raise EngineMissing(
                f"espeak-ng has no voice variant(s) {missing} in {data}/voices/!v "
                "(list them with: espeak-ng --voices=variant)"
            )
    flite = [v.name for v in voices if v.engine == "flite"]
    if flite:
        listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout.split(":")[-1].split()
        missing = sorted(set(flite) - set(listed))
        if missing:
            raise EngineMissing(f"flite has no built-in voice(s) {missing}; installed: {listed}")
    for name in sorted({v.name for v in voices if v.engine == "festival"}):
        r = subprocess.run(["festival", "-b", f"({name})"], capture_output=True, text=True)
        if r.returncode != 0:
            pkg = FESTIVAL_PACKAGES.get(name, "the festvox package providing it")
            raise EngineMissing(
                f"festival voice {name} is not installed; ./setup.sh installs it (apt-get install {pkg})"
            )


# ---- engines: write one wav per text into tmp dir -------------------------------------------------


def _run(cmd: list[str], voice: Voice, what: str, **kw) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SynthError(f"{voice.id}: {cmd[0]} failed on {what} (rc={r.returncode}): {r.stderr.strip()[-500:]}")


def _espeak_wavs(voice: Voice, texts: Sequence[str], tmp: Path) -> list[Path]:
    out = []
    for i, text in enumerate(texts):
        wav = tmp / f"{i}.wav"
        cmd = ["espeak-ng", "-v", voice.name, "-w", str(wav), "--stdin"]
        for key in ("s", "p"):
            if key in voice.params:
                cmd[1:1] = [f"-{key}", str(int(voice.params[key]))]
        _run(cmd, voice, repr(text), input=text)
        out.append(wav)
    return out


def _flite_wavs(voice: Voice, texts: Sequence[str], tmp: Path) -> list[Path]:
    sets = {"stretch": "duration_stretch", "f0": "int_f0_target_mean"}
    extra = [a for k, v in voice.params.items() for a in ("--setf", f"{sets[k]}={v:g}")]
    out = []
    for i, text in enumerate(texts):
        txt, wav = tmp / f"{i}.txt", tmp / f"{i}.wav"
        txt.write_text(text, encoding="utf-8")
        _run(["flite", "-voice", voice.name, *extra, "-f", str(txt), "-o", str(wav)], voice, repr(text))
        out.append(wav)
    return out


def _festival_wavs(voice: Voice, texts: Sequence[str], tmp: Path) -> list[Path]:
    """One festival process per batch: its start-up (~0.2 s) would otherwise dominate."""
    lines = [f"({voice.name})"]
    if "stretch" in voice.params:
        lines.append(f"(Parameter.set 'Duration_Stretch {voice.params['stretch']:g})")
    out = []
    for i, text in enumerate(texts):
        wav = tmp / f"{i}.wav"
        quoted = text.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{quoted}")) "{wav}" \'riff)')
        out.append(wav)
    script = tmp / "batch.scm"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _run(["festival", "-b", str(script)], voice, f"a batch of {len(texts)} sentences")
    missing = [t for t, w in zip(texts, out) if not w.exists()]
    if missing:
        raise SynthError(f"{voice.id}: festival wrote no audio for {missing[:3]}")
    return out


ENGINE_FNS = {"espeak": _espeak_wavs, "flite": _flite_wavs, "festival": _festival_wavs}


def is_readable(path: Path) -> bool:
    """A finished output: the header parses and there is audio (partial files never get the final name)."""
    try:
        return path.is_file() and sf.info(str(path)).frames > 0
    except Exception:
        return False


def _postprocess(wav_path: Path, out: Path, sample_rate: int, top_db: float = 40.0, pad_s: float = 0.1) -> None:
    """Resample, trim engine silence beyond `pad_s`, peak-normalise, write FLAC atomically."""
    wav, sr = load_audio_with_sr(wav_path)
    wav = resample(wav, sr, sample_rate)
    _, (start, end) = librosa.effects.trim(wav[0].numpy(), top_db=top_db)
    pad = int(pad_s * sample_rate)
    wav = peak_normalize(wav[:, max(0, start - pad) : end + pad])
    partial = out.with_name(out.stem + ".partial.flac")
    save_audio(partial, wav, sample_rate)
    partial.replace(out)


def synthesize(voice: Voice, texts: Sequence[str], outs: Sequence[str | Path], sample_rate: int = 16000) -> int:
    """Write one 16-bit FLAC per text (skipping readable existing outputs); returns how many were made."""
    todo = [(t, Path(o)) for t, o in zip(texts, outs, strict=True) if not is_readable(Path(o))]
    if not todo:
        return 0
    for parent in {o.parent for _, o in todo}:
        parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="speechtok-synth-") as tmp:
        wavs = ENGINE_FNS[voice.engine](voice, [t for t, _ in todo], Path(tmp))
        for (text, out), wav in zip(todo, wavs):
            try:
                _postprocess(wav, out, sample_rate)
            except Exception as exc:
                raise SynthError(f"{voice.id}: bad audio for {text!r}: {exc}") from exc
    return len(todo)


# ---- sentences and deterministic plan -------------------------------------------------------------


@dataclass(frozen=True)
class Sentence:
    id: str
    text: str


# Plain prose only: no digits/brackets/non-ASCII, so every engine reads the transcript exactly as written.
_PLAIN = re.compile(r"[A-Za-z\"'][A-Za-z ,.;:'?!\"-]{15,200}")


def load_sentences(text_dir: str | Path = DEFAULT_TEXT_DIR) -> list[Sentence]:
    """LJSpeech sentences + CMU ARCTIC prompts, filtered to plain prose of 16-201 characters."""
    text_dir = Path(text_dir)
    lj, arctic = text_dir / "ljspeech_sentences.tsv", text_dir / "cmuarctic.data"
    for p in (lj, arctic):
        if not p.is_file():
            raise FileNotFoundError(cannot("read sentences from", p, "file not found"))
    out = []
    for line in lj.read_text(encoding="utf-8").splitlines()[1:]:
        sid, _, text = line.partition("\t")
        out.append(Sentence(sid, text.strip()))
    for m in re.finditer(r'^\(\s*(\S+)\s+"(.*)"\s*\)\s*$', arctic.read_text(encoding="utf-8"), re.M):
        out.append(Sentence(m.group(1), m.group(2).strip()))
    return [s for s in out if _PLAIN.fullmatch(s.text)]


@dataclass
class Block:
    """A few sentences for one voice: the unit of work (one festival process per block)."""

    voice: Voice
    sentences: list[Sentence]
    split: str


def split_sentences(sentences: Sequence[Sentence], dev_fraction: float, seed: int) -> tuple[list, list]:
    """Seeded shuffle, then a disjoint (train, dev) pair: no dev sentence is ever read in train."""
    order = sorted(sentences, key=lambda s: s.id)
    random.Random(seed).shuffle(order)
    n_dev = math.ceil(len(order) * dev_fraction) if dev_fraction > 0 else 0
    return order[n_dev:], order[:n_dev]


def plan_blocks(
    sentences: Sequence[Sentence], voices: Sequence[Voice], split: str, seed: int, block_size: int = 8
) -> Iterator[Block]:
    """Round-robin blocks over seeded-shuffled voices; pass k shifts voices by k so a sentence is
    re-read only by a new voice. Same inputs and seed -> same assignment."""
    if not voices or not sentences:
        return
    voices = sorted(voices, key=lambda v: v.id)
    random.Random(seed + 1).shuffle(voices)
    n_blocks = math.ceil(len(sentences) / block_size)
    for k in range(len(voices)):
        for j in range(n_blocks):
            yield Block(voices[(j + k) % len(voices)], list(sentences[j * block_size : (j + 1) * block_size]), split)


def _block_utterances(block: Block, audio_dir: str, sample_rate: int) -> tuple[list[Utterance], int]:
    v = block.voice
    outs = [Path(audio_dir) / v.id / f"{s.id}.flac" for s in block.sentences]
    made = synthesize(v, [s.text for s in block.sentences], outs, sample_rate)
    try:  # the TTS front-end's phonemes (speechtok.tts.text), one espeak-ng call for the block
        phonemes = phonemize_many([s.text for s in block.sentences])
    except TextError as exc:
        raise SynthError(f"{v.id}: espeak-ng phonemization failed: {exc}") from exc
    utts = [
        Utterance(
            ID=f"{v.id}_{s.id}",
            path=str(o.resolve()),
            duration=sf.info(str(o)).duration,
            speaker=v.id,
            text=s.text,
            phonemes=ph,
            split=block.split,
            extra={"engine": v.engine},
        )
        for s, o, ph in zip(block.sentences, outs, phonemes)
    ]
    return utts, made


CHARS_PER_SECOND = 17.0  # measured speaking rate of the default voices, only to limit work submitted ahead


def _init_worker() -> None:
    torch.set_num_threads(1)  # one process per core; intra-op threads would only contend


def _run_blocks(
    blocks: Iterator[Block], target_s: float, args: tuple, ex: ProcessPoolExecutor | None, window_size: int, bar
) -> tuple[list[Utterance], int]:
    """Consume blocks in plan order until `target_s` seconds of audio. Only a bounded window of blocks
    is in flight, so the long plan is never materialised; extra finished blocks stay on disk for a resume."""
    utts, made, total = [], 0, 0.0
    window: deque = deque()  # (future or block, estimated seconds)
    blocks = iter(blocks)
    while total < target_s:
        # Submit ahead only while the blocks in flight are not already expected to reach the target.
        while len(window) < window_size and (not window or total + sum(e for _, e in window) < target_s):
            if (b := next(blocks, None)) is None:
                break
            est = sum(len(s.text) for s in b.sentences) / CHARS_PER_SECOND
            window.append((ex.submit(_block_utterances, b, *args) if ex else b, est))
        if not window:
            break  # plan exhausted: every sentence read by every voice
        head = window.popleft()[0]
        u, m = head.result() if ex else _block_utterances(head, *args)
        dur = sum(x.duration for x in u)
        utts += u
        made += m
        total += dur
        bar.update(round(dur))
    for f, _ in window if ex else ():
        f.cancel()
    return utts, made


@dataclass
class SynthResult:
    utterances: list[Utterance]
    synthesized: int  # files made in this run (the rest were resumed from disk)
    wall_s: float

    def split(self, name: str) -> list[Utterance]:
        return [u for u in self.utterances if u.split == name]


def build_synth_corpus(
    out_dir: str | Path,
    hours: float,
    voices: Iterable[str | Voice] | str | None = None,
    dev_voices: Iterable[str] | str | None = None,
    dev_fraction: float = 0.1,
    sentences: Sequence[Sentence] | None = None,
    text_dir: str | Path = DEFAULT_TEXT_DIR,
    seed: int = 0,
    workers: int = 2,
    block_size: int = 8,
    sample_rate: int = 16000,
    progress: bool = True,
) -> SynthResult:
    """Synthesise about `hours` of speech into `out_dir/audio/<voice id>/<sentence id>.flac`.

    `dev_fraction` of the hours (and of the sentences) goes to `dev_voices` (ids or specs, default
    DEFAULT_DEV_VOICES among `voices`), which never appear in train. Each split stops at the first
    block that reaches its target, so totals overshoot by at most one block.
    """
    t0 = time.perf_counter()
    voices = resolve_voices(voices)
    by_id = {v.id: v for v in voices}
    if dev_voices is None or dev_voices == "default":
        dev_ids = [i for i in DEFAULT_DEV_VOICES if i in by_id]
    else:
        dev_ids = [
            parse_voice(i).id if ":" in i else i for i in ([dev_voices] if isinstance(dev_voices, str) else dev_voices)
        ]
        unknown = [i for i in dev_ids if i not in by_id]
        if unknown:
            raise ValueError(f"dev voices {unknown} are not among the voices {sorted(by_id)}")
    train_voices = [v for v in voices if v.id not in dev_ids]
    dev = [by_id[i] for i in dev_ids]
    if not train_voices:
        raise ValueError("every voice is a dev voice; leave some for train")
    if not dev:
        dev_fraction = 0.0
    check_engines(voices)
    sentences = list(sentences) if sentences is not None else load_sentences(text_dir)
    train_s, dev_s = split_sentences(sentences, dev_fraction, seed)
    audio_dir = Path(out_dir) / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    for stale in audio_dir.rglob("*.partial.flac"):  # left by an interrupted run
        stale.unlink()
    jobs = [("train", train_s, train_voices, 1 - dev_fraction), ("dev", dev_s, dev, dev_fraction)]
    jobs = [(split, pool, vs, hours * frac * 3600) for split, pool, vs, frac in jobs if frac > 0]
    utts, made = [], 0
    threads = torch.get_num_threads()
    librosa.effects.trim(np.zeros(4096, dtype=np.float32))  # pay librosa's lazy imports once, before forking
    ex = None
    if workers > 1:  # fork + one torch thread per worker, as DataLoader workers do; spawn re-imports torch
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        ex = ProcessPoolExecutor(workers, mp_context=mp.get_context(method), initializer=_init_worker)
    else:
        _init_worker()
    bar = tqdm(total=round(sum(j[3] for j in jobs)), unit="s", desc="synth", disable=not progress)
    try:
        for split, pool, vs, target_s in jobs:
            bar.set_description(f"synth {split}")
            u, m = _run_blocks(
                plan_blocks(pool, vs, split, seed, block_size),
                target_s,
                (str(audio_dir), sample_rate),
                ex,
                2 * workers,
                bar,
            )
            if sum(x.duration for x in u) < target_s:
                warnings.warn(
                    f"synth {split}: sentences x voices exhausted at {len(u)} utterances, "
                    f"below the {target_s / 3600:.2f} h target",
                    stacklevel=2,
                )
            utts += u
            made += m
    finally:
        bar.close()
        if ex:
            ex.shutdown(cancel_futures=True)
        torch.set_num_threads(threads)
    return SynthResult(utts, made, time.perf_counter() - t0)
