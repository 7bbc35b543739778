"""Neural vocoder for mel-based codecs: log-mel frames -> waveform (Vocos style)."""

from __future__ import annotations

import math

import torch

from speechtok.codecs.renderers import Renderer
from speechtok.modules.vocos import ConvNeXtBackbone, ISTFTHead


class Vocoder(Renderer):
    """ConvNeXt backbone at frame rate + iSTFT head; output length is F * hop_length. Frame-local:
    chunked decoding with `decode_context_frames` of context equals whole decoding."""

    name = "vocoder"

    def __init__(
        self,
        n_mels: int,
        hop_length: int,
        dim: int = 256,
        intermediate_dim: int = 768,
        n_layers: int = 8,
        n_fft: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = ConvNeXtBackbone(n_mels, dim, intermediate_dim, n_layers)
        self.head = ISTFTHead(dim, n_fft or 4 * hop_length, hop_length)

    @property
    def receptive_frames(self) -> int:
        """Input frames on each side that an output frame's samples depend on: 3 per kernel-7 conv
        (the embedding and one per block; everything else is per frame), plus the frames whose
        n_fft-sample iSTFT windows overlap-add into it (at most ceil(n_fft / hop) on either side)."""
        return 3 * (len(self.backbone.blocks) + 1) + math.ceil(self.head.n_fft / self.head.hop_length)

    @property
    def decode_context_frames(self) -> int:
        return self.receptive_frames

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(log_mel))
