"""Audio I/O, manifests, synthetic corpora and noisy mixtures."""

from speechtok.data.audio import (
    AudioError,
    check_waveform,
    load_audio,
    load_audio_with_sr,
    loudness_normalize,
    peak_normalize,
    resample,
    save_audio,
)
from speechtok.data.manifest import Utterance, read_manifest, write_manifest

__all__ = [
    "AudioError",
    "Utterance",
    "check_waveform",
    "load_audio",
    "load_audio_with_sr",
    "loudness_normalize",
    "peak_normalize",
    "read_manifest",
    "resample",
    "save_audio",
    "write_manifest",
]
