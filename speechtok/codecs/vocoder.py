"""Neural vocoder for mel-based codecs: log-mel frames -> waveform (Vocos style)."""

from __future__ import annotations

import math

import torch

from speechtok.codecs.renderers import Renderer
from speechtok.modules.vocos import ConvCache, ConvNeXtBackbone, ISTFTHead, OverlapAdd


class Vocoder(Renderer):
    """ConvNeXt backbone at frame rate + iSTFT head; output length is F * hop_length. Frame-local:
    chunked decoding with `decode_context_frames` of context equals whole decoding. A `causal`
    vocoder's frame depends on past frames only, so it also decodes as a stream (`stream`)."""

    name = "vocoder"

    def __init__(
        self,
        n_mels: int,
        hop_length: int,
        dim: int = 256,
        intermediate_dim: int = 768,
        n_layers: int = 8,
        n_fft: int | None = None,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = ConvNeXtBackbone(n_mels, dim, intermediate_dim, n_layers, causal=causal)
        self.head = ISTFTHead(dim, n_fft or 4 * hop_length, hop_length)

    @property
    def receptive_frames(self) -> int:
        """Input frames on each side that an output frame's samples depend on: the backbone's
        (3 per kernel-7 conv each side, or 6 before when causal; everything else is per frame), plus
        the frames whose n_fft-sample iSTFT windows overlap-add into it (at most ceil(n_fft / hop))."""
        return self.backbone.context_frames + math.ceil(self.head.n_fft / self.head.hop_length)

    def stream(self) -> VocoderStream:
        """A frame-by-frame decoder of this (causal) vocoder."""
        return VocoderStream(self)

    @property
    def decode_context_frames(self) -> int:
        return self.receptive_frames

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(log_mel))


class VocoderStream:
    """A causal vocoder frame by frame: `push` log-mel frames [B, n_mels, n], get the samples that
    are final; `flush` at the end. The output equals the vocoder on all frames at once; a sample
    is out `head.lookahead` samples after the end of its frame's hop."""

    def __init__(self, vocoder: Vocoder) -> None:
        if not vocoder.backbone.causal:
            raise ValueError("only a causal vocoder decodes as a stream")
        self.vocoder, self.convs, self.ola = vocoder, ConvCache(), OverlapAdd(vocoder.head)

    def push(self, log_mel: torch.Tensor) -> torch.Tensor:
        if log_mel.shape[-1] == 0:
            return log_mel.new_zeros(log_mel.shape[0], 1, 0)
        return self.ola.push(self.vocoder.backbone(log_mel, self.convs))

    def flush(self) -> torch.Tensor:
        return self.ola.flush()
