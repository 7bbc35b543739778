"""Token files: codec codes plus what is needed to decode them and check they still match.

A token file is an `.npz` (readable with `numpy.load(path)`, no pickles) holding `codes`
[K, F] in the smallest unsigned dtype that fits the codebook, the codec's name, a short
hash of its family+config (so codes are never decoded by a different codec), sample and
frame rates, the length in samples at the codec's rate and the source file's sample rate.
A shard file holds many utterances: their codes concatenated along time, with `ids` and
`offsets`. Files are written deterministically (sorted entries, fixed timestamps, fixed
compression) and atomically (temp file, then rename), so reruns give identical bytes and a
killed run never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechtok.errors import cannot

TOKEN_FORMAT_VERSION = 1
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_META = ("codec", "codec_hash", "codec_config", "format_version", "sample_rate", "frame_rate", "codebook_size")


class TokenFileError(ValueError):
    """Missing, truncated, corrupt or mismatched token file; the message names the file."""


def codec_identity(codec) -> str:
    """Canonical JSON of the codec's family and token config: what the hash covers.

    Only what defines the token space counts, so codecs that share an encoder (dMel with a
    vocoder or with Griffin-Lim) read each other's token files.
    """
    return json.dumps({"family": codec.family, "config": codec.token_config()}, sort_keys=True, separators=(",", ":"))


def config_hash(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def codec_hash(codec) -> str:
    return config_hash(codec_identity(codec))


def codes_dtype(codebook_size: int) -> np.dtype:
    """Smallest unsigned integer dtype holding values 0..codebook_size-1."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if codebook_size - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


@dataclass
class TokenFile:
    """One utterance's codes [K, F] and the metadata to decode them."""

    codes: np.ndarray
    codec: str
    codec_hash: str
    codec_config: str
    sample_rate: int
    frame_rate: float
    codebook_size: int
    n_samples: int
    orig_sample_rate: int
    format_version: int = TOKEN_FORMAT_VERSION

    @classmethod
    def from_codec(cls, codec, codes, n_samples: int, orig_sample_rate: int) -> TokenFile:
        codes = np.asarray(codes.cpu() if hasattr(codes, "cpu") else codes)
        if not np.issubdtype(codes.dtype, np.integer):
            raise TokenFileError(f"codes must be integers, got {codes.dtype}")
        identity = codec_identity(codec)
        return cls(
            codes=codes.astype(codes_dtype(codec.codebook_size)),
            codec=str(codec.name),
            codec_hash=config_hash(identity),
            codec_config=identity,
            sample_rate=int(codec.sample_rate),
            frame_rate=float(codec.frame_rate),
            codebook_size=int(codec.codebook_size),
            n_samples=int(n_samples),
            orig_sample_rate=int(orig_sample_rate),
        )

    @property
    def n_codebooks(self) -> int:
        return self.codes.shape[0]

    @property
    def codec_family(self) -> str:
        """The family in the stored codec identity ('unknown' if it cannot be read)."""
        try:
            return str(json.loads(self.codec_config)["family"])
        except (ValueError, TypeError, KeyError):
            return "unknown"

    @property
    def n_frames(self) -> int:
        return self.codes.shape[1]

    @property
    def duration(self) -> float:
        return self.n_samples / self.sample_rate

    @property
    def bitrate(self) -> float:
        return self.n_codebooks * math.log2(self.codebook_size) * self.frame_rate

    def meta(self) -> dict:
        return {k: getattr(self, k) for k in _META}


