"""Vocos-style building blocks: a ConvNeXt backbone at frame rate and an iSTFT head.

The backbone never upsamples; the head predicts log-magnitude and phase per frame and
an inverse STFT produces the waveform, which makes decoding cheap (Vocos, Siuzdak 2023).
"""

from __future__ import annotations

import torch
from torch import nn


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, intermediate_dim: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, F]
        y = self.dwconv(x).transpose(1, 2)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class ConvNeXtBackbone(nn.Module):
    """[B, in_channels, F] -> [B, F, dim]."""

    def __init__(self, in_channels: int, dim: int, intermediate_dim: int, n_layers: int) -> None:
        super().__init__()
        self.embed = nn.Conv1d(in_channels, dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(dim, intermediate_dim, layer_scale=1.0 / n_layers) for _ in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.embed(x).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x.transpose(1, 2))


class ISTFTHead(nn.Module):
    """Frame features [B, F, dim] -> waveform [B, 1, F*hop] via magnitude and phase.

    "Same" padding: overlap-add of F frames trimmed by (n_fft - hop)/2 on each side gives
    exactly F*hop samples, so decode length matches the codec's frame grid.
    """

    def __init__(self, dim: int, n_fft: int, hop_length: int) -> None:
        super().__init__()
        if (n_fft - hop_length) % 2:
            raise ValueError("n_fft - hop_length must be even")
        self.n_fft, self.hop_length = n_fft, hop_length
        self.out = nn.Linear(dim, n_fft + 2)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_mag, phase = self.out(x).float().chunk(2, dim=-1)  # [B, F, n_fft/2+1]
        mag = torch.exp(log_mag).clamp(max=1e2)
        spec = torch.polar(mag, phase)
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=-1) * self.window  # [B, F, n_fft]
        n_frames = frames.shape[1]
        out_len = (n_frames - 1) * self.hop_length + self.n_fft
        fold = lambda t: nn.functional.fold(  # noqa: E731 - overlap-add
            t.transpose(1, 2), (1, out_len), (1, self.n_fft), stride=(1, self.hop_length)
        ).flatten(1)
        wav = fold(frames)
        env = fold(self.window.square().expand(1, n_frames, -1))
        pad = (self.n_fft - self.hop_length) // 2
        wav = wav[:, pad : out_len - pad] / env[:, pad : out_len - pad].clamp_min(1e-11)
        return wav.unsqueeze(1)
