"""Renderers: the last stage of a mel codec's decoder, log-mel [B, n_mels, F] -> waveform [B, 1, F*hop].

A mel codec (dMel, and RVQ through its dMel front end) holds one renderer and calls it; which one
is a module passed in, Vocos-style, not a mode the codec branches on: the trained `Vocoder`
(`speechtok.codecs.vocoder`) or `GriffinLim` (no training). Each declares what chunked decoding
needs: `decode_context_frames` (frames of context each side) and `decode_crossfade_frames` (0 for
a frame-local renderer; > 0 for one that is not, whose chunks are then crossfaded).

Codecs that let the caller swap the renderer declare it by subclassing `SwitchableRenderer`, so
callers test `isinstance(codec, SwitchableRenderer)` instead of probing attributes.
"""

from __future__ import annotations

from typing import ClassVar

import librosa
import numpy as np
import torch
from torch import nn


class Renderer(nn.Module):
    """log-mel [B, n_mels, F] -> waveform [B, 1, F*hop]."""

    name: ClassVar[str]  # what `--decoder` and result tables call it
    decode_crossfade_frames: int = 0  # > 0: not frame-local; chunks overlap by this much and are crossfaded

    @property
    def decode_context_frames(self) -> int:
        """Frames of log-mel on each side that an output frame depends on (for chunked decoding)."""
        raise NotImplementedError

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class GriffinLim(Renderer):
    """Zero-training renderer: pseudo-inverse of the mel filterbank, then Griffin-Lim. `momentum`
    0.99 is the fast Griffin-Lim of Perraudin et al. (librosa's default), 0 the original.

    Griffin-Lim is not frame-local, so chunked decoding is close to, not equal to, whole decoding:
    chunks take `context_frames` each side (0.5 s at 50 frames/s) and are crossfaded over
    `crossfade_frames` (0.2 s). It runs in float64 NumPy on the CPU whatever the codec's device."""

    name = "griffinlim"

    def __init__(
        self,
        mel_fb: torch.Tensor,
        window: torch.Tensor,
        hop_length: int,
        n_iter: int = 32,
        momentum: float = 0.99,
        context_frames: int = 25,
        crossfade_frames: int = 10,
    ) -> None:
        """`mel_fb` [n_fft/2+1, n_mels] and `window` [n_fft] are the analysis filterbank and window."""
        super().__init__()
        self.hop_length, self.n_iter, self.momentum = hop_length, n_iter, momentum
        self.context_frames, self.decode_crossfade_frames = context_frames, crossfade_frames
        self.inverse_basis = np.linalg.pinv(mel_fb.T.double().cpu().numpy())  # [n_fft/2+1, n_mels]
        self.window = window.double().cpu().numpy()

    @property
    def decode_context_frames(self) -> int:
        return self.context_frames

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        mel = log_mel.exp().double().cpu().numpy()
        mag = np.maximum(self.inverse_basis @ mel, 0.0)  # [B, n_fft/2+1, F]
        mag = np.concatenate([mag, mag[..., -1:]], axis=-1)  # librosa frames a length-F*hop signal as F+1
        n_fft = len(self.window)
        wav = [
            librosa.griffinlim(
                m,
                n_iter=self.n_iter,
                hop_length=self.hop_length,
                win_length=n_fft,
                n_fft=n_fft,
                window=self.window,
                center=True,
                length=log_mel.shape[-1] * self.hop_length,
                momentum=self.momentum,
                random_state=0,
            )
            for m in mag
        ]
        return torch.from_numpy(np.stack(wav)).float().unsqueeze(1).to(log_mel.device)


class SwitchableRenderer:
    """Declares that a codec decodes through a `Renderer` the caller may swap (`set_renderer`)."""

    @property
    def renderer(self) -> Renderer:
        """The renderer decoding uses now."""
        raise NotImplementedError

    def renderer_choices(self) -> tuple[str, ...]:
        """Names `set_renderer` accepts for this codec."""
        raise NotImplementedError

    def set_renderer(self, renderer: str | Renderer):
        """Decode through `renderer` (a name from `renderer_choices`, or a module); returns the codec."""
        raise NotImplementedError


def decoder_name(codec) -> str:
    """What result tables call a codec's decoder: its renderer's name, or 'native' for a codec
    with one built-in decoder."""
    return codec.renderer.name if isinstance(codec, SwitchableRenderer) else "native"
