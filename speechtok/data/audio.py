"""Audio I/O that never silently corrupts data.

Every failure names the file and the problem: unreadable or corrupt files, empty audio,
NaN/inf samples. Loading mixes down to mono and resamples with torchaudio.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from speechtok.errors import cannot


class AudioError(ValueError):
    """Bad audio input; the message always names the file."""


def resample(wav: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    if orig_sr == target_sr:
        return wav
    return AF.resample(wav, orig_sr, target_sr)


def check_waveform(wav: torch.Tensor, name: str = "<tensor>", action: str | None = None) -> torch.Tensor:
    """Raise AudioError for empty or non-finite audio. `name` says which audio; with `action` it is a
    file, and the message is 'cannot {action} {name}: ...'."""
    problem = None
    if wav.numel() == 0 or wav.shape[-1] == 0:
        problem = "audio is empty (0 samples)"
    elif not torch.isfinite(wav).all():
        problem = f"audio contains {int((~torch.isfinite(wav)).sum())} NaN/inf samples"
    if problem:
        raise AudioError(cannot(action, name, problem) if action else f"{name}: {problem}")
    return wav


def file_problem(path: str | Path) -> str | None:
    """Why `path` cannot be read as a file, or None: said before a decoder hides it behind
    its own words (libsndfile reports an unreadable file as "System error.")."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        return f"broken symbolic link (points to {os.readlink(path)}, which does not exist)"
    if not path.exists():
        return "file does not exist"
    if path.is_dir():
        return "is a directory, not a file"
    if not os.access(path, os.R_OK):
        return "permission denied (no read permission for this user)"
    return None


def load_audio(path: str | Path, sample_rate: int | None = None, mono: bool = True) -> torch.Tensor:
    """Read any format soundfile reads into float32 [C, T] (C=1 when mono), resampled to `sample_rate`.

    Returns a tensor; the sample rate is `sample_rate` (or the file's own when None,
    use `load_audio_with_sr` to get it).
    """
    return load_audio_with_sr(path, sample_rate, mono)[0]


def load_audio_with_sr(path: str | Path, sample_rate: int | None = None, mono: bool = True) -> tuple[torch.Tensor, int]:
    path = Path(path)
    problem = file_problem(path)
    if problem:
        raise AudioError(cannot("read audio", path, problem))
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioError(
            cannot("read audio", path, f"not a readable audio file ({type(exc).__name__}: {exc})")
        ) from exc
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # [C, T]
    check_waveform(wav, str(path), "read audio")
    if mono and wav.shape[0] > 1:
        wav = wav.mean(dim=0, keepdim=True)
    if sample_rate is not None and sr != sample_rate:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav.contiguous(), sr


def save_audio(path: str | Path, wav: torch.Tensor, sample_rate: int, subtype: str | None = None) -> Path:
    """Write [T] or [C, T] audio; refuses empty or non-finite input, clips to [-1, 1] for PCM."""
    path = Path(path)
    wav = wav.detach().float().cpu()
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    if wav.dim() != 2:
        raise AudioError(cannot("write audio", path, f"expected [T] or [C, T] audio, got shape {tuple(wav.shape)}"))
    check_waveform(wav, str(path), "write audio")
    if sample_rate <= 0:
        raise AudioError(cannot("write audio", path, f"invalid sample rate {sample_rate}"))
    fmt_subtype = subtype
    if fmt_subtype is None and path.suffix.lower() in {".wav", ".flac"}:
        fmt_subtype = "PCM_16"
    if fmt_subtype and fmt_subtype.startswith("PCM"):
        wav = wav.clamp(-1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav.numpy().T, sample_rate, subtype=fmt_subtype)
    return path


def save_audio_stream(
    path: str | Path,
    pieces: Iterable[torch.Tensor],
    sample_rate: int,
    n_samples: int | None = None,
    subtype: str | None = None,
) -> Path:
    """`save_audio` for audio that comes in consecutive pieces ([T] or [C, T] each, e.g. a codec's
    `decode_stream`), written as they come so the whole signal is never in memory; at most
    `n_samples` samples are written (the rest is dropped). Same checks, clipping and subtypes as
    `save_audio`; on any error the partial file is removed."""
    path = Path(path)
    if sample_rate <= 0:
        raise AudioError(cannot("write audio", path, f"invalid sample rate {sample_rate}"))
    if subtype is None and path.suffix.lower() in {".wav", ".flac"}:
        subtype = "PCM_16"
    path.parent.mkdir(parents=True, exist_ok=True)
    written, out = 0, None
    try:
        for wav in pieces:
            wav = wav.detach().float().cpu()
            wav = wav.unsqueeze(0) if wav.dim() == 1 else wav
            if wav.dim() != 2:
                raise AudioError(
                    cannot("write audio", path, f"expected [T] or [C, T] audio, got shape {tuple(wav.shape)}")
                )
            if n_samples is not None:
                wav = wav[:, : max(n_samples - written, 0)]
            if not wav.shape[-1]:
                continue
            check_waveform(wav, str(path), "write audio")
            if subtype and subtype.startswith("PCM"):
                wav = wav.clamp(-1.0, 1.0)
            if out is None:
                out = sf.SoundFile(str(path), "w", sample_rate, wav.shape[0], subtype=subtype)
            out.write(wav.numpy().T)
            written += wav.shape[-1]
        if not written:
            raise AudioError(cannot("write audio", path, "audio is empty (0 samples)"))
    except BaseException:
        if out is not None:
            out.close()
        path.unlink(missing_ok=True)
        raise
    out.close()
    return path


def peak_normalize(wav: torch.Tensor, peak: float = 0.95, eps: float = 1e-8) -> torch.Tensor:
    """Scale so that max |x| == peak (silence stays silence)."""
    m = wav.abs().amax(dim=-1, keepdim=True)
    return torch.where(m > eps, wav * (peak / m.clamp_min(eps)), wav)


def rms_db(wav: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """RMS level in dBFS over the last axis."""
    return 10.0 * torch.log10(wav.pow(2).mean(dim=-1).clamp_min(eps))


def loudness_normalize(wav: torch.Tensor, target_db: float = -23.0, max_peak: float = 0.99) -> torch.Tensor:
    """Scale to an RMS level of `target_db` dBFS, then back off if that would clip past `max_peak`."""
    gain = 10.0 ** ((target_db - rms_db(wav)) / 20.0)
    out = wav * gain.unsqueeze(-1)
    peak = out.abs().amax(dim=-1, keepdim=True)
    return torch.where(peak > max_peak, out * (max_peak / peak.clamp_min(1e-8)), out)


def duration_seconds(path: str | Path) -> float:
    """File duration from the header only (fast); errors name the file."""
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise AudioError(cannot("read audio", path, file_problem(path) or f"unreadable header ({exc})")) from exc
    return info.frames / info.samplerate if info.samplerate else math.nan
