"""Objective codec metrics: intrusive quality (PESQ-wb, STOI/ESTOI, SI-SDR, log-mel distance),
codebook usage and real-time factor.

Signal metrics take a reference and an estimate (numpy or torch, 1-D or [1, T]) at `sr`,
crop both to the shorter length (decoders pad to whole frames) and refuse empty input, so a
failure points at the data rather than surfacing as a NaN deep inside a library.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import librosa
import numpy as np
import torch
from pesq import pesq as _pesq
from pystoi import stoi as _stoi

from speechtok.data.audio import resample

MEL_RESOLUTIONS = ((512, 40), (1024, 80), (2048, 160))  # (n_fft, n_mels), hop = n_fft // 4


def as_mono(x, name: str = "signal") -> np.ndarray:
    """1-D float64 numpy copy of a numpy/torch waveform; [1, T] and [1, 1, T] are squeezed."""
    arr = x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64)
    arr = arr.reshape(arr.shape[-1]) if arr.ndim > 1 and np.prod(arr.shape[:-1]) == 1 else arr
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a mono 1-D waveform, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: waveform is empty (0 samples)")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: waveform contains NaN/inf samples")
    return arr


def align(reference, estimate) -> tuple[np.ndarray, np.ndarray]:
    """Both signals as 1-D float64, cropped to the shorter one."""
    ref, est = as_mono(reference, "reference"), as_mono(estimate, "estimate")
    n = min(ref.size, est.size)
    return ref[:n], est[:n]


def _to_rate(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    return x if sr == target else resample(torch.from_numpy(x), sr, target).numpy()


def pesq_wb(reference, estimate, sr: int) -> float:
    """Wide-band PESQ (ITU-T P.862.2, MOS-LQO 1.04..4.64), computed at 16 kHz."""
    ref, est = align(reference, estimate)
    if not ref.any():
        raise ValueError("PESQ: reference is silent (all zeros); PESQ is undefined")
    ref, est = _to_rate(ref, sr, 16000), _to_rate(est, sr, 16000)
    try:
        return float(_pesq(16000, ref, est, "wb"))
    except Exception as exc:  # pesq raises its own NoUtterancesError / BufferTooShortError
        raise ValueError(f"PESQ failed ({type(exc).__name__}: {exc}); is the reference silent or too short?") from exc


def stoi(reference, estimate, sr: int) -> float:
    """Short-time objective intelligibility (0..1); pystoi resamples to 10 kHz itself."""
    ref, est = align(reference, estimate)
    return float(_stoi(ref, est, sr, extended=False))


def estoi(reference, estimate, sr: int) -> float:
    """Extended STOI, which also penalises temporal-envelope distortion that STOI misses."""
    ref, est = align(reference, estimate)
    return float(_stoi(ref, est, sr, extended=True))


def si_sdr(reference, estimate, eps: float = 1e-12) -> float:
    """Scale-invariant SDR in dB (zero-mean, estimate projected onto the reference)."""
    ref, est = align(reference, estimate)
    ref, est = ref - ref.mean(), est - est.mean()
    target = (est @ ref) / (ref @ ref + eps) * ref
    noise = est - target
    return float(10 * np.log10((target @ target + eps) / (noise @ noise + eps)))


def mel_distance(reference, estimate, sr: int, resolutions=MEL_RESOLUTIONS) -> float:
    """Mean L1 distance of natural-log mel magnitudes over several FFT sizes.

    Insensitive to phase and small delays, unlike SI-SDR, so it tracks what vocoders and
    Griffin-Lim get right even when the waveform does not line up.
    """
    ref, est = align(reference, estimate)
    dists = []
    for n_fft, n_mels in resolutions:
        kw = dict(sr=sr, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels, power=1.0, fmax=sr / 2)
        m_ref = librosa.feature.melspectrogram(y=ref, **kw)
        m_est = librosa.feature.melspectrogram(y=est, **kw)
        dists.append(np.abs(np.log(np.maximum(m_ref, 1e-5)) - np.log(np.maximum(m_est, 1e-5))).mean())
    return float(np.mean(dists))


# --- codebook usage -----------------------------------------------------------------
def code_histogram(codes, codebook_size: int) -> np.ndarray:
    """Counts [K, codebook_size] of codes [K, F] or [B, K, F] (per codebook, over frames)."""
    c = torch.as_tensor(codes).detach().cpu().long()
    if c.dim() == 3:
        c = c.transpose(0, 1).reshape(c.shape[1], -1)
    if c.dim() != 2:
        raise ValueError(f"codes must be [K, F] or [B, K, F], got shape {tuple(c.shape)}")
    if c.numel() and (c.min() < 0 or c.max() >= codebook_size):
        raise ValueError(f"codes must lie in [0, {codebook_size}), got {int(c.min())}..{int(c.max())}")
    offsets = torch.arange(c.shape[0]).unsqueeze(1) * codebook_size
    counts = torch.bincount((c + offsets).flatten(), minlength=c.shape[0] * codebook_size)
    return counts.reshape(c.shape[0], codebook_size).numpy()


def codebook_usage(histogram) -> dict[str, np.ndarray]:
    """Per-codebook perplexity (exp of code entropy; = codebook size when uniform, 1 when a
    single code is used) and fraction of codes ever used, from counts [K, V]."""
    h = np.asarray(histogram, dtype=np.float64)
    if h.ndim == 1:
        h = h[None]
    totals = h.sum(axis=1, keepdims=True)
    if h.size == 0 or (totals == 0).any():
        raise ValueError("codebook_usage: empty histogram (a codebook has no counted codes)")
    p = h / totals
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
    return {"perplexity": np.exp(entropy), "used_fraction": (h > 0).mean(axis=1)}


# --- timing -------------------------------------------------------------------------
def _sync(device) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def stopwatch(device=None) -> Iterator[list[float]]:
    """`with stopwatch(dev) as t: ...` then t[0] is wall seconds; waits for CUDA work to finish."""
    result = [0.0]
    _sync(device)
    start = time.perf_counter()
    try:
        yield result
    finally:
        _sync(device)
        result[0] = time.perf_counter() - start


def real_time_factor(seconds: float, audio_seconds: float) -> float:
    """Processing time per second of audio (< 1 is faster than real time)."""
    if audio_seconds <= 0:
        raise ValueError(f"real_time_factor: audio duration must be positive, got {audio_seconds}")
    return seconds / audio_seconds