# --- deterministic npz -----------------------------------------------------------------
def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write arrays as a deterministic .npz, atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    with zipfile.ZipFile(tmp, "w") as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            # C order always: equal arrays give equal bytes, whatever view or transpose they came from
            np.lib.format.write_array(buf, np.asarray(arrays[name], order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=1)  # ~15x faster than 6, files ~15% larger
    os.replace(tmp, path)
    return path


def read_npz(path: str | Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Load every array (verifying zip CRCs) or raise TokenFileError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise TokenFileError(cannot("read token file", path, "file does not exist"))
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # BadZipFile, EOFError, ValueError, zlib.error...
        raise TokenFileError(
            cannot("read token file", path, f"not a valid token file ({type(exc).__name__}: {exc})")
        ) from exc
    missing = [k for k in required if k not in arrays]
    if missing:
        raise TokenFileError(
            cannot("read token file", path, f"not a speechtok token file (missing {', '.join(missing)})")
        )
    version = int(arrays["format_version"])
    if version > TOKEN_FORMAT_VERSION:
        problem = f"token format version {version} is newer than this speechtok supports ({TOKEN_FORMAT_VERSION})"
        raise TokenFileError(cannot("read token file", path, f"{problem}; upgrade speechtok"))
    if config_hash(str(arrays["codec_config"])) != str(arrays["codec_hash"]):
        raise TokenFileError(
            cannot("read token file", path, "codec hash does not match the stored codec config (corrupt file)")
        )
    return arrays


def _meta_arrays(tf: TokenFile) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tf.meta().items()}


def _token_file(arrays: dict, codes: np.ndarray, n_samples, orig_sr) -> TokenFile:
    meta = {k: arrays[k].item() for k in _META}
    return TokenFile(codes=codes, n_samples=int(n_samples), orig_sample_rate=int(orig_sr), **meta)


def _check_codes(path: Path, arrays: dict) -> np.ndarray:
    """The file's codes, refused unless integers in [0, codebook_size) (never rounded)."""
    codes, size = arrays["codes"], int(arrays["codebook_size"])
    if not np.issubdtype(codes.dtype, np.integer):
        raise TokenFileError(
            cannot("read token file", path, f"codes are {codes.dtype}, not integers (corrupt or foreign file)")
        )
    if codes.ndim != 2:
        raise TokenFileError(cannot("read token file", path, f"codes must be [K, F], got shape {codes.shape}"))
    if codes.size and (codes.min() < 0 or codes.max() >= size):
        problem = f"codes lie in {codes.min()}..{codes.max()}, outside the codebook [0, {size})"
        raise TokenFileError(cannot("read token file", path, problem))
    return codes


def _check_frames(path: Path, tf: TokenFile, what: str = "") -> TokenFile:
    hop = tf.sample_rate / tf.frame_rate
    expected = math.ceil(tf.n_samples / hop)
    if tf.codes.ndim != 2 or tf.n_frames != expected:
        problem = (
            f"{what}codes shape {tf.codes.shape} does not match {tf.n_samples} samples ({expected} frames expected)"
        )
        raise TokenFileError(cannot("read token file", path, problem))
    return tf


# --- single-utterance files ------------------------------------------------------------
def save_tokens(path: str | Path, tf: TokenFile) -> Path:
    arrays = _meta_arrays(tf)
    arrays.update(codes=tf.codes, n_samples=np.array(tf.n_samples), orig_sample_rate=np.array(tf.orig_sample_rate))
    return write_npz(path, arrays)


def load_tokens(path: str | Path) -> TokenFile:
    """Read and validate a single-utterance token file."""
    path = Path(path)
    arrays = read_npz(path, _META + ("codes", "n_samples", "orig_sample_rate"))
    if "ids" in arrays:
        raise TokenFileError(
            cannot("read token file", path, f"it is a shard of {len(arrays['ids'])} utterances; use load_shard")
        )
    tf = _token_file(arrays, _check_codes(path, arrays), arrays["n_samples"], arrays["orig_sample_rate"])
    return _check_frames(path, tf)


# --- shards ----------------------------------------------------------------------------
def save_shard(path: str | Path, items: dict[str, TokenFile], failed: dict[str, str] | None = None) -> Path:
    """Many utterances of one codec in one file: codes concatenated on time, split by `offsets`.

    `failed` (id -> reason) records inputs that could not be encoded, so a resumed run knows
    the shard is complete and can still report them.
    """
    if not items:
        raise TokenFileError(cannot("write token shard", path, "it has no utterances"))
    ids, failed = sorted(items), failed or {}
    first = items[ids[0]]
    for i in ids:
        if items[i].codec_hash != first.codec_hash or items[i].n_codebooks != first.n_codebooks:
            raise TokenFileError(cannot("write token shard", path, f"'{i}' has a different codec or K than '{ids[0]}'"))
    lengths = [items[i].n_frames for i in ids]
    arrays = _meta_arrays(first)
    arrays.update(
        ids=np.array(ids),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        codes=np.concatenate([items[i].codes for i in ids], axis=1),
        n_samples=np.array([items[i].n_samples for i in ids], dtype=np.int64),
        orig_sample_rate=np.array([items[i].orig_sample_rate for i in ids], dtype=np.int64),
        failed_ids=np.array(sorted(failed), dtype=str),
        failed_reasons=np.array([failed[i] for i in sorted(failed)], dtype=str),
    )
    return write_npz(path, arrays)


def read_shard(path: str | Path) -> tuple[dict[str, TokenFile], dict[str, str]]:
    """A shard's utterances (id -> token file) and its recorded failures (id -> reason)."""
    path = Path(path)
    arrays = read_npz(
        path, _META + ("codes", "ids", "offsets", "n_samples", "orig_sample_rate", "failed_ids", "failed_reasons")
    )
    ids, off, codes = [str(i) for i in arrays["ids"]], arrays["offsets"], _check_codes(path, arrays)
    if len(off) != len(ids) + 1 or off[-1] != codes.shape[-1]:
        raise TokenFileError(cannot("read token file", path, "shard offsets do not match its codes"))
    items = {
        uid: _check_frames(
            path,
            _token_file(arrays, codes[:, off[j] : off[j + 1]], arrays["n_samples"][j], arrays["orig_sample_rate"][j]),
            f"'{uid}': ",
        )
        for j, uid in enumerate(ids)
    }
    return items, dict(zip(map(str, arrays["failed_ids"]), map(str, arrays["failed_reasons"])))


def load_shard(path: str | Path) -> dict[str, TokenFile]:
    return read_shard(path)[0]


def iter_tokens(path: str | Path) -> Iterator[tuple[str | None, TokenFile]]:
    """(None, file) for a single-utterance file, (id, file) per utterance for a shard."""
    path = Path(path)
    if is_shard(path):
        yield from load_shard(path).items()
    else:
        yield None, load_tokens(path)


def is_shard(path: str | Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return "ids.npy" in zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
