"""Enhancement training data: noisy/clean pairs read from the token cache as items
(`enhance_items`: id, speaker, noisy [K, T], codes [K, T] (clean)) and batches of aligned random
crops (`PairBatches`), or pairs mixed on the fly and tokenised per batch (`MixedPairBatches`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from speechtok.data.manifest import Utterance, read_manifest
from speechtok.data.noise import NoisyMixer
from speechtok.data.segments import EpochSeeded, balanced_weights
from speechtok.lm.data import audio_groups, collate, load_codes, token_paths
from speechtok.tokens import codec_hash


def enhance_items(manifests, codec, cache: Path, codec_name: str | None = None) -> list[dict]:
    """An item per manifest row (noisy `path`, `clean_path` column) whose noisy and clean token
    files are in `cache` and have the same shape (`speechtok.lm.data.encode_folders`; `codec_name`
    as given there)."""
    utts = [u for m in manifests for u in read_manifest(m)]
    for u in utts:
        if not u.extra.get("clean_path"):
            raise ValueError(f"{u.ID}: enhancement manifests need a clean_path column")
    tokens = token_paths(audio_groups("enhance", manifests), codec_name or codec.name, Path(cache))
    items, want = [], codec_hash(codec)
    for u in utts:
        if u.path not in tokens or u.extra["clean_path"] not in tokens:
            continue
        noisy, clean = load_codes(tokens[u.path], want), load_codes(tokens[u.extra["clean_path"]], want)
        if noisy is None or clean is None or noisy.shape != clean.shape:
            continue
        items.append({"id": u.ID, "speaker": u.speaker, "noisy": noisy, "codes": clean})
    return items


def crop_rows(items: list[dict], crop_frames: int) -> list[dict]:
    """The first `crop_frames` of each pair as a row (source: noisy, target: clean), e.g. for dev batches."""
    return [{"src": r["noisy"][:, :crop_frames], "codes": r["codes"][:, :crop_frames]} for r in items]


class PairBatches(EpochSeeded):
    """Item i is a batch of aligned random crops (noisy -> clean) drawn from (seed, epoch, i)."""

    def __init__(self, items, n_batches, batch_size, crop_frames, seed):
        super().__init__(n_batches, seed)
        self.items, self.batch_size, self.crop = items, batch_size, crop_frames

    def __getitem__(self, i: int) -> dict:
        rng = self.rng(i)
        rows = []
        for j in rng.choice(len(self.items), size=self.batch_size):
            r = self.items[int(j)]
            s = int(rng.integers(max(r["codes"].shape[-1] - self.crop, 0) + 1))
            rows.append({"src": r["noisy"][:, s : s + self.crop], "codes": r["codes"][:, s : s + self.crop]})
        return collate(rows)


class MixedPairBatches(EpochSeeded):
    """Item i is a batch of noisy/clean pairs mixed on the fly by `mixer` and tokenised by `codec`,
    so training never sees the same pair twice. Pair j of batch i in an epoch takes clean
    utterance c with probability `weights[c]` (`balanced_weights`: by source and speaker) and the
    mixer's item `k * len(pool) + c`, k counting pairs over epochs, which draws its own noise,
    SNR, room and crop. A random gain in `gain_db` scales both sides, so the enhancer meets
    inputs at many levels (dMel's levels are absolute). A pair the mixer cannot make (a silent
    crop) is replaced by the next draw, up to `DRAWS` of them."""

    DRAWS = 8

    def __init__(self, mixer: NoisyMixer, weights, codec, n_batches: int, batch_size: int, seed: int, gain_db=(-10, 0)):
        super().__init__(n_batches, seed)
        if mixer.segment is None:
            raise ValueError("MixedPairBatches: the mixer needs segment_seconds (fixed-length crops)")
        self.mixer, self.codec, self.batch_size, self.gain_db = mixer, codec, batch_size, tuple(gain_db)
        self.weights = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
        if len(self.weights) != len(mixer.clean):
            raise ValueError(f"MixedPairBatches: {len(self.weights)} weights for {len(mixer.clean)} clean utterances")

    def pair(self, k: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.mixer.clean)
        for attempt in range(self.DRAWS):
            c = int(rng.choice(n, p=self.weights))
            try:
                item = self.mixer[(k * self.DRAWS + attempt) * n + c]
            except ValueError:
                continue
            gain = 10.0 ** (rng.uniform(*self.gain_db) / 20.0)
            return item["noisy"] * gain, item["clean"] * gain
        raise RuntimeError(f"MixedPairBatches: no usable pair in {self.DRAWS} draws for pair {k}")

    def __getitem__(self, i: int) -> dict:
        rng = self.rng(i)
        first = (self.epoch * self.n_items + i) * self.batch_size
        noisy, clean = zip(*(self.pair(first + j, rng) for j in range(self.batch_size)))
        codes = self.codec.encode(torch.stack(noisy + clean))
        b = self.batch_size
        return collate([{"src": codes[j], "codes": codes[b + j]} for j in range(b)])


def mixed_pairs(
    clean: list[list[Utterance]], shares, noise: list[Utterance], rirs: list[Utterance], codec, crop_frames: int, **mix
) -> tuple[NoisyMixer, np.ndarray]:
    """A NoisyMixer over the `clean` sources (lists of utterances; crops of `crop_frames` codec
    frames) with `noise` and `rirs`, and the sampling weight of each clean utterance (`shares` per
    source, balanced by speaker); `mix` are NoisyMixer options (snr_range, reverb_prob, noise_kinds, seed)."""
    pool = [u for source in clean for u in source]
    mixer = NoisyMixer(
        pool,
        noise,
        rirs=rirs,
        sample_rate=codec.sample_rate,
        segment_seconds=crop_frames * codec.hop_length / codec.sample_rate,
        num_items=2**62,
        **mix,
    )
    return mixer, balanced_weights(clean, shares)


__all__ = ["MixedPairBatches", "PairBatches", "crop_rows", "enhance_items", "mixed_pairs"]
