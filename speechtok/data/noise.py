"""Noisy/clean pairs for speech-enhancement training.

Noise comes from five kinds: white, pink and brown noise (1/f^alpha shaping of a white
spectrum), babble (3-7 other utterances of the clean pool, each loudness-normalised) and real
recordings (cropped, or looped when shorter than the utterance). Optionally the speech is
convolved with a synthetic room impulse response before the noise is added.

Real noise is scarce, so two opt-in augmentations make more of it and of the speech: a sixth
kind, `shaped` (1/f^alpha noise of a random slope under a random slow amplitude modulation, so
neither stationary nor one of three fixed colours), and speed perturbation (resampling, tempo
and pitch together, as in Kaldi's 0.9/1.0/1.1) of the clean speech and of real noise recordings.

The target stays DRY: the model learns to remove noise *and* reverberation, and its output is
aligned with the input because the synthetic RIR keeps the direct path at lag 0. The SNR is
measured between the speech actually present in the mixture (reverberant when reverb is on)
and the noise. If the mixture would clip, mixture, noise and target are scaled together, which
keeps the SNR.

Every item is a pure function of (seed, index): all randomness comes from
`numpy.random.Generator(PCG64([seed, index]))`, so DataLoader workers, re-runs and resumed
corpus builds give identical audio.
"""

from __future__ import annotations

import contextlib
import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from speechtok.data.audio import duration_seconds, load_audio, loudness_normalize, save_audio
from speechtok.data.manifest import Utterance, read_manifest, write_manifest
from speechtok.data.rooms import load_rir, read_rir_list
from speechtok.errors import cannot

NOISE_KINDS = ("white", "pink", "brown", "babble", "real", "shaped")
COLOR_ALPHA = {"white": 0.0, "pink": 1.0, "brown": 2.0}
DEFAULT_WEIGHTS = {"white": 1.0, "pink": 1.0, "brown": 1.0, "babble": 2.0, "real": 3.0}  # shaped: opt-in
BABBLE_TALKERS = (3, 7)
SHAPED_ALPHA = (-1.0, 2.5)  # spectral slope of `shaped` noise: from blue-ish to beyond brown
SHAPED_AM_HZ = (0.2, 6.0)  # rate of its amplitude modulation
DRR_RANGE_DB = (-2.0, 10.0)  # direct-to-reverberant ratio of the synthetic RIRs
_ORDER_STREAM = 2**32  # PCG64 stream for corpus ordering; never collides with an item index


