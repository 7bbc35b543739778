"""Random fixed-length crops of speech for codec and vocoder training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from speechtok.data.audio import load_audio
from speechtok.data.manifest import Utterance, read_manifest
from speechtok.eval.metrics import pesq_wb


def fixed_subset(n_items: int, n: int, seed: int = 0) -> list[int]:
    """Sorted indices of a fixed random subset: dev evaluation must not drift between runs."""
    return sorted(int(i) for i in np.random.default_rng(seed).choice(n_items, size=min(n, n_items), replace=False))


def read_manifests(paths: list[str | Path], min_duration: float = 0.0) -> list[Utterance]:
    utts = [u for p in paths for u in read_manifest(p)]
    return [u for u in utts if u.duration >= min_duration]


class EpochSeeded(Dataset):
    """`n_items` random items, item i a pure function of (seed, epoch, i): a resumed, sharded
    or multi-worker run draws exactly the items an uninterrupted one would."""

    def __init__(self, n_items: int, seed: int = 0) -> None:
        self.n_items, self.seed, self.epoch = n_items, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_items

    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, i])


class ItemList(Dataset):
    """A list of ready items (e.g. fixed dev batches) as a Dataset."""

    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def balanced_weights(sources: list[list[Utterance]], shares: list[float] | None = None) -> np.ndarray:
    """Sampling probability per utterance (sources concatenated in order): each source gets its
    share (equal by default), each speaker an equal part of its source, and each utterance of a
    speaker a part proportional to its duration. So no single voice dominates the crops."""
    shares = np.asarray(shares if shares is not None else [1.0] * len(sources), dtype=np.float64)
    if len(shares) != len(sources) or (shares < 0).any() or shares.sum() <= 0:
        raise ValueError(f"source shares {shares.tolist()} do not fit {len(sources)} sources")
    out = []
    for share, utts in zip(shares / shares.sum(), sources):
        speaker_time: dict[str, float] = {}
        for u in utts:
            speaker_time[u.speaker or u.ID] = speaker_time.get(u.speaker or u.ID, 0.0) + u.duration
        out += [share * u.duration / speaker_time[u.speaker or u.ID] / len(speaker_time) for u in utts]
    return np.asarray(out, dtype=np.float64)


class RandomSegments(EpochSeeded):
    """`n_items` crops of `segment_samples`, utterance k drawn with probability `weights[k]`
    (default: in proportion to duration), with a random gain of -6 to +3 dB.

    Audio is decoded once and kept in memory as int16 (2 hours of 16 kHz speech is ~230 MB),
    which keeps a CPU-bound data loader from decoding FLAC every step.
    """

    def __init__(
        self,
        utts: list[Utterance],
        segment_samples: int,
        sample_rate: int,
        n_items: int,
        seed: int = 0,
        preload: bool = True,
        weights: np.ndarray | None = None,
    ) -> None:
        if not utts:
            raise ValueError("RandomSegments: no utterances (check the manifests)")
        super().__init__(n_items, seed)
        self.utts, self.segment, self.sample_rate = utts, segment_samples, sample_rate
        self.cache: list[np.ndarray] | None = None
        if preload:
            self.cache = [self._load(u) for u in utts]
        weights = np.array([u.duration for u in utts], dtype=np.float64) if weights is None else weights
        self.weights = weights / weights.sum()

    def _load(self, utt: Utterance) -> np.ndarray:
        wav = load_audio(utt.path, self.sample_rate)[0].clamp(-1, 1)
        return (wav * 32767).round().to(torch.int16).numpy()

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = self.rng(i)
        k = int(rng.choice(len(self.utts), p=self.weights))
        audio = self.cache[k] if self.cache is not None else self._load(self.utts[k])
        if len(audio) <= self.segment:
            audio = np.pad(audio, (0, self.segment - len(audio)))
        start = int(rng.integers(0, len(audio) - self.segment + 1))
        seg = torch.from_numpy(audio[start : start + self.segment].astype(np.float32) / 32767)
        gain = 10 ** (rng.uniform(-6, 3) / 20)  # level augmentation: the codec sees many loudnesses
        return (seg * gain).clamp(-1, 1).unsqueeze(0)


def codec_training_sets(hparams: dict, sample_rate: int) -> tuple[RandomSegments, ItemList]:
    """What the codec and vocoder recipes train and score on, from their YAML keys.

    Train: an epoch of random crops (`segment_seconds`, `steps_per_epoch` x `batch_size`) of
    `train_manifests`, balanced by source and speaker (`source_shares`, one per manifest).
    Dev: `(set name, waveform)` items, a fixed subset of `n_dev_utts` whole utterances of each set
    in `dev_sets` (unseen voices: the recipes select on these) and `seen_dev_sets` (reported apart).
    """
    sources = [read_manifests([p], min_duration=0.5) for p in hparams["train_manifests"]]
    train = RandomSegments(
        [u for utts in sources for u in utts],
        segment_samples=int(hparams["segment_seconds"] * sample_rate),
        sample_rate=sample_rate,
        n_items=hparams["steps_per_epoch"] * hparams["batch_size"],
        seed=hparams["seed"],
        weights=balanced_weights(sources, hparams.get("source_shares")),
    )
    return train, ItemList(dev_items(hparams, sample_rate))


def dev_items(hparams: dict, sample_rate: int, n_utts: int | None = None) -> list[tuple[str, torch.Tensor]]:
    """`(set name, waveform [1, T])` for a fixed subset of `n_utts` (default `n_dev_utts`) utterances
    of each set in `dev_sets` and then `seen_dev_sets`. Clips that PESQ cannot score against
    themselves (its voice-activity detector finds no speech in some 1 s clips) are left out."""
    items = []
    for name, path in {**hparams["dev_sets"], **(hparams.get("seen_dev_sets") or {})}.items():
        audio = [load_audio(u.path, sample_rate) for u in read_manifests([path])]
        audio = [a for a in audio if pesq_scorable(a[0].numpy(), sample_rate)]
        items += [(name, audio[i]) for i in fixed_subset(len(audio), n_utts or hparams["n_dev_utts"])]
    return items


def pesq_scorable(wav: np.ndarray, sample_rate: int) -> bool:
    try:
        pesq_wb(wav, wav, sample_rate)
    except ValueError:
        return False
    return True


def dev_summary(scores: list[tuple[str, float, float]], selection_sets: list[str]) -> dict[str, float]:
    """Per-set mean PESQ-wb and STOI of `(set, pesq, stoi)` rows, plus `pesq_wb`/`stoi`: the mean over
    the `selection_sets` (unseen voices, each set weighing the same), which is what checkpoints are chosen by."""
    out: dict[str, float] = {}
    for name in dict.fromkeys(s for s, _, _ in scores):
        rows = [(p, q) for s, p, q in scores if s == name]
        out[f"{name}_pesq_wb"] = float(np.mean([p for p, _ in rows]))
        out[f"{name}_stoi"] = float(np.mean([q for _, q in rows]))
    out["pesq_wb"] = float(np.mean([out[f"{s}_pesq_wb"] for s in selection_sets]))
    out["stoi"] = float(np.mean([out[f"{s}_stoi"] for s in selection_sets]))
    return out
