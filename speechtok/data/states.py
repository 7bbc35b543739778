"""Cached teacher states of a manifest's utterances, for fitting and training semantic tokenizers.

Whisper's encoder is the costly part of a semantic codec; its pooled states are computed once per
utterance and kept as float16 in one `.npz` per manifest (utterance IDs, offsets, states), so the
k-means fit, the codes of every utterance and the decoder's training data all read the cache.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from speechtok.data.audio import load_audio
from speechtok.data.manifest import read_manifest


class StateCache:
    """Pooled states per utterance ID of one manifest: `cache[uid]` -> [F, D] float16."""

    def __init__(self, path: str | Path) -> None:
        data = np.load(path)
        self.path, self.ids = Path(path), [str(i) for i in data["ids"]]
        self.offsets, self.states = data["offsets"], data["states"]
        self.index = {uid: k for k, uid in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, uid: str) -> np.ndarray:
        k = self.index[uid]
        return self.states[self.offsets[k] : self.offsets[k + 1]]

    @staticmethod
    def build(codec, manifest: str | Path, path: str | Path, log_every: int = 200) -> StateCache:
        """Compute (or reuse, if `path` exists) the pooled teacher states of every utterance in
        `manifest` with `codec.pooled_states`. Unreadable clips are named on stderr and left out."""
        path = Path(path)
        if path.exists():
            return StateCache(path)
        utts, ids, chunks, start = read_manifest(manifest), [], [], time.time()
        for k, u in enumerate(utts):
            try:
                wav = load_audio(u.path, codec.sample_rate)[0].numpy()
            except Exception as exc:  # a malformed clip in a corpus must not stop the cache
                print(f"skipped {u.path}: {exc}", file=sys.stderr)
                continue
            n = len(wav) // codec.hop_length
            if n == 0:
                continue
            ids.append(u.ID)
            chunks.append(codec.pooled_states(wav[: n * codec.hop_length]).astype(np.float16))
            if log_every and (k + 1) % log_every == 0:
                print(f"{Path(manifest).name}: {k + 1}/{len(utts)} in {time.time() - start:.0f} s", flush=True)
        offsets = np.cumsum([0] + [len(c) for c in chunks])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, ids=np.asarray(ids), offsets=offsets, states=np.concatenate(chunks))
        tmp.replace(path)
        return StateCache(path)


def cached_states(codec, manifests, root: str | Path) -> dict[str, StateCache]:
    """`StateCache` of each manifest, by its path as given, under `root/<teacher digest>_<rate>hz/`:
    every recipe reading the same teacher at the same frame rate shares one cache."""
    folder = Path(root) / f"{codec.teacher_digest}_{int(codec.frame_rate)}hz"
    return {str(p): StateCache.build(codec, p, folder / f"{Path(p).stem}.npz") for p in manifests}