@contextlib.contextmanager
def one_thread():
    """Run torch at one intra-op thread, as DataLoader workers do.

    FFTs and long reductions (an RMS over a whole utterance) change in the last bits with the
    thread count, so items rendered in the main process would differ from those of workers.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def colored_noise(num_samples: int, alpha: float, rng: np.random.Generator) -> torch.Tensor:
    """Unit-RMS noise with power spectrum ~ 1/f^alpha (0 white, 1 pink, 2 brown), float32 [1, T]."""
    if num_samples < 2:
        raise ValueError(f"colored_noise needs at least 2 samples, got {num_samples}")
    spec = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.fft.rfftfreq(num_samples)
    freqs[0] = 1.0
    spec *= freqs ** (-alpha / 2.0)
    spec[0] = 0.0  # zero mean: 1/f^alpha has no finite DC value
    x = np.fft.irfft(spec, num_samples)
    x /= max(float(np.sqrt(np.mean(x**2))), 1e-12)
    return torch.from_numpy(x.astype(np.float32)).unsqueeze(0)


def fit_length(wav: torch.Tensor, num_samples: int, rng: np.random.Generator) -> torch.Tensor:
    """Random crop of `wav` [C, T] to `num_samples`, looping from a random start when too short."""
    total = wav.shape[-1]
    if total >= num_samples:
        start = int(rng.integers(0, total - num_samples + 1))
        return wav[..., start : start + num_samples]
    start = int(rng.integers(0, total))
    reps = math.ceil((start + num_samples) / total)
    return wav.repeat(1, reps)[..., start : start + num_samples]


def shaped_noise(num_samples: int, sample_rate: int, rng: np.random.Generator) -> torch.Tensor:
    """Unit-RMS 1/f^alpha noise (alpha drawn from SHAPED_ALPHA) under a random slow envelope, [1, T].

    The envelope is 1 + depth * sin(2 pi f t + phase), depth in [0, 0.9], f in SHAPED_AM_HZ: it
    stands in for the level changes of real noise (traffic, machines, water) that the three
    stationary colours lack.
    """
    x = colored_noise(num_samples, float(rng.uniform(*SHAPED_ALPHA)), rng)[0].numpy()
    depth, rate, phase = rng.uniform(0.0, 0.9), rng.uniform(*SHAPED_AM_HZ), rng.uniform(0.0, 2 * math.pi)
    x = x * (1.0 + depth * np.sin(2 * math.pi * rate * np.arange(num_samples) / sample_rate + phase))
    x /= max(float(np.sqrt(np.mean(x**2))), 1e-12)
    return torch.from_numpy(x.astype(np.float32)).unsqueeze(0)


def change_speed(wav: torch.Tensor, factor: float, sample_rate: int) -> torch.Tensor:
    """Play [C, T] audio `factor` times faster (tempo and pitch together) by resampling.

    The factor is rounded so that the source rate is a multiple of 100 Hz, which keeps the
    polyphase filter small.
    """
    source_rate = int(round(sample_rate * factor / 100.0)) * 100
    if source_rate == sample_rate:
        return wav
    with one_thread():
        return AF.resample(wav, source_rate, sample_rate)


def synth_rir(rt60: float, sample_rate: int, rng: np.random.Generator, drr_db: float = 5.0) -> torch.Tensor:
    """Synthetic RIR [1, L]: unit direct path at lag 0 plus an exponentially decaying Gaussian tail.

    The tail's energy decays by 60 dB in `rt60` seconds and its total energy sits `drr_db`
    below the direct path; it runs for 1.5 * rt60 (90 dB down), so truncation is inaudible.
    """
    if rt60 <= 0:
        raise ValueError(f"rt60 must be positive, got {rt60}")
    length = max(int(1.5 * rt60 * sample_rate), 2)
    t = np.arange(1, length) / sample_rate
    tail = rng.standard_normal(length - 1) * np.exp(-3.0 * math.log(10.0) * t / rt60)
    tail *= math.sqrt(10.0 ** (-drr_db / 10.0) / float(np.sum(tail**2)))
    return torch.from_numpy(np.concatenate([[1.0], tail]).astype(np.float32)).unsqueeze(0)


def reverberate(wav: torch.Tensor, rir: torch.Tensor) -> torch.Tensor:
    """Convolve [C, T] audio with a [1, L] RIR, keeping the first T samples (direct path aligned).

    Runs at one intra-op thread (see `one_thread`): CPU (MKL) FFT results change in the last
    bits with the thread count.
    """
    with one_thread():
        return AF.fftconvolve(wav, rir.expand(wav.shape[0], -1))[..., : wav.shape[-1]]


def _mix(
    clean: torch.Tensor, noise: torch.Tensor, snr_db: float, peak: float
) -> tuple[torch.Tensor, torch.Tensor, float]:
    e_clean = float(clean.double().pow(2).sum())
    e_noise = float(noise.double().pow(2).sum())
    if e_clean <= 1e-20:
        raise ValueError("mix_at_snr: clean signal is silent, SNR is undefined")
    if e_noise <= 1e-20:
        raise ValueError("mix_at_snr: noise signal is silent, cannot reach any SNR")
    scaled = noise * math.sqrt(e_clean / (e_noise * 10.0 ** (snr_db / 10.0)))
    noisy = clean + scaled
    top = float(noisy.abs().max())
    gain = min(1.0, peak / top) if top > 0 else 1.0
    return noisy * gain, scaled * gain, gain


def mix_at_snr(
    clean: torch.Tensor, noise: torch.Tensor, snr_db: float, peak: float = 0.99
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add `noise` (same shape) to `clean` at exactly `snr_db` (energy ratio over the whole signal).

    Returns (noisy, scaled_noise). If |noisy| would exceed `peak`, both are scaled by the same
    gain, so the SNR is unchanged and the scaled clean part is `noisy - scaled_noise`.
    """
    if clean.shape != noise.shape:
        raise ValueError(f"mix_at_snr: clean {tuple(clean.shape)} and noise {tuple(noise.shape)} differ in shape")
    noisy, scaled, _ = _mix(clean, noise, snr_db, peak)
    return noisy, scaled


