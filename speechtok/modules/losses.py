"""Reconstruction and adversarial losses shared by codec and vocoder training."""

from __future__ import annotations

import torch
import torchaudio
from torch import nn


class MultiResolutionMelLoss(nn.Module):
    """L1 between log-mels at several STFT resolutions (DAC / Vocos style)."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_ffts: tuple[int, ...] = (256, 512, 1024, 2048),
        n_mels: tuple[int, ...] = (20, 40, 80, 160),
        f_min: float = 0.0,
    ) -> None:
        super().__init__()
        self.mels = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate,
                n_fft=n,
                hop_length=n // 4,
                n_mels=m,
                f_min=f_min,
                power=1.0,
                center=True,
                norm="slaney",
                mel_scale="slaney",
            )
            for n, m in zip(n_ffts, n_mels)
        )

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        estimate, target = estimate.float(), target.float()
        loss = 0.0
        for mel in self.mels:
            loss = (
                loss + (torch.log(mel(estimate).clamp_min(1e-5)) - torch.log(mel(target).clamp_min(1e-5))).abs().mean()
            )
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


def _stft(wav: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    return torch.stft(wav.float().flatten(0, -2), n_fft, hop, window=window, return_complex=True)


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence plus log-magnitude L1 at several STFT sizes (Parallel WaveGAN style)."""

    def __init__(self, n_ffts: tuple[int, ...] = (512, 1024, 2048)) -> None:
        super().__init__()
        self.n_ffts = tuple(n_ffts)
        for n in self.n_ffts:
            self.register_buffer(f"window_{n}", torch.hann_window(n), persistent=False)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = 0.0
        for n in self.n_ffts:
            window = getattr(self, f"window_{n}")
            est = _stft(estimate, n, n // 4, window).abs().clamp_min(1e-5)
            ref = _stft(target, n, n // 4, window).abs().clamp_min(1e-5)
            convergence = torch.linalg.norm(ref - est, dim=(-2, -1)) / torch.linalg.norm(ref, dim=(-2, -1))
            loss = loss + convergence.mean() + (est.log() - ref.log()).abs().mean()
        return loss / len(self.n_ffts)


def anti_wrap(x: torch.Tensor) -> torch.Tensor:
    """|x| after wrapping to [-pi, pi]: the distance between two angles (APNet)."""
    return (x - 2 * torch.pi * torch.round(x / (2 * torch.pi))).abs()


class PhaseLoss(nn.Module):
    """APNet's anti-wrapping phase losses on the STFT of the output waveform: instantaneous phase,
    group delay (phase difference along frequency) and instantaneous frequency (along time).

    Each bin is weighted by the target's magnitude (normalised per utterance), so the phase of
    near-silent bins, which carries nothing audible, does not add noise to the gradient.
    """

    def __init__(self, n_fft: int = 512, hop_length: int = 128) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        est = _stft(estimate, self.n_fft, self.hop_length, self.window)
        ref = _stft(target, self.n_fft, self.hop_length, self.window)
        weight = ref.abs()
        weight = weight / weight.mean(dim=(-2, -1), keepdim=True).clamp_min(1e-8)
        diff = est.angle() - ref.angle()  # [B, freq, time]
        ip = (weight * anti_wrap(diff)).mean()
        gd = (weight[:, 1:] * anti_wrap(diff.diff(dim=1))).mean()
        iaf = (weight[:, :, 1:] * anti_wrap(diff.diff(dim=2))).mean()
        return ip + gd + iaf
