"""Training data for token LMs, task-independent: a corpus tokenised once into a token cache (one
`.npz` per audio file, mirroring each manifest's audio folder; `encode_folders`), read back
(`token_paths`, `load_codes`), and rows collated into right-padded batches (`collate`,
`fixed_batches`). The task-specific parts are `speechtok.tts.data` and `speechtok.enhance.data`;
`recipes/lm/train.py` wires them.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from speechtok.data.audio import load_audio_with_sr, resample
from speechtok.data.manifest import read_manifest
from speechtok.data.segments import EpochSeeded
from speechtok.errors import cannot
from speechtok.tokens import TokenFile, TokenFileError, codec_hash, load_tokens, save_tokens


# --- the token cache ----------------------------------------------------------------------
def token_folders(groups: list[list[str]], codec_name: str, cache: Path) -> list[tuple[Path, Path, list[str]]]:
    """(audio folder, its token folder, files) for each group of files: the folder holding them all."""
    out = []
    for paths in groups:
        if paths:
            root = Path(os.path.commonpath([str(Path(p).parent) for p in paths]))
            dest = cache / Path(codec_name).name / f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:8]}"
            out.append((root, dest, paths))
    return out


def token_names(paths: Iterable[str | Path], root: Path) -> dict[str, str]:
    """Audio path -> its token file's name under the token folder (without .npz): the path relative
    to `root` without its extension, or with it when two files would share that name (a.wav, a.flac),
    as `speechtok encode` names them."""
    rels = {str(p): Path(p).relative_to(root) for p in dict.fromkeys(str(p) for p in paths)}
    clash = {s for s, n in Counter(r.with_suffix("").as_posix() for r in rels.values()).items() if n > 1}
    return {
        p: (r.as_posix() if r.with_suffix("").as_posix() in clash else r.with_suffix("").as_posix())
        for p, r in rels.items()
    }


class _Reads(torch.utils.data.Dataset):
    """Item i: (waveform [T] at `sample_rate`, the file's own rate, None) or (None, 0, reason)."""

    def __init__(self, paths: list[str], sample_rate: int) -> None:
        self.paths, self.sample_rate = paths, sample_rate

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            wav, sr = load_audio_with_sr(self.paths[i])
            return resample(wav, sr, self.sample_rate)[0], sr, None
        except Exception as exc:  # reported per file; the rest go on
            return None, 0, f"{type(exc).__name__}: {exc}"


def _identity(x):
    return x


def encode_files(codec, jobs: list[tuple[str, Path]], workers: int = 0) -> list[tuple[str, str]]:
    """Tokenise each (audio path, token file) job with `codec` (all its codebooks), skipping token
    files already there for this codec; `workers` processes read the audio (0: this process).
    Returns the (path, reason) of each file that could not be read or encoded."""
    want, k = codec_hash(codec), codec.max_codebooks
    todo = [(src, out) for src, out in jobs if not _done(out, want, k)]
    if not todo:
        return []
    reads = _Reads([src for src, _ in todo], codec.sample_rate)
    loader = torch.utils.data.DataLoader(
        reads, batch_size=None, num_workers=min(workers, len(todo)), collate_fn=_identity
    )
    failed = []
    with torch.inference_mode():
        for (src, out), (wav, sr, err) in zip(todo, loader):
            if err is None:
                try:
                    codes = codec.encode(wav.view(1, 1, -1).to(codec.device))[0]
                    save_tokens(out, TokenFile.from_codec(codec, codes, wav.shape[-1], sr))
                except Exception as exc:
                    err = f"{type(exc).__name__}: {exc}"
            if err is not None:
                failed.append((src, err))
    return failed


def _done(path: Path, want_hash: str, k: int) -> bool:
    try:
        tf = load_tokens(path)
    except TokenFileError:
        return False
    return tf.codec_hash == want_hash and tf.n_codebooks == k


def encode_folders(
    groups: list[list[str]], codec, cache: Path, codec_name: str | None = None, workers: int = 0
) -> list[tuple[str, str]]:
    """Tokenise the files of each group once into its token folder under `cache` (files done
    before are skipped, so an interrupted run resumes); `codec_name` (default codec.name) names the
    cache's codec folder. A file that fails is named in a warning and returned as (path, reason)."""
    failed = []
    for root, dest, paths in token_folders(groups, codec_name or codec.name, cache):
        names = token_names(paths, root)
        bad = encode_files(codec, [(p, dest / f"{n}.npz") for p, n in names.items()], workers)
        for path, reason in bad:
            print(f"warning: could not encode {path}: {reason}", file=sys.stderr)
        failed += bad
    return failed


def token_paths(groups: list[list[str]], codec_name: str, cache: Path) -> dict[str, Path]:
    """Audio path -> its token file, for the files that were encoded."""
    out = {}
    for root, dest, paths in token_folders(groups, codec_name, cache):
        for p in paths:
            rel = Path(p).relative_to(root)
            for name in (rel.with_suffix("").as_posix(), rel.as_posix()):  # the second after a name clash
                if (dest / f"{name}.npz").exists():
                    out[p] = dest / f"{name}.npz"
                    break
    return out


def load_codes(path: Path, want_hash: str) -> torch.Tensor | None:
    """Codes [K, F] (int16) of a token file; None (with a warning) when it is unreadable, an error
    when another codec made it."""
    try:
        tf = load_tokens(path)
    except TokenFileError as exc:
        print(f"warning: {exc}; skipped", file=sys.stderr)
        return None
    if tf.codec_hash != want_hash:
        raise TokenFileError(
            cannot("use token file", path, f"made by another codec ('{tf.codec}'); clear the token cache")
        )
    return torch.from_numpy(tf.codes.astype(np.int16))


def audio_groups(task: str, manifests) -> list[list[str]]:
    """The audio files of each manifest (and, for enhancement, their clean references)."""
    groups = [[u.path for u in read_manifest(m)] for m in manifests]
    if task == "enhance":
        groups += [
            [u.extra.get("clean_path", "") for u in read_manifest(m) if u.extra.get("clean_path")] for m in manifests
        ]
    return groups


# --- batches ------------------------------------------------------------------------------
def collate(rows: list[dict], group: str = "") -> dict:
    """Right-padded tensors; rows hold src ([L] ids or [K, L] codes), codes [K, T], prompt_len
    and, for TTS with durations, durations [L] (and a voice embedding [dim] with a speaker encoder)."""
    src = [r["src"].T if r["src"].dim() == 2 else r["src"] for r in rows]  # pad over time
    srcp = pad_sequence(src, batch_first=True)
    extra = {}
    if "durations" in rows[0]:
        extra["durations"] = pad_sequence([r["durations"] for r in rows], batch_first=True)
    if "voice" in rows[0]:
        extra["voice"] = torch.stack([r["voice"] for r in rows])
    return {
        **extra,
        "src": srcp.transpose(1, 2).long() if srcp.dim() == 3 else srcp.long(),
        "src_len": torch.tensor([len(s) for s in src]),
        "codes": pad_sequence([r["codes"].T for r in rows], batch_first=True).transpose(1, 2).long(),
        "code_len": torch.tensor([r["codes"].shape[-1] for r in rows]),
        "prompt_len": torch.tensor([r.get("prompt_len", 0) for r in rows]),
        "group": group,
    }


def fixed_batches(rows: list[dict], group: str, max_batch_frames: int) -> list[dict]:
    """Dev rows in order, packed into batches of at most max_batch_frames padded frames."""
    batches, cur = [], []
    for r in sorted(rows, key=lambda r: r["codes"].shape[-1]):
        if cur and (len(cur) + 1) * r["codes"].shape[-1] > max_batch_frames:
            batches.append(collate(cur, group))
            cur = []
        cur.append(r)
    return batches + ([collate(cur, group)] if cur else [])


def code_items(manifests, codec, cache: Path, codec_name: str | None = None) -> list[dict]:
    """An item (id, codes [K, T]) per manifest row whose token file is in `cache`: what a prior learns."""
    groups = audio_groups("prior", manifests)
    tokens, want = token_paths(groups, codec_name or codec.name, Path(cache)), codec_hash(codec)
    items = []
    for u in (u for m in manifests for u in read_manifest(m)):
        codes = load_codes(tokens[u.path], want) if u.path in tokens else None
        if codes is not None and codes.shape[-1] > 0:
            items.append({"id": u.ID, "speaker": u.speaker, "codes": codes})
    return items


class CodeCrops(EpochSeeded):
    """Item i is a batch of `batch_size` random crops of `crop_frames` (source-free rows), items
    drawn in proportion to their length, from (seed, epoch, i)."""

    def __init__(self, items: list[dict], n_batches: int, batch_size: int, crop_frames: int, seed: int) -> None:
        super().__init__(n_batches, seed)
        self.items, self.batch_size, self.crop = items, batch_size, crop_frames
        lengths = np.array([r["codes"].shape[-1] for r in items], dtype=np.float64)
        self.weights = lengths / lengths.sum()

    def __getitem__(self, i: int) -> dict:
        rng, rows = self.rng(i), []
        for j in rng.choice(len(self.items), size=self.batch_size, p=self.weights):
            codes = self.items[int(j)]["codes"]
            s = int(rng.integers(max(codes.shape[-1] - self.crop, 0) + 1))
            rows.append({"src": torch.zeros(0, dtype=torch.long), "codes": codes[:, s : s + self.crop]})
        return collate(rows)


__all__ = [
    "CodeCrops",
    "audio_groups",
    "code_items",
    "collate",
    "encode_files",
    "encode_folders",
    "fixed_batches",
    "load_codes",
    "token_folders",
    "token_names",
    "token_paths",
]