def read_noise_list(path: str | Path) -> list[Utterance]:
    """Noise files from a manifest CSV, or from a shared-data `metadata.tsv` (paths relative to it)."""
    path = Path(path)
    if path.suffix != ".tsv":
        return read_manifest(path)
    if not path.exists():
        raise FileNotFoundError(cannot("read noise list", path, "file does not exist"))
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and "path" not in rows[0]:
        raise ValueError(cannot("read noise list", path, "no 'path' column"))
    out = []
    for row in rows:
        p = (path.parent / row["path"]).resolve()
        out.append(Utterance(ID=p.stem, path=str(p), duration=duration_seconds(p), split=row.get("split", "")))
    return out


def _speed_range(r: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in r)
    if not 0.5 <= lo <= hi <= 2.0:
        raise ValueError(f"NoisyMixer: speed range {tuple(r)} must satisfy 0.5 <= low <= high <= 2")
    return lo, hi


def _as_utterance(item: Utterance | str | Path) -> Utterance:
    if isinstance(item, Utterance):
        return item
    p = Path(item)
    return Utterance(ID=p.stem, path=str(p), duration=0.0, split="")


class NoisyMixer(Dataset):
    """On-the-fly noisy/clean pairs; item i mixes clean[i % len(clean)] with noise drawn from (seed, i).

    `noise_kinds` maps kind -> weight (or lists kinds, equal weights); by default all kinds that
    the inputs allow. Real noise and babble use only sources from the clean utterance's split
    when there are any (so dev pairs get held-out noise); babble prefers other speakers.
    `segment_seconds` crops (or zero-pads) the clean utterance to a fixed length for batching.
    `speed_range` and `noise_speed_range` draw a speed factor per item for the clean speech (the
    target changes with it) and for real noise recordings; at their default (1, 1) nothing is
    drawn, so items stay exactly what they were without these options.
    `rirs` (measured or simulated responses, `speechtok.data.rooms`) replace the statistical
    `synth_rir` for reverberant items; like real noise, dev items use the dev ones.
    """

    def __init__(
        self,
        clean: Sequence[Utterance],
        noise: Sequence[Utterance | str | Path] = (),
        snr_range: tuple[float, float] = (-5.0, 20.0),
        reverb_prob: float = 0.0,
        noise_kinds: Mapping[str, float] | Sequence[str] | None = None,
        seed: int = 0,
        sample_rate: int = 16000,
        segment_seconds: float | None = None,
        rt60_range: tuple[float, float] = (0.2, 0.8),
        num_items: int | None = None,
        speed_range: tuple[float, float] = (1.0, 1.0),
        noise_speed_range: tuple[float, float] = (1.0, 1.0),
        rirs: Sequence[Utterance | str | Path] = (),
    ):
        self.clean = list(clean)
        self.rirs = [_as_utterance(r) for r in rirs]
        self._rir_cache: dict[str, torch.Tensor] = {}
        if not self.clean:
            raise ValueError("NoisyMixer: the clean pool is empty")
        self.noise = [_as_utterance(n) for n in noise]
        self.snr_range, self.rt60_range = tuple(snr_range), tuple(rt60_range)
        self.speed_range, self.noise_speed_range = _speed_range(speed_range), _speed_range(noise_speed_range)
        self.reverb_prob, self.seed, self.sample_rate = reverb_prob, int(seed), sample_rate
        self.segment = None if segment_seconds is None else int(round(segment_seconds * sample_rate))
        self.num_items = len(self.clean) if num_items is None else int(num_items)
        can_babble = len(self.clean) > BABBLE_TALKERS[0]
        if noise_kinds is None:
            usable = {"real": bool(self.noise), "babble": can_babble}
            weights = {k: w for k, w in DEFAULT_WEIGHTS.items() if usable.get(k, True)}
        elif isinstance(noise_kinds, Mapping):
            weights = {k: float(w) for k, w in noise_kinds.items() if w > 0}
        else:
            weights = {k: 1.0 for k in noise_kinds}
        unknown = sorted(set(weights) - set(NOISE_KINDS))
        if unknown or not weights:
            raise ValueError(f"NoisyMixer: noise kinds {unknown or 'none'} invalid; choose from {NOISE_KINDS}")
        if "real" in weights and not self.noise:
            raise ValueError("NoisyMixer: 'real' noise requested but no noise files given")
        if "babble" in weights and not can_babble:
            raise ValueError(f"NoisyMixer: babble needs more than {BABBLE_TALKERS[0]} clean utterances")
        self.kinds = list(weights)
        self.probs = np.array([weights[k] for k in self.kinds]) / sum(weights.values())
        self._by_split: dict[str, list[int]] = {}
        for j, u in enumerate(self.clean):
            self._by_split.setdefault(u.split, []).append(j)
        self._noise_cache: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.num_items

    def _babble_pool(self, utt: Utterance) -> list[int]:
        others = [j for j in self._by_split.get(utt.split, []) if self.clean[j].ID != utt.ID]
        if len(others) < BABBLE_TALKERS[0]:
            others = [j for j, u in enumerate(self.clean) if u.ID != utt.ID]
        if utt.speaker:
            strangers = [j for j in others if self.clean[j].speaker != utt.speaker]
            if len(strangers) >= BABBLE_TALKERS[0]:
                return strangers
        return others

    def plan(self, index: int) -> tuple[dict, np.random.Generator]:
        """Everything about item `index` that needs no audio, plus the generator to render it."""
        if not 0 <= index < self.num_items:
            raise IndexError(f"NoisyMixer: index {index} out of range [0, {self.num_items})")
        rng = np.random.Generator(np.random.PCG64([self.seed, index]))
        utt = self.clean[index % len(self.clean)]
        kind = self.kinds[int(rng.choice(len(self.kinds), p=self.probs))]
        snr = float(rng.uniform(*self.snr_range))
        reverb = bool(rng.random() < self.reverb_prob)
        rt60, drr = float(rng.uniform(*self.rt60_range)), float(rng.uniform(*DRR_RANGE_DB))
        sources: list[Utterance] = []
        if kind == "real":
            pool = [n for n in self.noise if n.split == utt.split] or self.noise
            sources = [pool[int(rng.integers(len(pool)))]]
        elif kind == "babble":
            pool = self._babble_pool(utt)
            k = min(int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1)), len(pool))
            sources = [self.clean[pool[j]] for j in rng.choice(len(pool), size=k, replace=False)]
        speed = float(rng.uniform(*self.speed_range)) if self.speed_range != (1.0, 1.0) else 1.0
        noise_speed = 1.0
        if kind == "real" and self.noise_speed_range != (1.0, 1.0):
            noise_speed = float(rng.uniform(*self.noise_speed_range))
        rir = None
        if reverb and self.rirs:
            pool = [r for r in self.rirs if r.split == utt.split] or self.rirs
            rir = pool[int(rng.integers(len(pool)))]
        info = {
            "id": f"{utt.ID}-mix{index:06d}",
            "clean_id": utt.ID,
            "snr_db": snr,
            "noise_kind": kind,
            "noise_id": "+".join(s.ID for s in sources) or kind,
            "reverb": reverb,
            "rt60": (float(rir.extra.get("rt60", "nan")) if rir else rt60) if reverb else 0.0,
            "rir_id": (rir.ID if rir else "synthetic") if reverb else "",
            "drr_db": drr if reverb and rir is None else 0.0,
            "speed": speed,
            "noise_speed": noise_speed,
            "split": utt.split,
            "_utt": utt,
            "_sources": sources,
            "_rir": rir,
        }
        return info, rng

    def _real(self, utt: Utterance) -> torch.Tensor:
        if utt.path not in self._noise_cache:
            self._noise_cache[utt.path] = load_audio(utt.path, self.sample_rate)
        return self._noise_cache[utt.path]

    def _noise(self, info: dict, length: int, rng: np.random.Generator) -> torch.Tensor:
        kind = info["noise_kind"]
        if kind in COLOR_ALPHA:
            return colored_noise(length, COLOR_ALPHA[kind], rng)
        if kind == "shaped":
            return shaped_noise(length, self.sample_rate, rng)
        if kind == "real":
            noise, speed = self._real(info["_sources"][0]), info["noise_speed"]
            if speed == 1.0:
                return fit_length(noise, length, rng)
            crop = fit_length(noise, int(math.ceil(length * speed)) + 64, rng)  # resample only what is used
            return fit_length(change_speed(crop, speed, self.sample_rate), length, rng)
        talkers = [loudness_normalize(load_audio(s.path, self.sample_rate)) for s in info["_sources"]]
        return torch.stack([fit_length(t, length, rng) for t in talkers]).sum(0)

    def __getitem__(self, index: int) -> dict:
        with one_thread():
            return self._render(index)

    def _render(self, index: int) -> dict:
        info, rng = self.plan(index)
        utt = info.pop("_utt")
        wav = change_speed(load_audio(utt.path, self.sample_rate), info["speed"], self.sample_rate)
        if self.segment is not None:
            if wav.shape[-1] >= self.segment:
                wav = fit_length(wav, self.segment, rng)
            else:
                wav = torch.nn.functional.pad(wav, (0, self.segment - wav.shape[-1]))
        noise = self._noise(info, wav.shape[-1], rng)
        info.pop("_sources")
        rir_utt = info.pop("_rir")
        speech = wav
        if rir_utt is not None:
            if rir_utt.path not in self._rir_cache:
                self._rir_cache[rir_utt.path] = load_rir(rir_utt.path, self.sample_rate)
            speech = reverberate(wav, self._rir_cache[rir_utt.path])
        elif info["reverb"]:
            speech = reverberate(wav, synth_rir(info["rt60"], self.sample_rate, rng, info["drr_db"]))
        try:
            noisy, _, gain = _mix(speech, noise, info["snr_db"], peak=0.99)
        except ValueError as exc:
            raise ValueError(cannot("mix", utt.path, f"{exc} (pair {info['id']}, noise {info['noise_id']})")) from exc
        return {
            **info,
            "noisy": noisy.float().contiguous(),
            "clean": (wav * gain).float().contiguous(),
            "speaker": utt.speaker,
            "text": utt.text,
        }


