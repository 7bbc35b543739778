"""Reconstruction and adversarial losses shared by codec and vocoder training."""

from __future__ import annotations

import torch
import torchaudio
from torch import nn


class MultiResolutionMelLoss(nn.Module):
    """L1 between log-mels at several STFT resolutions (DAC / Vocos style)."""

    def __init__(
        self, sample_rate: int = 16000, n_ffts: tuple[int, ...] = (256, 512, 1024, 2048),
        n_mels: tuple[int, ...] = (20, 40, 80, 160), f_min: float = 0.0,
    ) -> None:
        super().__init__()
        self.mels = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate, n_fft=n, hop_length=n // 4, n_mels=m, f_min=f_min,
                power=1.0, center=True, norm="slaney", mel_scale="slaney",
            )
            for n, m in zip(n_ffts, n_mels)
        )

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        estimate, target = estimate.float(), target.float()
        loss = 0.0
        for mel in self.mels:
            loss = loss + (
                torch.log(mel(estimate).clamp_min(1e-5)) - torch.log(mel(target).clamp_min(1e-5))
            ).abs().mean()
        return loss / len(self.mels)


def hinge_discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    return sum(torch.relu(1 - r).mean() + torch.relu(1 + f).mean() for r, f in zip(real, fake)) / len(real)


def hinge_generator_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    return sum(torch.relu(1 - f).mean() for f in fake) / len(fake)


def feature_matching_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Mean relative L1 between discriminator feature maps of real and generated audio."""
    total, count = 0.0, 0
    for fr, ff in zip(real, fake):
        for r, f in zip(fr, ff):
            total = total + (r.detach() - f).abs().mean() / (r.detach().abs().mean() + 1e-5)
            count += 1
    return total / max(count, 1)
