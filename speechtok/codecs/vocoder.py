"""Neural vocoder for mel-based codecs: log-mel frames -> waveform (Vocos style)."""

from __future__ import annotations

import torch
from torch import nn

from speechtok.modules.vocos import ConvNeXtBackbone, ISTFTHead


class Vocoder(nn.Module):
    """ConvNeXt backbone at frame rate + iSTFT head; output length is F * hop_length."""

    def __init__(
        self, n_mels: int, hop_length: int, dim: int = 256, intermediate_dim: int = 768,
        n_layers: int = 8, n_fft: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = ConvNeXtBackbone(n_mels, dim, intermediate_dim, n_layers)
        self.head = ISTFTHead(dim, n_fft or 4 * hop_length, hop_length)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(log_mel))
