"""The field's pretrained codecs behind the same `Codec` API, for comparison in the same harness.

`load_codec("encodec-24k")` wraps Meta's EnCodec 24 kHz model (`encodec.EncodecModel`): 75
frames/s, 32 residual codebooks of 1024, any first K per call (K = 2, 4, 8, 16, 32 are its
1.5-24 kbit/s bandwidths). It runs at its own 24 kHz; speechtok's loaders resample files to a
codec's `sample_rate`, so the CLI, `eval` and the demo feed it like any other codec.

Weights are EnCodec's own checkpoint file, looked up in `$SPEECHTOK_WEIGHTS`, then in torch's hub
cache, then downloaded from EnCodec's URL where there is a network; without any of these the error
says where to put the file. Nothing here is bundled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from speechtok.codecs.base import Codec, CodecError


@dataclass(frozen=True)
class PretrainedWeights:
    """Where a wrapped codec's weights come from: the library's file name and download URL."""

    file: str
    url: str

    def local_path(self) -> Path | None:
        """The file in `$SPEECHTOK_WEIGHTS` or torch's hub cache (`<hub dir>/checkpoints`), if there."""
        for folder in (os.environ.get("SPEECHTOK_WEIGHTS"), Path(torch.hub.get_dir()) / "checkpoints"):
            if folder and (Path(folder) / self.file).is_file():
                return Path(folder) / self.file
        return None

    def how_to_get(self) -> str:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        return f"download {self.url} and put it in $SPEECHTOK_WEIGHTS (a folder) or {hub}"


class EncodecCodec(Codec):
    """EnCodec 24 kHz (causal SEANet + LSTM, residual VQ). Built with random weights by the
    library's own constructor; `EncodecCodec.pretrained()` loads the released ones."""

    family = "encodec"
    variable_bitrate = True
    weights = PretrainedWeights(
        "encodec_24khz-d7cc33bc.th", "https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th"
    )
    # The LSTMs make it not frame-local: long audio goes in 60 s chunks with 5 s of real context on
    # each side, and chunks are crossfaded when decoding; seams are close to, not equal to, whole.
    chunk_frames = 4500
    context_frames = 375
    decode_context_frames = 375
    decode_crossfade_frames = 8

    def __init__(self) -> None:
        super().__init__()
        from encodec import EncodecModel  # a core dependency; imported here to keep `import speechtok` light

        self.model = EncodecModel.encodec_model_24khz(pretrained=False)
        self.model.set_target_bandwidth(max(self.model.target_bandwidths))
        self.sample_rate = self.model.sample_rate
        self.hop_length = self.model.encoder.hop_length
        self.codebook_size = self.model.quantizer.bins

    @classmethod
    def pretrained(cls, device: str | torch.device = "cpu") -> EncodecCodec:
        """The released EnCodec 24 kHz weights, from a local file or EnCodec's URL."""
        codec = cls()
        path = cls.weights.local_path()
        try:
            if path is not None:
                state = torch.load(path, map_location="cpu", weights_only=True)
            else:
                state = torch.hub.load_state_dict_from_url(cls.weights.url, map_location="cpu", check_hash=True)
        except Exception as exc:  # no network, a truncated or foreign file
            where = f"{path} cannot be read" if path else "no local copy and the download failed"
            problem = f"{where} ({exc.__class__.__name__}); {cls.weights.how_to_get()}"
            raise CodecError(f"encodec-24k weights: {problem}") from exc
        codec.model.load_state_dict(state)
        codec.name = "encodec-24k"
        return codec.to(device).eval()

    @property
    def max_codebooks(self) -> int:
        return self.model.quantizer.n_q

    def _encode_frames(self, wav: torch.Tensor) -> torch.Tensor:
        frames = self.model.encode(wav)  # one frame of all the codebooks: the 24 kHz model is unsegmented
        return frames[0][0][..., : wav.shape[-1] // self.hop_length]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.decode([(codes, None)])[..., : codes.shape[-1] * self.hop_length]

    def config(self) -> dict[str, Any]:
        return {}


# Wrapped codecs by short name: how to load each (`load_codec` falls back to these).
EXTERNAL: dict[str, tuple[type[Codec], PretrainedWeights]] = {"encodec-24k": (EncodecCodec, EncodecCodec.weights)}


def load_external(name: str, device: str | torch.device = "cpu") -> Codec:
    return EXTERNAL[name][0].pretrained(device=device)


def external_with_weights() -> list[str]:
    """Short names of the wrapped codecs whose weights are on this machine."""
    return sorted(name for name, (_, weights) in EXTERNAL.items() if weights.local_path() is not None)
