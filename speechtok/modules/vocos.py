"""Vocos-style building blocks: a ConvNeXt backbone at frame rate and an iSTFT head.

The backbone never upsamples; the head predicts log-magnitude and phase per frame and
an inverse STFT produces the waveform, which makes decoding cheap (Vocos, Siuzdak 2023).

`causal=True` makes every convolution see only the current and past frames (left padding), so
a frame's output is known as soon as the frame is: the building block of streaming codecs.
Causal modules also run frame by frame (a `ConvCache` carries the last inputs of each convolution
between calls; `OverlapAdd` the head's pending samples), with outputs equal to the whole-sequence
forward pass.
"""

from __future__ import annotations

import torch
from torch import nn

KERNEL = 7  # every convolution here: 3 frames each side, or 6 past frames when causal


def conv_frames(conv: nn.Conv1d, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """`conv` (kernel 7, no padding of its own) over frames x [B, C, F], F outputs: zero-padded 3
    each side, or 6 before when causal."""
    return conv(nn.functional.pad(x, (KERNEL - 1, 0) if causal else ((KERNEL - 1) // 2,) * 2))


class ConvCache:
    """The last 6 input frames of each causal convolution of a streamed module, between calls."""

    def __init__(self) -> None:
        self.frames: dict[int, torch.Tensor] = {}

    def __call__(self, conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        """conv over x [B, C, n] (n >= 1 new frames) after the frames seen so far."""
        past = self.frames.get(id(conv))
        if past is None:
            past = x.new_zeros(x.shape[0], x.shape[1], KERNEL - 1)
        full = torch.cat([past, x], dim=-1)
        self.frames[id(conv)] = full[..., -(KERNEL - 1) :]
        return _windowed_conv(conv, full) if x.shape[-1] <= STEP_FRAMES else conv(full)


STEP_FRAMES = 4  # up to this many new frames, a stream's convolution runs as a product over windows


def _windowed_conv(conv: nn.Conv1d, full: torch.Tensor) -> torch.Tensor:
    """`conv(full)` as a product of each 7-frame window with the kernel: on a few frames, 5x
    cheaper than `Conv1d`'s (oneDNN) kernel, whose set-up dominates there; equal to rounding."""
    windows = full.unfold(-1, KERNEL, 1)  # [B, C, n, 7]
    if conv.groups == 1:
        out = torch.einsum("bcnk,ock->bon", windows, conv.weight)
    elif conv.groups == conv.in_channels == conv.out_channels:  # depthwise
        out = (windows * conv.weight[:, 0, None]).sum(-1)
    else:
        return conv(full)
    return out if conv.bias is None else out + conv.bias[:, None]


class ConvNeXtBlock(nn.Module):
    # the block's write to the residual stream: zeroed, the block is the identity (grow_depth)
    residual_outputs = ("pwconv2.weight", "pwconv2.bias")

    def __init__(self, dim: int, intermediate_dim: int, layer_scale: float, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=KERNEL, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor, cache: ConvCache | None = None) -> torch.Tensor:  # [B, C, F]
        y = (conv_frames(self.dwconv, x, self.causal) if cache is None else cache(self.dwconv, x)).transpose(1, 2)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class ConvNeXtBackbone(nn.Module):
    """[B, in_channels, F] -> [B, F, dim]."""

    def __init__(self, in_channels: int, dim: int, intermediate_dim: int, n_layers: int, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal
        self.embed = nn.Conv1d(in_channels, dim, kernel_size=KERNEL)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(dim, intermediate_dim, layer_scale=1.0 / n_layers, causal=causal) for _ in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)

    @property
    def context_frames(self) -> int:
        """Input frames on each side (causal: before) that an output frame depends on."""
        return (KERNEL - 1 if self.causal else (KERNEL - 1) // 2) * (len(self.blocks) + 1)

    def forward(self, x: torch.Tensor, cache: ConvCache | None = None) -> torch.Tensor:
        """The whole sequence, or (causal, with `cache`) the next frames of a stream."""
        if cache is not None and not self.causal:
            raise ValueError("only a causal backbone runs as a stream")
        y = conv_frames(self.embed, x, self.causal) if cache is None else cache(self.embed, x)
        x = self.norm(y.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x, cache)
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

    @property
    def lookahead(self) -> int:
        """Samples past a frame's hop that its window overlap-adds into: (n_fft - hop) / 2."""
        return (self.n_fft - self.hop_length) // 2

    def windowed_frames(self, x: torch.Tensor) -> torch.Tensor:
        """The windowed inverse-FFT frames [B, F, n_fft] for frame features [B, F, dim]."""
        log_mag, phase = self.out(x).float().chunk(2, dim=-1)  # [B, F, n_fft/2+1]
        mag = torch.exp(log_mag).clamp(max=1e2)
        return torch.fft.irfft(torch.polar(mag, phase), n=self.n_fft, dim=-1) * self.window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.windowed_frames(x)  # [B, F, n_fft]
        n_frames = frames.shape[1]
        out_len = (n_frames - 1) * self.hop_length + self.n_fft
        fold = lambda t: nn.functional.fold(  # noqa: E731 - overlap-add
            t.transpose(1, 2), (1, out_len), (1, self.n_fft), stride=(1, self.hop_length)
        ).flatten(1)
        wav = fold(frames)
        env = fold(self.window.square().expand(1, n_frames, -1))
        pad = self.lookahead
        wav = wav[:, pad : out_len - pad] / env[:, pad : out_len - pad].clamp_min(1e-11)
        return wav.unsqueeze(1)


class OverlapAdd:
    """`ISTFTHead` frame by frame: `push` the next frame features, get the samples no later frame
    will add to; `flush` the rest at the end. The concatenated output equals `head(x)` on all the
    frames at once (same padding and window normalisation); a sample is out `head.lookahead`
    samples after its frame's hop has ended."""

    def __init__(self, head: ISTFTHead) -> None:
        self.head, self.frames = head, 0
        self.sum = torch.zeros(0)  # overlap-added samples not yet out, from padded index `start` on
        self.env = torch.zeros(0)
        self.start = 0

    def _add(self, frames: torch.Tensor) -> None:
        h, n, hop = self.head, frames.shape[1], self.head.hop_length
        end = (self.frames + n - 1) * hop + h.n_fft
        grow = end - self.start - self.sum.shape[-1]
        self.sum = nn.functional.pad(self.sum if self.sum.numel() else frames.new_zeros(frames.shape[0], 0), (0, grow))
        self.env = nn.functional.pad(self.env.to(frames), (0, grow))
        for j in range(n):
            at = (self.frames + j) * hop - self.start
            self.sum[:, at : at + h.n_fft] += frames[:, j]
            self.env[at : at + h.n_fft] += h.window.square()
        self.frames += n

    def _take(self, upto: int) -> torch.Tensor:
        """Normalised samples of padded indices [start, upto), without the first `lookahead` (trimmed)."""
        k = upto - self.start
        wav = self.sum[:, :k] / self.env[:k].clamp_min(1e-11)
        skip = max(self.head.lookahead - self.start, 0)
        self.sum, self.env, self.start = self.sum[:, k:], self.env[k:], upto
        return wav[:, skip:].unsqueeze(1)

    def push(self, x: torch.Tensor) -> torch.Tensor:
        """Samples [B, 1, m] that are final after the frame features x [B, n, dim]."""
        self._add(self.head.windowed_frames(x))
        return self._take(max(self.frames * self.head.hop_length, self.start))

    def flush(self) -> torch.Tensor:
        """The last samples: the output then totals frames x hop, as `head` gives."""
        return self._take(self.frames * self.head.hop_length + self.head.lookahead)
