"""Text to speech with token LMs, in one place: the `Synthesizer` (`load_tts`), the text front-end
(`speechtok.tts.text`: normalisation, espeak-ng phonemes, ids, cutting long text) and the phoneme
aligner whose durations TTS models train on (`speechtok.tts.align`)."""

from speechtok.lm.runner import LMInputError
from speechtok.tts.synthesizer import Synthesizer, load_tts
from speechtok.tts.text import TextError, TextFrontend, phonemize, phonemize_many

__all__ = ["LMInputError", "Synthesizer", "TextError", "TextFrontend", "load_tts", "phonemize", "phonemize_many"]
