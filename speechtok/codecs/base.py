"""The interface every codec implements, and its on-disk format.

A codec maps mono audio [B, 1, T] at `sample_rate` to integer codes [B, K, F] at
`frame_rate` frames/s and back. A saved codec is a folder with `config.json` (family,
hyper-parameters, format version) and `model.safetensors`; loading never unpickles.
"""

from __future__ import annotations

import json
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from speechtok.errors import cannot

FORMAT_VERSION = 1


class CodecError(ValueError):
    """Bad codec input, name or checkpoint; the message says what and where."""


class Codec(nn.Module, ABC):
    """Base class: subclasses set `family`, implement `max_codebooks`, `_encode_frames`, `_decode`
    and `config`.

    Encoding is frame-local with a bounded receptive field of `context_frames` frames on each
    side, so long audio is encoded chunk by chunk (bounded memory) and padded batches give the
    same codes as single items. The bitrate is a per-call argument, as in DAC: codecs with
    `variable_bitrate` encode and decode any first K of their `max_codebooks` codebooks; the
    others always use all of them. The codec itself holds no bitrate setting.

    Decoding is chunked the same way (`decode_stream`): `chunk_frames` at a time with
    `decode_context_frames` of real codes on each side, cropped, so peak memory does not grow with
    the length. A frame-local decoder declares its receptive field there and chunked decoding
    equals whole decoding up to float rounding; a decoder that is not frame-local (Griffin-Lim)
    also declares `decode_crossfade_frames`, and its chunks overlap by that much and are
    crossfaded (close to, not equal to, whole decoding).
    """

    family: ClassVar[str]
    variable_bitrate: ClassVar[bool] = False  # any first K codebooks encode and decode
    takes_prompt: ClassVar[bool] = False  # decoding needs a voice prompt: decode(codes, prompt=wav)
    # the family's StreamEncoder and StreamDecoder classes, used when an instance is `streaming` (causal)
    stream_coders: ClassVar[tuple[type, type] | None] = None
    sample_rate: int
    hop_length: int  # samples per frame
    codebook_size: int
    context_frames: int = 2
    chunk_frames: int = 3000
    decode_context_frames: int = 0  # frames of codes each side that decoding a frame depends on
    decode_crossfade_frames: int = 0  # > 0: not frame-local, chunks overlap and are crossfaded

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None
        # State-dict prefixes of weights borrowed from another saved model (a shared vocoder):
        # rebuilt from the config when loading, so neither saved nor expected in model.safetensors.
        self.borrowed_weights: tuple[str, ...] = ()

    # --- properties ---------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    @abstractmethod
    def max_codebooks(self) -> int:
        """Codebooks per frame at the full bitrate."""

    @property
    def n_codebooks(self) -> int:
        """Codebooks per frame by default: all of them (`max_codebooks`)."""
        return self.max_codebooks

    @property
    def bitrate(self) -> float:
        """Bits per second with all codebooks."""
        return self.bitrate_at(self.max_codebooks)

    def bitrate_at(self, n_codebooks: int) -> float:
        """Bits per second with the first `n_codebooks` codebooks."""
        return self.check_n_codebooks(n_codebooks) * math.log2(self.codebook_size) * self.frame_rate

    def check_n_codebooks(self, n_codebooks: int | None) -> int:
        """The number of codebooks to use: `n_codebooks` if this codec can, all of them for None."""
        full, label = self.max_codebooks, self.name or self.family
        if n_codebooks is None:
            return full
        if isinstance(n_codebooks, bool) or not isinstance(n_codebooks, numbers.Integral):
            raise CodecError(f"n_codebooks must be an integer, got {n_codebooks!r}")
        n_codebooks = int(n_codebooks)
        if n_codebooks == full or (self.variable_bitrate and 1 <= n_codebooks <= full):
            return n_codebooks
        if self.variable_bitrate and full > 1:
            raise CodecError(f"codec '{label}' uses 1 to {full} codebooks; it cannot use {n_codebooks}")
        raise CodecError(f"codec '{label}' has a fixed {full} codebook{'s' * (full > 1)}; it cannot use {n_codebooks}")

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        b = next(self.buffers(), None)
        return (p if p is not None else b).device if (p is not None or b is not None) else torch.device("cpu")

    def n_frames(self, n_samples: int) -> int:
        return math.ceil(n_samples / self.hop_length)

    # --- streaming ------------------------------------------------------------------
    @property
    def streaming(self) -> bool:
        """Whether this codec is causal and encodes and decodes as a stream (`stream_encoder`,
        `stream_decoder`; `speechtok.codecs.streaming`)."""
        return False

    @property
    def stream_lookahead(self) -> int:
        """Samples a streamed decoder holds a sample back after its frame's hop has ended: its
        vocoder's overlap-add look-ahead."""
        self._check_streaming()
        return self.vocoder.head.lookahead

    @property
    def algorithmic_latency_ms(self) -> float:
        """From a sample going in to it coming out of the decoder, compute time aside: its frame's
        hop (the frame is coded when its last sample is in) plus the decoder's look-ahead."""
        return 1000 * (self.hop_length + self.stream_lookahead) / self.sample_rate

    def stream_encoder(self, n_codebooks: int | None = None):
        """A `StreamEncoder`: audio chunks in, codes out as frames complete (the first K codebooks)."""
        self._check_streaming()
        return self.stream_coders[0](self, n_codebooks)

    def stream_decoder(self):
        """A `StreamDecoder`: codes in, final samples out."""
        self._check_streaming()
        return self.stream_coders[1](self)

    def _check_streaming(self) -> None:
        if not self.streaming:
            raise CodecError(self._not_streaming())

    def _not_streaming(self) -> str:
        return f"codec '{self.name or self.family}' is not causal and does not stream (see docs/streaming.md)"

    # --- encode / decode ----------------------------------------------------------
    @abstractmethod
    def _encode_frames(self, wav: torch.Tensor) -> torch.Tensor:
        """Codes [B, max_codebooks, F] for wav [B, 1, F*hop] (zero-padded outside, frames centred on t*hop)."""

    @abstractmethod
    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Waveform [B, 1, F*hop] for codes [B, K, F] that passed `check_codes` (long, on this device)."""

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """Waveform [B, 1, F*hop] for integer codes [B, K, F]: all codebooks, or with `variable_bitrate`
        the first K. Codecs that `takes_prompt` need a voice `prompt` [1, 1, T]; the others refuse
        one. Long inputs are decoded chunk by chunk (`decode_stream`)."""
        pieces = list(self.decode_stream(codes, prompt))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)

    def decode_stream(self, codes: torch.Tensor, prompt: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
        """`decode(codes, prompt)` as consecutive waveform pieces [B, 1, n*hop] of at most `chunk_frames`
        frames each, computed one at a time: memory is bounded by the chunk, not by F (writing
        them out as they come keeps a whole file's decode out of memory). Codes are checked first."""
        codes = self.check_codes(codes)
        return self._decode_chunked(codes, self._decoder_for(prompt))

    def _decoder_for(self, prompt: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """The function that decodes one chunk of codes: `_decode`. Codecs that `takes_prompt`
        override this to condition it on the prompt (prepared once, not per chunk)."""
        if prompt is not None:
            raise CodecError(f"codec '{self.name or self.family}' takes no voice prompt: decode(codes) without one")
        return self._decode

    @torch.inference_mode()  # on a generator: active while it runs, not while the caller holds a piece
    def _decode_chunked(
        self, codes: torch.Tensor, decode_chunk: Callable[[torch.Tensor], torch.Tensor]
    ) -> Iterator[torch.Tensor]:
        """Decode `chunk_frames` at a time with `decode_context_frames` of real codes on each side
        (none past the ends, which stay the decoder's own edges), keeping the chunk's own samples:
        equal to whole decoding up to float rounding when the decoder's receptive field is within
        the context. With `decode_crossfade_frames` X > 0 each chunk also decodes the next X
        frames, and those are crossfaded into the next chunk's first X frames, at equal power (the two
        chunks' phases are unrelated where decoding is not frame-local, so a linear fade would dip)."""
        n, hop, step = codes.shape[-1], self.hop_length, max(int(self.chunk_frames), 1)
        ctx, fade = int(self.decode_context_frames), int(self.decode_crossfade_frames)
        if n <= step:
            yield decode_chunk(codes)
            return
        tail = None
        for start in range(0, n, step):
            end = min(start + step, n)
            keep_end = min(end + fade, n)
            lo, hi = max(start - ctx, 0), min(keep_end + ctx, n)
            wav = decode_chunk(codes[..., lo:hi])[..., (start - lo) * hop : (keep_end - lo) * hop]
            if tail is not None and tail.shape[-1]:
                k = tail.shape[-1]
                ramp = (torch.arange(k, device=wav.device, dtype=wav.dtype) + 0.5) * (torch.pi / (2 * k))
                wav = torch.cat([tail * ramp.cos() + wav[..., :k] * ramp.sin(), wav[..., k:]], dim=-1)
            body = (end - start) * hop
            tail = wav[..., body:]
            yield wav[..., :body]

    def check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """`codes` as a LongTensor on this codec's device, after checking what decoding needs: shape
        [B, K, F] with a K this codec decodes, an integer dtype (float codes are refused, not rounded)
        and values in [0, codebook_size)."""
        full = self.max_codebooks
        if not torch.is_tensor(codes):
            raise CodecError(f"{self.family} codes must be an integer tensor, got {type(codes).__name__}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise CodecError(f"{self.family} codes must be integers, got {codes.dtype}")
        shape = f"[B, K, F] with 1 <= K <= {full}" if self.variable_bitrate and full > 1 else f"[B, {full}, F]"
        if codes.dim() != 3 or not (1 if self.variable_bitrate else full) <= codes.shape[1] <= full:
            raise CodecError(f"{self.family} codes must be {shape}, got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise CodecError(
                f"{self.family} codes must lie in [0, {self.codebook_size}), got {int(codes.min())}..{int(codes.max())}"
            )
        return codes.to(self.device, torch.long)

    def validate_wav(self, wav: torch.Tensor, name: str = "input") -> torch.Tensor:
        if not torch.is_tensor(wav) or not wav.is_floating_point():
            raise CodecError(f"{name}: expected a float waveform tensor, got {type(wav).__name__}")
        if wav.dim() == 2:
            wav = wav.unsqueeze(1)
        if wav.dim() != 3:
            raise CodecError(f"{name}: expected shape [B, 1, T], got {tuple(wav.shape)}")
        if wav.shape[1] != 1:
            raise CodecError(
                f"{name}: {self.family} codecs take mono audio [B, 1, T], got {wav.shape[1]} channels "
                "(mix down first; load_audio does)"
            )
        if wav.shape[-1] == 0:
            raise CodecError(f"{name}: audio is empty")
        if not torch.isfinite(wav).all():
            raise CodecError(f"{name}: audio contains NaN/inf samples")
        return wav

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None, n_codebooks: int | None = None):
        """Codes [B, K, F]; with `lengths` (samples per item) also frame lengths [B]. K is
        `n_codebooks` (codecs with `variable_bitrate`: the first K codebooks) or all of them.

        Frames past an item's length are computed on zero padding and equal what that item
        would get alone, so callers may crop with the returned frame lengths.
        """
        k = self.check_n_codebooks(n_codebooks)
        wav = self.validate_wav(wav)
        n_frames = self.n_frames(wav.shape[-1])
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=wav.device)
            idx = torch.arange(wav.shape[-1], device=wav.device)
            wav = wav * (idx[None, :] < lengths[:, None]).unsqueeze(1).to(wav.dtype)
        wav = nn.functional.pad(wav, (0, n_frames * self.hop_length - wav.shape[-1]))
        codes = self._encode_chunked(wav, n_frames)[:, :k]
        if lengths is None:
            return codes
        frame_lengths = torch.div(lengths + self.hop_length - 1, self.hop_length, rounding_mode="floor")
        return codes, frame_lengths

    def _encode_chunked(self, wav: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Encode `chunk_frames` at a time with `context_frames` of real context on each side."""
        hop, ctx = self.hop_length, self.context_frames
        if n_frames <= self.chunk_frames:
            return self._encode_frames(wav)
        out = []
        for start in range(0, n_frames, self.chunk_frames):
            end = min(start + self.chunk_frames, n_frames)
            lo, hi = (start - ctx) * hop, (end + ctx) * hop
            piece = wav[..., max(lo, 0) : min(hi, wav.shape[-1])]
            piece = nn.functional.pad(piece, (max(-lo, 0), max(hi - wav.shape[-1], 0)))
            out.append(self._encode_frames(piece)[..., ctx : ctx + end - start])
        return torch.cat(out, dim=-1)

    # --- persistence --------------------------------------------------------------
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Hyper-parameters that rebuild this codec with `cls(**config)`."""

    def token_config(self) -> dict[str, Any]:
        """The part of `config()` that determines the codes (decoder-only settings excluded)."""
        return self.config()

    def own_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights this codec saves and loads itself: all but the `borrowed_weights`."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(self.borrowed_weights)}

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "family": self.family,
            "format_version": FORMAT_VERSION,
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "n_codebooks": self.max_codebooks,
            "codebook_size": self.codebook_size,
            "config": self.config(),
        }
        (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        state = {
            k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
            for k, v in self.own_state_dict().items()
        }
        if state:
            save_file(state, str(directory / "model.safetensors"), metadata={"family": self.family})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> Codec:
        """Load a folder written by `save_pretrained`. Anything short of a working codec of this
        family (a bad config, missing, unreadable, mismatched or NaN/inf weights) is a CodecError
        naming the file: never random weights, never a traceback."""
        directory = Path(directory)
        meta = read_config(directory)
        action = f"load {cls.family} codec from"
        if meta["family"] != cls.family:
            problem = f"config.json declares a '{meta['family']}' codec, not '{cls.family}'"
            raise CodecError(cannot(action, directory, problem))
        try:
            codec = cls(**meta["config"])
        except Exception as exc:  # unknown or ill-typed keys, values the constructor refuses
            problem = f"config.json has an invalid {cls.family} config ({_one_line(exc)})"
            raise CodecError(cannot(action, directory, problem)) from exc
        weights = directory / "model.safetensors"
        if codec.own_state_dict() and not weights.is_file():
            problem = f"model.safetensors is missing (this {cls.family} config needs trained weights)"
            raise CodecError(cannot(action, directory, problem))
        if weights.exists():
            load_weights(codec, read_weights(weights, CodecError), weights, CodecError, codec.borrowed_weights)
        codec.name = directory.name
        return codec.to(device).eval()


# --- saved folders: config.json and model.safetensors, for codecs and LM checkpoints alike ----------
def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def declared_family(folder: Path) -> str | None:
    """The `family` a saved folder declares, or None (codecs and LM checkpoints live side by side)."""
    try:
        meta = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("family") if isinstance(meta, dict) else None


def read_json_config(directory: Path, required: tuple[str, ...], what: str, error: type[Exception]) -> dict:
    """config.json of a saved model folder, a JSON object with the `required` keys and an integer
    `format_version` if it has one; otherwise an `error` naming the folder and the problem. `what`
    names the model ('codec', 'token LM')."""
    path, action = Path(directory) / "config.json", f"load {what} from"
    if not path.is_file():
        raise error(cannot(action, directory, f"no config.json (not a {what} folder)"))
    try:
        meta = json.loads(path.read_text())
    except ValueError as exc:  # invalid JSON or not UTF-8
        raise error(cannot(action, directory, f"config.json has invalid JSON ({_one_line(exc)})")) from exc
    if not isinstance(meta, dict):
        raise error(cannot(action, directory, f"config.json holds a {type(meta).__name__}, not a JSON object"))
    missing = [k for k in required if k not in meta]
    if missing:
        raise error(cannot(action, directory, f"config.json lacks {', '.join(repr(k) for k in missing)}"))
    version = meta.get("format_version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise error(cannot(action, directory, f"config.json's format_version must be an integer, got {version!r}"))
    return meta


def read_weights(path: Path, error: type[Exception]) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (never unpickled), all finite; a missing, unreadable
    (truncated, empty, not safetensors) or NaN/inf one is an `error` naming the file."""
    if not path.is_file():
        raise error(cannot("read weights", path, "file is missing"))
    try:
        state = load_file(str(path))
    except Exception as exc:  # truncated, empty, random bytes, a pickle under this name, ...
        raise error(cannot("read weights", path, f"truncated or not safetensors ({_one_line(exc)})")) from exc
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise error(cannot("read weights", path, f"NaN/inf values in {len(bad)} tensor(s), first {bad[0]!r}"))
    return state


def load_weights(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    path: Path,
    error: type[Exception],
    borrowed: tuple[str, ...] = (),
) -> None:
    """Load `state` (read from `path`) into `module`, in its dtypes, if the names and shapes match
    exactly (config.json describes another model otherwise); else an `error` saying what differs.
    Weights under the `borrowed` prefixes are the module's own (loaded from elsewhere), not in `state`."""
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(borrowed)}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    diff = [
        f"{len(names)} {what}, first {names[0]!r}"
        for what, names in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes))
        if names
    ]
    if shapes:
        diff[-1] += f" {tuple(state[shapes[0]].shape)}, config.json makes {tuple(own[shapes[0]].shape)}"
    if diff:
        raise error(cannot("load weights", path, f"they do not match config.json ({'; '.join(diff)})"))
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=not borrowed)


def read_config(directory: Path) -> dict[str, Any]:
    """A codec folder's config.json, checked: a family name, a supported format, a config object."""
    meta = read_json_config(directory, ("family", "format_version", "config"), "codec", CodecError)
    if not isinstance(meta["family"], str):
        raise CodecError(
            cannot("load codec from", directory, f"config.json's family must be a string, got {meta['family']!r}")
        )
    if not isinstance(meta["config"], dict):
        problem = f"config.json's config must be a JSON object, got a {type(meta['config']).__name__}"
        raise CodecError(cannot("load codec from", directory, problem))
    if meta["format_version"] > FORMAT_VERSION:
        problem = (
            f"config.json has format version {meta['format_version']}, newer than this speechtok "
            f"supports ({FORMAT_VERSION}); upgrade speechtok"
        )
        raise CodecError(cannot("load codec from", directory, problem))
    return meta