class _CorpusWriter(Dataset):
    """Renders and atomically writes one pair per index (runs inside DataLoader workers)."""

    def __init__(self, mixer: NoisyMixer, out_dir: Path):
        self.mixer, self.out_dir = mixer, out_dir

    def __len__(self) -> int:
        return len(self.mixer)

    def paths(self, item_id: str) -> tuple[Path, Path]:
        return self.out_dir / "noisy" / f"{item_id}.flac", self.out_dir / "clean" / f"{item_id}.flac"

    def __getitem__(self, index: int) -> int:
        item = self.mixer[index]
        noisy_path, clean_path = self.paths(item["id"])
        for wav, final in ((item["clean"], clean_path), (item["noisy"], noisy_path)):
            tmp = self.out_dir / ".tmp" / f"{final.parent.name}-{final.name}"
            save_audio(tmp, wav, self.mixer.sample_rate)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(final)
        return index


def make_noisy_corpus(
    clean_manifest,
    noise_manifest,
    out_dir,
    hours,
    snr_range=(-5, 20),
    seed=0,
    reverb_prob=0.3,
    workers=2,
    sample_rate=16000,
    noise_kinds=None,
    speed_range=(1.0, 1.0),
    noise_speed_range=(1.0, 1.0),
    rir_manifests=(),
) -> Path:
    """Write `hours` of noisy/clean pairs and return the path of their manifest.

    Layout: out_dir/noisy/<ID>.flac, out_dir/clean/<ID>.flac, out_dir/manifest.csv, where
    manifest `path` is the noisy file and extra columns give clean_path, clean_id, snr_db,
    noise_kind, noise_id, reverb (0/1), rt60 and rir_id. Clean utterances are taken in a seeded
    order (cycling, with fresh noise, when `hours` exceeds the pool). Pairs whose two files
    already exist are skipped, so an interrupted run resumes; files are written to
    out_dir/.tmp and renamed. `noise_manifest` may be a manifest CSV, a metadata.tsv, a list of
    them, or None (generated noise only); `rir_manifests` list measured or simulated RIRs
    (`speechtok.data.rooms`) for the reverberant pairs. `noise_kinds`, `speed_range` and
    `noise_speed_range` go to NoisyMixer; the hours count the clean utterances before any speed change.
    """
    clean = read_manifest(clean_manifest)
    if not clean:
        raise ValueError(cannot("mix noisy pairs from", clean_manifest, "clean manifest has no utterances"))
    lists = noise_manifest if isinstance(noise_manifest, (list, tuple)) else [noise_manifest] if noise_manifest else []
    noise = [u for path in lists for u in read_noise_list(path)]
    order = np.random.Generator(np.random.PCG64([int(seed), _ORDER_STREAM])).permutation(len(clean))
    clean = [clean[j] for j in order]
    pool_seconds = sum(u.duration for u in clean)
    if not pool_seconds > 0:
        raise ValueError(
            cannot("mix noisy pairs from", clean_manifest, "clean utterances have no positive total duration")
        )
    target, total, count = float(hours) * 3600.0, 0.0, 0
    while total < target:
        total += clean[count % len(clean)].duration
        count += 1
    mixer = NoisyMixer(
        clean,
        noise,
        snr_range=snr_range,
        reverb_prob=reverb_prob,
        seed=seed,
        sample_rate=sample_rate,
        num_items=count,
        noise_kinds=noise_kinds,
        speed_range=speed_range,
        noise_speed_range=noise_speed_range,
        rirs=read_rir_list(list(rir_manifests)),
    )
    out_dir = Path(out_dir).resolve()
    writer = _CorpusWriter(mixer, out_dir)
    plans = [mixer.plan(i)[0] for i in range(count)]
    todo = [i for i, p in enumerate(plans) if not all(f.exists() for f in writer.paths(p["id"]))]
    if todo:
        loader = DataLoader(writer, batch_size=None, sampler=todo, num_workers=workers)
        for _ in tqdm(loader, total=len(todo), desc=f"noisy corpus -> {out_dir.name}", unit="pair"):
            pass
    utts = []
    for p in plans:
        noisy_path, clean_path = writer.paths(p["id"])
        utt = p["_utt"]
        extra = {
            "clean_path": str(clean_path),
            "clean_id": utt.ID,
            "snr_db": f"{p['snr_db']:.3f}",
            "noise_kind": p["noise_kind"],
            "noise_id": p["noise_id"],
            "reverb": int(p["reverb"]),
            "rt60": f"{p['rt60']:.3f}",
            "rir_id": p["rir_id"],
            "speed": f"{p['speed']:.3f}",
        }
        utts.append(
            Utterance(
                ID=p["id"],
                path=str(noisy_path),
                duration=duration_seconds(noisy_path),
                speaker=utt.speaker,
                text=utt.text,
                phonemes=utt.phonemes,
                split=utt.split,
                extra=extra,
            )
        )
    return write_manifest(out_dir / "manifest.csv", utts)
