"""Random fixed-length crops of speech for codec and vocoder training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from speechtok.data.audio import load_audio
from speechtok.data.manifest import Utterance, read_manifest


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


class RandomSegments(EpochSeeded):
    """`n_items` crops of `segment_samples`, drawn over utterances in proportion to duration.

    Audio is decoded once and kept in memory as int16 (2 hours of 16 kHz speech is ~230 MB),
    which keeps a CPU-bound data loader from decoding FLAC every step.
    """

    def __init__(
        self, utts: list[Utterance], segment_samples: int, sample_rate: int, n_items: int,
        seed: int = 0, preload: bool = True,
    ) -> None:
        if not utts:
            raise ValueError("RandomSegments: no utterances (check the manifests)")
        super().__init__(n_items, seed)
        self.utts, self.segment, self.sample_rate = utts, segment_samples, sample_rate
        self.cache: list[np.ndarray] | None = None
        if preload:
            self.cache = [self._load(u) for u in utts]
        self.weights = np.array([u.duration for u in utts], dtype=np.float64)
        self.weights /= self.weights.sum()

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
    """What the codec and vocoder recipes train and score on, from their YAML keys: an epoch of
    random crops (`segment_seconds`, `steps_per_epoch` x `batch_size`) of `train_manifests`,
    and a fixed subset (`n_dev_utts`) of whole `dev_manifests` utterances."""
    train = RandomSegments(
        read_manifests(hparams["train_manifests"], min_duration=0.5),
        segment_samples=int(hparams["segment_seconds"] * sample_rate), sample_rate=sample_rate,
        n_items=hparams["steps_per_epoch"] * hparams["batch_size"], seed=hparams["seed"],
    )
    dev = read_manifests(hparams["dev_manifests"])
    dev = [dev[i] for i in fixed_subset(len(dev), hparams["n_dev_utts"])]
    return train, ItemList([load_audio(u.path, sample_rate) for u in dev])
