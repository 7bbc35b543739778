"""Shared fixtures.

Tests that read ../shared/data skip when it is absent (a user's machine), unless
SPEECHTOK_REQUIRE_SHARED=1 (set by .ci/run) turns the skip into a failure.
"""

import importlib
import os
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SPEECHTOK_SHARED_DATA", REPO.parent / "shared" / "data"))


def missing(msg: str, module_level: bool = False):
    """Skip on a user's machine; fail in CI (SPEECHTOK_REQUIRE_SHARED=1), which installs everything."""
    if os.environ.get("SPEECHTOK_REQUIRE_SHARED") == "1":
        pytest.fail(msg + " (SPEECHTOK_REQUIRE_SHARED=1)", pytrace=False)
    pytest.skip(msg, allow_module_level=module_level)


def require_modules(*names: str, hint: str, module_level: bool = False):
    """Import optional packages (an extra of speechtok), or `missing()`; returns the module(s)."""
    mods = []
    for name in names:
        try:
            with warnings.catch_warnings():  # some judges import deprecated modules
                warnings.simplefilter("ignore")
                mods.append(importlib.import_module(name))
        except ImportError as exc:
            missing(f"{name} is not installed ({exc}; {hint})", module_level)
    return mods[0] if len(mods) == 1 else mods


def need_judges(*modules: str):
    """The offline judges of the `eval` extra (Whisper, resemblyzer, ...)."""
    require_modules(*modules, hint="pip install 'speechtok[eval]'")


@pytest.fixture(scope="module")
def offline():
    """Refuse every network connection while the judges load and run."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted by an offline judge")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").exists():
        missing(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread than with two fighting over 2 cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def harmonic_tone(seconds: float, f0: float = 140.0, sr: int = 16000) -> np.ndarray:
    """A voiced-speech-like test signal: five harmonics of `f0`, peak about 0.4."""
    t = np.arange(int(seconds * sr)) / sr
    return (0.2 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))).astype(np.float32)


@pytest.fixture(scope="module")
def gl_codec():
    """dmel-16k-gl: parameter-free, the same codes as dmel-16k, for tests of what sits on top of a codec."""
    from speechtok.codecs import load_codec

    return load_codec("dmel-16k-gl")


def tiny_dmel_lm(src_vocab: int, max_len: int | None = None, **config):
    """A random tiny TokenLM over dMel codes (80 codebooks x 16 levels, `parallel` pattern): the
    model the TTS, enhancer and refiner tests build on; `config` adds LMConfig keys."""
    from speechtok.lm import LMConfig, TokenLM
    from speechtok.lm.transformer import TransformerConfig

    transformer = TransformerConfig.tiny() if max_len is None else TransformerConfig.tiny(max_len=max_len)
    return TokenLM(
        LMConfig(
            pattern="parallel", n_codebooks=80, codebook_size=16, src_vocab=src_vocab, transformer=transformer, **config
        )
    )
