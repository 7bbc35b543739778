"""Band gains: render a clean estimate through the noisy waveform it was predicted from.

Each mel band of the mixture's STFT (framed as the codec frames its log-mel) is scaled by a gain
in [floor, 1], spread over the STFT bins the band covers, so the output keeps the mixture's phase
and fine structure and the gains only decide what to remove: no vocoder error, no phase to
invent (recipes/lm/README.md). Built from a dMel codec's STFT and mel settings.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from speechtok.codecs.base import CodecError
from speechtok.codecs.dmel import DMelCodec

GAIN_FLOOR = 0.05
"""The lowest band gain (-26 dB): bounds the suppression, against musical noise (shipped enhancer,
its gain refiner, and the mixture ceiling all use it)."""


class BandGainFilter:
    """Per-band gains on a waveform, with the STFT and mel bands of `codec` (a dMel codec: one with
    ordinal levels, `dequantize`, and a mel filterbank `mel_fb` over an STFT of `n_fft` bins)."""

    def __init__(self, codec: DMelCodec) -> None:
        if not self.supports(codec):
            raise CodecError(
                f"codec '{codec.name or codec.family}' cannot apply band gains to a waveform (only dMel codecs can)"
            )
        self.codec = codec
        self.n_mels = codec.n_mels
        self.band_to_bin = _band_to_bin(codec.mel_fb.detach().float().cpu().numpy())

    @staticmethod
    def supports(codec) -> bool:
        """Whether `codec` has the ordinal levels and mel STFT that band gains need (dMel codecs)."""
        return isinstance(codec, DMelCodec)

    @torch.inference_mode()
    def filter_mixture(self, mixture: torch.Tensor, levels: torch.Tensor, floor: float = GAIN_FLOOR) -> torch.Tensor:
        """Render levels [B, n_mels, F] (codes or fractional) through the waveform [B, 1, T] they
        were predicted from, e.g. the noisy input of an enhancer: each mel band of the mixture's
        STFT is scaled by exp(target - mixture log-mel), clipped to [floor, 1]. On noisy speech this
        scores far above decoding the levels (recipes/lm/README.md)."""
        codec = self.codec
        mixture, spec = self._band_stft(mixture, levels, "levels")
        frames = levels.shape[-1]
        target = codec.dequantize(levels.float().clamp(0, codec.codebook_size - 1).to(spec.device))
        gain = torch.exp(target - self._mel_of(spec[..., :frames].abs().transpose(1, 2))).clamp(floor, 1.0)
        return self._apply(mixture, spec, gain)

    def apply(self, mixture: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
        """Scale each mel band of the waveform's [B, 1, T] STFT by gains [B, n_mels, F] (a codec
        frame each), as `filter_mixture` does with the gains its levels imply: for gains that come
        from elsewhere, e.g. a `speechtok.enhance.refiner.GainRefiner`."""
        mixture, spec = self._band_stft(mixture, gains, "gains")
        return self._apply(mixture, spec, gains.float().to(spec.device))

    def _mel_of(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Log-mel [B, n_mels, F] of STFT magnitudes [B, F, bins], as the codec's `log_mel` computes it."""
        return torch.log(torch.clamp(magnitude @ self.codec.mel_fb, min=1e-5)).transpose(1, 2)

    def _band_stft(self, mixture: torch.Tensor, per_band: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The checked mixture and its STFT [B, bins, F + 1], framed as `log_mel` frames it (zero-padded,
        centred: its first F frames are the codec's), for F frames of per-band values [B, n_mels, F]."""
        codec = self.codec
        if per_band.dim() != 3 or per_band.shape[1] != self.n_mels or not torch.isfinite(per_band).all():
            raise CodecError(f"dmel {what} must be finite [B, {self.n_mels}, F], got {tuple(per_band.shape)}")
        mixture = codec.validate_wav(mixture).float()
        if mixture.shape[0] != per_band.shape[0] or codec.n_frames(mixture.shape[-1]) != per_band.shape[-1]:
            raise CodecError(
                f"{what} {tuple(per_band.shape)} do not frame the mixture {tuple(mixture.shape)}: "
                f"expected [{mixture.shape[0]}, {self.n_mels}, {codec.n_frames(mixture.shape[-1])}]"
            )
        x = nn.functional.pad(mixture[:, 0], (0, per_band.shape[-1] * codec.hop_length - mixture.shape[-1]))
        spec = torch.stft(
            x,
            codec.n_fft,
            codec.hop_length,
            window=codec.window.to(x.device),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return mixture, spec

    def _apply(self, mixture: torch.Tensor, spec: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        codec, frames = self.codec, gain.shape[-1]
        gain = nn.functional.pad(
            self.band_to_bin.to(gain.device) @ gain, (0, spec.shape[-1] - frames), mode="replicate"
        )
        out = torch.istft(
            spec * gain,
            codec.n_fft,
            codec.hop_length,
            window=codec.window.to(spec.device),
            center=True,
            length=frames * codec.hop_length,
        )
        return out[:, None, : mixture.shape[-1]]


def _band_to_bin(fb: np.ndarray) -> torch.Tensor:
    """[bins, mels] weights that spread per-band values over STFT bins: each bin averages the
    bands whose filters cover it; bins outside every filter (below f_min, above f_max) take
    the nearest band's value."""
    fb = torch.from_numpy(fb.astype(np.float32))
    covered = fb.sum(1, keepdim=True)
    spread = fb / covered.clamp(min=1e-12)
    centres = (fb * torch.arange(fb.shape[0])[:, None]).sum(0) / fb.sum(0)
    for b in torch.nonzero(covered[:, 0] <= 1e-12).flatten():
        spread[b] = 0.0
        spread[b, int(torch.argmin((centres - b).abs()))] = 1.0
    return spread


__all__ = ["GAIN_FLOOR", "BandGainFilter"]
