"""GAN discriminators for waveform decoders.

Multi-period (HiFi-GAN) looks at the waveform folded by prime periods; the multi-scale
STFT discriminator is EnCodec's, reused from the `encodec` package.
"""

from __future__ import annotations

import torch
from encodec.msstftd import MultiScaleSTFTDiscriminator
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

Logits = list[torch.Tensor]
FeatureMaps = list[list[torch.Tensor]]


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: int = 32, max_channels: int = 512) -> None:
        super().__init__()
        self.period = period
        chans = [1] + [min(channels * 4**i, max_channels) for i in range(4)]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(cin, cout, (5, 1), (3, 1), padding=(2, 0)))
            for cin, cout in zip(chans[:-1], chans[1:])
        )
        self.convs.append(weight_norm(nn.Conv2d(chans[-1], chans[-1], (5, 1), 1, padding=(2, 0))))
        self.post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = x.shape
        x = nn.functional.pad(x, (0, (-t) % self.period), mode="reflect")
        x = x.view(b, c, -1, self.period)
        fmaps = []
        for conv in self.convs:
            x = nn.functional.leaky_relu(conv(x), 0.1)
            fmaps.append(x)
        x = self.post(x)
        fmaps.append(x)
        return x.flatten(1), fmaps


class MultiPeriodDiscriminator(nn.Module):
    def __init__(
        self, periods: tuple[int, ...] = (2, 3, 5, 7, 11), channels: int = 32, max_channels: int = 512
    ) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels, max_channels) for p in periods)

    def forward(self, x: torch.Tensor) -> tuple[Logits, FeatureMaps]:
        outs = [d(x) for d in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]


class MultiResolutionSTFTDiscriminator(nn.Module):
    """EnCodec's MS-STFT discriminator with resolutions given by FFT sizes (hop = n_fft/4)."""

    def __init__(self, n_ffts: tuple[int, ...] = (1024, 2048, 512), filters: int = 32) -> None:
        super().__init__()
        self.inner = MultiScaleSTFTDiscriminator(
            filters=filters,
            n_ffts=list(n_ffts),
            hop_lengths=[n // 4 for n in n_ffts],
            win_lengths=list(n_ffts),
        )

    def forward(self, x: torch.Tensor) -> tuple[Logits, FeatureMaps]:
        logits, fmaps = self.inner(x)
        return logits, fmaps


class CombinedDiscriminator(nn.Module):
    """Runs several discriminators and concatenates their logits and feature maps."""

    def __init__(self, **discriminators: nn.Module) -> None:
        super().__init__()
        self.discriminators = nn.ModuleDict(discriminators)

    def forward(self, x: torch.Tensor) -> tuple[Logits, FeatureMaps]:
        logits, fmaps = [], []
        for d in self.discriminators.values():
            lg, fm = d(x)
            logits += lg
            fmaps += fm
        return logits, fmaps
