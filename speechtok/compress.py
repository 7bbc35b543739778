"""Entropy-coded token files (`.stz`): a token file's codes range-coded under a small causal prior,
losslessly, as EnCodec's `.ecdc` files are; the same for every codec family.

The prior (`TokenPrior`) is a source-free `TokenLM` over one codec's codes, trained by
`recipes/lm/train.py recipes/lm/prior/hparams/cpu.yaml` (`--codec`); the coder is `constriction`'s range
coder. Both directions compute the prior's probabilities the same way, so `decompress` sees exactly
the numbers `compress` saw: one thread, float32, step by step with a KV cache, over windows of
`window` frames that are coded independently in fixed groups (the grouping depends on the file's
length only), the probabilities rounded to multiples of 2^-PROB_BITS.

An `.stz` file is `MAGIC` (with the format version), a header of `HEADER` (the prior's hash; the
token file's frames, samples and source sample rate) and the codec's name, then the coder's
32-bit words: 29 bytes plus the name, as the prior (named by its hash) holds the rest of the
token file's metadata.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import constriction
import numpy as np
import torch

from speechtok.codecs import PRETRAINED_DIR
from speechtok.data.noise import one_thread
from speechtok.errors import cannot
from speechtok.lm.checkpoint import load_lm
from speechtok.lm.model import TokenLM
from speechtok.tokens import TokenFile, TokenFileError, codes_dtype, save_tokens

MAGIC = b"STZ\x01"
HEADER = struct.Struct("<8sIQIB")  # prior hash, n_frames, n_samples, orig_sample_rate, len(codec name)
PROB_BITS = 24
GROUP = 32  # windows run as one batch


class StzError(TokenFileError):
    """A bad, truncated or mismatched `.stz` file; the message names the file."""


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class TokenPrior:
    """Probabilities of a codec's codes, frame by frame, from a source-free TokenLM (`lm`).
    `name` and `hash` (of its weights) go into every file it codes, so a file is only ever
    decoded by the prior that coded it."""

    def __init__(self, lm: TokenLM, codec: dict, name: str, weights_hash: str) -> None:
        if lm.cfg.src_codebooks or lm.cfg.aligned_source or lm.cfg.durations:
            raise ValueError("TokenPrior: the model must be source-free (task 'prior')")
        self.lm, self.codec, self.name, self.hash = lm.float().eval(), codec, name, weights_hash
        self.codec_hash = codec["hash"]
        p = lm.pattern
        self.window = lm.cfg.transformer.max_len - 1 - p.tail  # frames per window: sep + steps fit max_len

    @classmethod
    def load(cls, name_or_path: str | Path) -> TokenPrior:
        """A bundled prior by name ('prior-dmel-16k') or a prior folder."""
        path = Path(name_or_path)
        if not path.is_dir() and (PRETRAINED_DIR / str(name_or_path)).is_dir():
            path = PRETRAINED_DIR / str(name_or_path)
        lm, meta = load_lm(path)
        if meta["task"] != "prior":
            raise ValueError(cannot("use prior", path, f"it is a {meta['task']!r} model, not a 'prior'"))
        return cls(lm, meta["codec"], path.name, _file_hash(path / "model.safetensors"))

    @classmethod
    def bundled(cls, folder: Path = PRETRAINED_DIR) -> list[Path]:
        return [p for p in sorted(folder.glob("prior-*")) if (p / "config.json").is_file()]

    @classmethod
    def for_codec(cls, tf: TokenFile, folder: Path = PRETRAINED_DIR) -> TokenPrior:
        """The bundled prior for the codec that made `tf` (same token config hash)."""
        for cand in cls.bundled(folder):
            if json.loads((cand / "config.json").read_text())["codec"]["hash"] == tf.codec_hash:
                return cls.load(cand)
        raise ValueError(f"no bundled prior for codec '{tf.codec}' (hash {tf.codec_hash}); pass --prior FOLDER")

    @classmethod
    def with_hash(cls, digest: str, path: Path | str = "<bytes>", folder: Path = PRETRAINED_DIR) -> TokenPrior:
        """The bundled prior whose weights hash to `digest` (the one a `.stz` file names)."""
        for cand in cls.bundled(folder):
            if _file_hash(cand / "model.safetensors") == digest:
                return cls.load(cand)
        raise StzError(
            cannot("decompress", path, f"coded by prior {digest}, which is not bundled; pass --prior FOLDER")
        )

    @torch.inference_mode()
    def code(self, codes: np.ndarray | None, n_frames: int, coder) -> np.ndarray:
        """Codes [K, n_frames]. Given `codes` (compress) each is encoded into `coder` (a
        RangeEncoder); without (decompress) each is decoded from it (a RangeDecoder)."""
        p = self.lm.pattern
        out = np.zeros((p.n_codebooks, n_frames), dtype=np.int64)
        starts = list(range(0, n_frames, self.window))
        with one_thread():
            for g in range(0, len(starts), GROUP):
                group = starts[g : g + GROUP]
                lengths = torch.tensor([min(self.window, n_frames - s) for s in group])
                W = int(lengths.max())
                chunk = torch.zeros(len(group), p.n_codebooks, W, dtype=torch.long)
                if codes is not None:
                    for i, s in enumerate(group):
                        chunk[i, :, : lengths[i]] = torch.from_numpy(codes[:, s : s + int(lengths[i])].astype(np.int64))
                chunk = self._code_windows(chunk, lengths, coder, codes is not None)
                for i, s in enumerate(group):
                    out[:, s : s + int(lengths[i])] = chunk[i, :, : lengths[i]].numpy()
        return out

    def _code_windows(self, chunk: torch.Tensor, lengths: torch.Tensor, coder, known: bool) -> torch.Tensor:
        lm, p = self.lm, self.lm.pattern
        B, W = chunk.shape[0], chunk.shape[-1]
        S = int(p.n_steps(W))
        frame, book = p.layout(S)  # [S, H]
        real = (frame[None] >= 0) & (frame[None] < lengths[:, None, None])  # [B, S, H]: cells holding a code
        steps = p.interleave(chunk, lengths) if known else torch.full((B, S, p.n_heads), p.pad_id)
        lo = p.offset(book)  # [S, H]
        content = lo[..., None] + torch.arange(p.codebook_size)  # [S, H, size]: each cell's code ids
        family = constriction.stream.model.Categorical(perfect=False)
        cache, logits = lm.prior_start(B, S)
        for s in range(S):
            logits = logits.gather(-1, content[s].expand(B, -1, -1))  # [B, H, size]
            m = real[:, s]
            probs = torch.softmax(logits[m].double(), -1).numpy()
            probs = np.maximum(np.round(probs * 2.0**PROB_BITS), 1.0) / 2.0**PROB_BITS
            cell = steps[:, s]
            if known:
                symbols = (cell - lo[s])[m].numpy().astype(np.int32)
                coder.encode(symbols, family, probs)
            else:
                symbols = torch.from_numpy(np.asarray(coder.decode(family, probs), dtype=np.int64))
                cell[m] = symbols + lo[s].expand(B, -1)[m]
            cell[~m] = p.pad_id
            if s + 1 < S:
                logits = lm.prior_step(cache, cell)
        return p.deinterleave(steps, W)


def compress_tokens(tf: TokenFile, prior: TokenPrior) -> bytes:
    """The `.stz` bytes of a token file."""
    if tf.codec_hash != prior.codec_hash:
        raise ValueError(f"prior '{prior.name}' models another codec's codes than '{tf.codec}' (hash {tf.codec_hash})")
    if tf.n_codebooks != prior.lm.pattern.n_codebooks:
        raise ValueError(
            f"prior '{prior.name}' models {prior.lm.pattern.n_codebooks} codebooks, the file has {tf.n_codebooks}"
        )
    encoder = constriction.stream.queue.RangeEncoder()
    prior.code(tf.codes, tf.n_frames, encoder)
    name = tf.codec.encode()
    head = HEADER.pack(bytes.fromhex(prior.hash), tf.n_frames, tf.n_samples, tf.orig_sample_rate, len(name))
    return MAGIC + head + name + encoder.get_compressed().astype("<u4").tobytes()


def read_header(data: bytes, path: Path | str) -> tuple[dict, np.ndarray]:
    """(header, coder words) of `.stz` bytes; StzError naming `path` when they are not one."""
    if data[:3] != MAGIC[:3]:
        raise StzError(cannot("read", path, "not a speechtok .stz file (bad magic bytes)"))
    if data[3:4] != MAGIC[3:]:
        raise StzError(cannot("read", path, f".stz format {data[3]} is not this speechtok's ({MAGIC[3]})"))
    start = len(MAGIC) + HEADER.size
    if len(data) < start:
        raise StzError(cannot("read", path, "truncated .stz file (no header)"))
    digest, n_frames, n_samples, orig_sr, n_name = HEADER.unpack(data[len(MAGIC) : start])
    name, body = data[start : start + n_name], data[start + n_name :]
    if len(name) < n_name or len(body) % 4:
        raise StzError(cannot("read", path, "truncated .stz file"))
    header = {
        "prior_hash": digest.hex(),
        "n_frames": n_frames,
        "n_samples": n_samples,
        "orig_sample_rate": orig_sr,
        "codec": name.decode(errors="replace"),
    }
    return header, np.frombuffer(body, dtype="<u4").astype(np.uint32)


def decompress_tokens(data: bytes, prior: TokenPrior | None = None, path: Path | str = "<bytes>") -> TokenFile:
    """The token file that `compress_tokens` coded, with `prior` (default: the bundled prior whose
    hash the file names)."""
    header, words = read_header(data, path)
    if prior is None:
        prior = TokenPrior.with_hash(header["prior_hash"], path)
    if prior.hash != header["prior_hash"]:
        problem = f"it was coded by prior {header['prior_hash']}, not by '{prior.name}' ({prior.hash})"
        raise StzError(cannot("decompress", path, problem))
    decoder = constriction.stream.queue.RangeDecoder(words)
    try:
        codes = prior.code(None, header["n_frames"], decoder)
    except Exception as exc:  # the coder runs out of words
        raise StzError(cannot("decompress", path, f"corrupt or truncated coded data ({exc})")) from exc
    if decoder.maybe_exhausted() is False:
        raise StzError(cannot("decompress", path, "coded data left over (corrupt file)"))
    c = prior.codec
    return TokenFile(
        codes=codes.astype(codes_dtype(c["codebook_size"])),
        codec=header["codec"],
        codec_hash=c["hash"],
        codec_config=c["identity"],
        sample_rate=int(c["sample_rate"]),
        frame_rate=float(c["frame_rate"]),
        codebook_size=int(c["codebook_size"]),
        n_samples=header["n_samples"],
        orig_sample_rate=header["orig_sample_rate"],
    )


def write_atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def is_compressed_from(stz: Path, tf: TokenFile, prior: TokenPrior | None) -> bool:
    """Whether `stz` is a complete `.stz` of the token file `tf` (by `prior`, if given): a
    compression run skips it when resumed. Files are written atomically, so one that reads is whole."""
    try:
        header, _ = read_header(stz.read_bytes(), stz)
    except (TokenFileError, OSError):
        return False
    same = (header["codec"], header["n_frames"], header["n_samples"]) == (tf.codec, tf.n_frames, tf.n_samples)
    return same and (prior is None or header["prior_hash"] == prior.hash)


def decompress_file(src: Path, dst: Path, prior: TokenPrior | None = None, loaded: dict | None = None) -> Path:
    """`src` (.stz) back into the token file `dst`; `loaded` caches bundled priors by hash across files."""
    if not src.is_file():
        raise StzError(cannot("decompress", src, "file does not exist"))
    data = src.read_bytes()
    if prior is None:
        digest = read_header(data, src)[0]["prior_hash"]
        loaded = {} if loaded is None else loaded
        if digest not in loaded:
            loaded[digest] = TokenPrior.with_hash(digest, src)
        prior = loaded[digest]
    return save_tokens(dst, decompress_tokens(data, prior, src))


__all__ = [
    "MAGIC",
    "StzError",
    "TokenPrior",
    "compress_tokens",
    "decompress_file",
    "decompress_tokens",
    "is_compressed_from",
    "read_header",
    "write_atomic",
]
