"""The interface every codec implements, and its on-disk format.

A codec maps mono audio [B, 1, T] at `sample_rate` to integer codes [B, K, F] at
`frame_rate` frames/s and back. A saved codec is a folder with `config.json` (family,
hyper-parameters, format version) and `model.safetensors`; loading never unpickles.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT_VERSION = 1


class CodecError(ValueError):
    """Bad codec input, name or checkpoint; the message says what and where."""


class Codec(nn.Module, ABC):
    """Base class: subclasses set `family`, implement `_encode_frames` / `decode` and `config`.

    Encoding is frame-local with a bounded receptive field of `context_frames` frames on each
    side, so long audio is encoded chunk by chunk (bounded memory) and padded batches give the
    same codes as single items.
    """

    family: ClassVar[str]
    sample_rate: int
    hop_length: int  # samples per frame
    codebook_size: int
    context_frames: int = 2
    chunk_frames: int = 3000

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None

    # --- properties ---------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    @abstractmethod
    def n_codebooks(self) -> int: ...

    @property
    def bitrate(self) -> float:
        """Bits per second at the current setting."""
        return self.n_codebooks * math.log2(self.codebook_size) * self.frame_rate

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        b = next(self.buffers(), None)
        return (p if p is not None else b).device if (p is not None or b is not None) else torch.device("cpu")

    def n_frames(self, n_samples: int) -> int:
        return math.ceil(n_samples / self.hop_length)

    # --- encode / decode ----------------------------------------------------------
    @abstractmethod
    def _encode_frames(self, wav: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, F] for wav [B, 1, F*hop] (zero-padded outside, frames centred on t*hop)."""

    @abstractmethod
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Waveform [B, 1, F*hop] for codes [B, K, F]."""

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
    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None):
        """Codes [B, K, F]; with `lengths` (samples per item) also frame lengths [B].

        Frames past an item's length are computed on zero padding and equal what that item
        would get alone, so callers may crop with the returned frame lengths.
        """
        wav = self.validate_wav(wav)
        n_frames = self.n_frames(wav.shape[-1])
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=wav.device)
            idx = torch.arange(wav.shape[-1], device=wav.device)
            wav = wav * (idx[None, :] < lengths[:, None]).unsqueeze(1).to(wav.dtype)
        wav = nn.functional.pad(wav, (0, n_frames * self.hop_length - wav.shape[-1]))
        codes = self._encode_chunked(wav, n_frames)
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

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "family": self.family,
            "format_version": FORMAT_VERSION,
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "n_codebooks": self.n_codebooks,
            "codebook_size": self.codebook_size,
            "config": self.config(),
        }
        (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        state = {
            k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
            for k, v in self.state_dict().items()
        }
        if state:
            save_file(state, str(directory / "model.safetensors"), metadata={"family": self.family})
        return directory

    def export_best(self, save_folder: str | Path, directory: str | Path, recoverables: dict[str, nn.Module],
                    keep: tuple[str, ...]) -> Path:
        """Load a recipe's best checkpoint (by dev PESQ-wb) into `recoverables`, parts of this codec
        under their checkpoint names, and save the codec to `directory` with the checkpoint's `keep`
        metrics as `training.json`. Reads the checkpoints only, so it is safe while training runs."""
        from speechbrain.utils.checkpoints import Checkpointer

        best = Checkpointer(save_folder, recoverables).recover_if_possible(max_key="pesq_wb")
        if best is None:
            raise SystemExit(f"no checkpoint in {save_folder} to export")
        out = self.eval().save_pretrained(directory)
        (out / "training.json").write_text(json.dumps({k: best.meta[k] for k in keep}, indent=2) + "\n")
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "Codec":
        directory = Path(directory)
        meta = read_config(directory)
        if meta["family"] != cls.family:
            raise CodecError(
                f"{directory}: checkpoint is a '{meta['family']}' codec, not '{cls.family}'"
            )
        codec = cls(**meta["config"])
        weights = directory / "model.safetensors"
        if weights.exists():
            state = load_file(str(weights))
            own = codec.state_dict()
            missing = sorted(set(own) - set(state))
            unexpected = sorted(set(state) - set(own))
            if missing or unexpected:
                raise CodecError(
                    f"{weights}: weights do not match the '{cls.family}' config "
                    f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
                )
            codec.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
        codec.name = directory.name
        return codec.to(device).eval()


def declared_family(folder: Path) -> str | None:
    """The `family` a saved folder declares, or None (codecs and LM checkpoints live side by side)."""
    try:
        return json.loads((Path(folder) / "config.json").read_text()).get("family")
    except (OSError, ValueError):
        return None


def read_json_config(directory: Path, required: tuple[str, ...], what: str, error: type[Exception]) -> dict:
    """config.json of a saved model folder, with errors that name the file and the problem."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise error(f"{directory}: not {what} folder (no config.json)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise error(f"{path}: invalid JSON ({exc})") from exc
    missing = [k for k in required if k not in meta]
    if missing:
        raise error(f"{path}: missing {', '.join(repr(k) for k in missing)}")
    return meta


def read_config(directory: Path) -> dict[str, Any]:
    meta = read_json_config(directory, ("family", "format_version", "config"), "a codec", CodecError)
    path = directory / "config.json"
    if meta["format_version"] > FORMAT_VERSION:
        raise CodecError(
            f"{path}: format version {meta['format_version']} is newer than this speechtok "
            f"supports ({FORMAT_VERSION}); upgrade speechtok"
        )
    return meta
