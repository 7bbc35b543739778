"""Band gains (`speechtok.enhance.filter`): clean levels rendered through the noisy waveform."""

import pytest
import torch

from speechtok.codecs import CodecError, load_codec
from speechtok.enhance import GAIN_FLOOR, BandGainFilter, GainRefiner


@pytest.fixture(scope="module")
def codec():
    return load_codec("dmel-16k-gl")


def _band_db(wav, f, sr=16000):
    spec = torch.fft.rfft(wav.flatten().double() * torch.hann_window(wav.numel(), dtype=torch.float64)).abs()
    k = round(f * wav.numel() / sr)
    return 20 * torch.log10(spec[k - 3 : k + 4].max())


def test_filter_mixture_keeps_what_the_levels_keep(codec):
    bands = BandGainFilter(codec)
    t = torch.arange(16000) / 16000
    speech, hiss = 0.3 * torch.sin(2 * torch.pi * 500 * t), 0.3 * torch.sin(2 * torch.pi * 4000 * t)
    mixture = (speech + hiss).view(1, 1, -1)
    top = torch.full((1, 80, 50), 15.0)  # the loudest level everywhere: every gain is 1, nothing changes
    torch.testing.assert_close(bands.filter_mixture(mixture, top), mixture, atol=1e-4, rtol=0)
    out = bands.filter_mixture(mixture, codec.encode(speech.view(1, 1, -1)))  # the clean tone's levels
    assert out.shape == mixture.shape
    assert abs(_band_db(out, 500) - _band_db(mixture, 500)) < 4  # kept, within a level (~7.8 dB)
    assert _band_db(mixture, 4000) - _band_db(out, 4000) > 20  # removed, down to the -26 dB floor
    with pytest.raises(CodecError, match="do not frame the mixture"):
        bands.filter_mixture(mixture, top[..., :40])
    with pytest.raises(CodecError, match="finite"):
        bands.filter_mixture(mixture, top * float("nan"))


def test_apply_is_filter_mixture_for_the_gains_its_levels_imply(codec):
    bands = BandGainFilter(codec)
    g = torch.Generator().manual_seed(0)
    mixture = 0.1 * torch.randn(2, 1, 8000 + 77, generator=g)
    levels = 15 * torch.rand(2, 80, codec.n_frames(mixture.shape[-1]), generator=g)
    gains = torch.exp(
        codec.dequantize(levels)
        - codec.log_mel(torch.nn.functional.pad(mixture, (0, levels.shape[-1] * codec.hop_length - mixture.shape[-1])))
    )
    torch.testing.assert_close(
        bands.apply(mixture, gains.clamp(GAIN_FLOOR, 1.0)), bands.filter_mixture(mixture, levels), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(bands.apply(mixture, torch.ones_like(levels)), mixture, atol=1e-4, rtol=0)
    with pytest.raises(CodecError, match="gains"):
        bands.apply(mixture, torch.ones(2, 8, levels.shape[-1]))


def test_one_gain_floor_and_only_dmel_codecs(codec):
    assert GAIN_FLOOR == 0.05 and GainRefiner().floor == GAIN_FLOOR
    assert BandGainFilter.supports(codec)
    rvq = load_codec("rvq-16k")
    assert not BandGainFilter.supports(rvq)
    with pytest.raises(CodecError, match="only dMel"):
        BandGainFilter(rvq)
