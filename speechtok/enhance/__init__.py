"""Speech enhancement with token LMs, in one place: the `Enhancer` (`load_enhancer`), the band-gain
filter that renders clean levels through the noisy input (`BandGainFilter`, `GAIN_FLOOR`), the gain
refiner (`GainRefiner`) and the mixture ceiling (`mixture_ceiling`)."""

from speechtok.enhance.ceiling import has_mixture_ceiling, mixture_ceiling
from speechtok.enhance.enhancer import Enhancer, load_enhancer
from speechtok.enhance.filter import GAIN_FLOOR, BandGainFilter
from speechtok.enhance.refiner import GainRefiner
from speechtok.lm.runner import LMInputError

__all__ = [
    "GAIN_FLOOR",
    "BandGainFilter",
    "Enhancer",
    "GainRefiner",
    "LMInputError",
    "has_mixture_ceiling",
    "load_enhancer",
    "mixture_ceiling",
]
