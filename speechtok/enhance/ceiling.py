"""The mixture ceiling: the clean signal's own codes rendered through the noisy input as band
gains, the best an enhancer that renders its tokens through its input (`render: mixture`) can do
with these codes. `speechtok eval-enhance --codec` reports it beside the codec ceiling."""

from __future__ import annotations

import numpy as np
import torch

from speechtok.data.audio import resample
from speechtok.enhance.filter import BandGainFilter
from speechtok.eval import metrics as M

Audio = tuple  # (waveform: numpy/torch 1-D or [1, T], sample_rate: int)


def has_mixture_ceiling(codec) -> bool:
    """Whether `codec` can render codes through a waveform (dMel codecs)."""
    return BandGainFilter.supports(codec)


def mixture_ceiling(codec, noisy: Audio, clean: Audio) -> tuple[np.ndarray, int]:
    """The clean signal's codes applied to the noisy one (`BandGainFilter.filter_mixture`), at the
    codec's rate and the shorter of the two lengths."""
    x, y = (
        resample(torch.from_numpy(M.as_mono(w)).float(), int(sr), codec.sample_rate).view(1, 1, -1)
        for w, sr in (noisy, clean)
    )
    n = min(x.shape[-1], y.shape[-1])
    with torch.inference_mode():
        x, y = x[..., :n].to(codec.device), y[..., :n].to(codec.device)
        out = BandGainFilter(codec).filter_mixture(x, codec.encode(y))
    return out[0, 0].double().cpu().numpy(), codec.sample_rate


__all__ = ["has_mixture_ceiling", "mixture_ceiling"]
