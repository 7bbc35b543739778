"""Enhancement training data: noisy/clean pairs read from the token cache as items
(`enhance_items`: id, speaker, noisy [K, T], codes [K, T] (clean)) and batches of aligned random
crops (`PairBatches`)."""

from __future__ import annotations

from pathlib import Path

from speechtok.data.manifest import read_manifest
from speechtok.data.segments import EpochSeeded
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


__all__ = ["PairBatches", "crop_rows", "enhance_items"]
