"""Metrics on cases with known answers: identity, additive noise at a set SNR, a delay."""

import time

import numpy as np
import pytest
import scipy.signal as ss
import torch

from speechtok.data.audio import resample
from speechtok.eval import metrics as M

SR = 16000


def speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Voiced, formant-filtered harmonics with a gliding pitch and syllable pauses (PESQ's VAD needs them)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 0.7 * t)) / SR
    src = sum(np.sin(k * phase) / k for k in range(1, 40)) + 0.05 * rng.standard_normal(t.size)
    out = sum(ss.lfilter(*ss.iirpeak(fc, 5, fs=SR), src) for fc in (700, 1200, 2600))
    x = out * np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 0.5
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def add_noise(x: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    n = np.random.default_rng(seed).standard_normal(x.size)
    n *= np.sqrt(np.sum(x.astype(np.float64) ** 2) / np.sum(n**2) / 10 ** (snr_db / 10))
    return x + n


@pytest.fixture(scope="module")
def x():
    return speechlike()


def test_identical_signals(x):
    assert M.pesq_wb(x, x, SR) == pytest.approx(4.64, abs=0.01)
    assert M.stoi(x, x, SR) == pytest.approx(1.0, abs=1e-4)
    assert M.estoi(x, x, SR) == pytest.approx(1.0, abs=1e-4)
    assert M.si_sdr(x, x) > 80
    assert M.mel_distance(x, x, SR) == pytest.approx(0.0, abs=1e-9)


def test_noise_at_known_snr(x):
    pesq, stoi, mel = [], [], []
    for snr in (0, 10, 20):
        y = add_noise(x, snr)
        assert M.si_sdr(x, y) == pytest.approx(snr, abs=0.2)
        pesq.append(M.pesq_wb(x, y, SR))
        stoi.append(M.stoi(x, y, SR))
        mel.append(M.mel_distance(x, y, SR))
    assert pesq[0] < pesq[1] < pesq[2] < 4.0
    assert stoi[0] < stoi[1] < stoi[2] < 1.0
    assert mel[0] > mel[1] > mel[2] > 0.5


def test_delay_hurts_si_sdr_not_mel(x):
    delayed = np.concatenate([np.zeros(100, np.float32), x])[: x.size]
    assert M.si_sdr(x, delayed) < 0  # phase-sensitive: a 6 ms shift ruins the projection
    assert M.mel_distance(x, delayed, SR) < 0.3 < M.mel_distance(x, add_noise(x, 20), SR)


def test_inputs_torch_shapes_lengths_and_rates(x):
    # decoders pad to whole frames: the extra tail is cropped, not scored
    padded = torch.from_numpy(np.concatenate([x, np.zeros(160, np.float32)]))[None, None]
    assert M.si_sdr(torch.from_numpy(x)[None], padded) > 80
    assert M.mel_distance(x, padded, SR) == pytest.approx(0.0, abs=1e-9)
    x24 = resample(torch.from_numpy(x)[None], SR, 24000)[0]
    assert M.pesq_wb(x24, x24, 24000) == pytest.approx(4.64, abs=0.01)  # resampled to 16 kHz


@pytest.mark.parametrize(
    "fn",
    [
        lambda r, e: M.pesq_wb(r, e, SR),
        lambda r, e: M.stoi(r, e, SR),
        lambda r, e: M.estoi(r, e, SR),
        M.si_sdr,
        lambda r, e: M.mel_distance(r, e, SR),
    ],
)
def test_bad_input_errors(fn, x):
    with pytest.raises(ValueError, match="reference: waveform is empty"):
        fn(np.zeros(0), x)
    with pytest.raises(ValueError, match="estimate: waveform is empty"):
        fn(x, torch.zeros(0))
    with pytest.raises(ValueError, match="NaN"):
        fn(x, np.full(x.size, np.nan))
    with pytest.raises(ValueError, match="mono"):
        fn(np.stack([x, x]), x)


def test_pesq_errors_are_explained(x):
    with pytest.raises(ValueError, match="silent"):
        M.pesq_wb(np.zeros(SR), x[:SR], SR)
    with pytest.raises(ValueError, match="PESQ failed"):
        M.pesq_wb(x[:800], x[:800], SR)  # 50 ms: too short for PESQ


def test_codebook_usage_uniform_vs_single_code():
    uniform = M.codebook_usage(np.ones((3, 16)))
    np.testing.assert_allclose(uniform["perplexity"], 16.0)
    np.testing.assert_allclose(uniform["used_fraction"], 1.0)
    single = np.zeros((2, 16))
    single[:, 5] = 100
    usage = M.codebook_usage(single)
    np.testing.assert_allclose(usage["perplexity"], 1.0)
    np.testing.assert_allclose(usage["used_fraction"], 1 / 16)
    half = M.codebook_usage(np.r_[np.ones(8), np.zeros(8)])
    assert half["perplexity"][0] == pytest.approx(8.0)
    with pytest.raises(ValueError, match="empty histogram"):
        M.codebook_usage(np.zeros((1, 16)))


def test_code_histogram_counts_per_codebook():
    codes = torch.tensor([[[0, 1, 1, 3], [2, 2, 2, 2]], [[3, 3, 0, 0], [1, 2, 3, 0]]])  # [B=2, K=2, F=4]
    hist = M.code_histogram(codes, 4)
    np.testing.assert_array_equal(hist, [[3, 2, 0, 3], [1, 1, 5, 1]])
    np.testing.assert_array_equal(M.code_histogram(codes[0], 4), [[1, 2, 0, 1], [0, 0, 4, 0]])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        M.code_histogram(codes + 1, 4)


def test_timing_helpers():
    with M.stopwatch() as t:
        time.sleep(0.05)
    assert 0.05 <= t[0] < 1.0
    assert M.real_time_factor(1.5, 3.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="positive"):
        M.real_time_factor(1.0, 0.0)
