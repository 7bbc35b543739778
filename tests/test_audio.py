import numpy as np
import pytest
import soundfile as sf
import torch

from speechtok.data.audio import (
    AudioError,
    load_audio,
    load_audio_with_sr,
    loudness_normalize,
    peak_normalize,
    rms_db,
    save_audio,
)


def sine(freq=440.0, sr=16000, seconds=1.0, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_freq(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * sr / len(x)


@pytest.mark.parametrize(
    "ext,subtype",
    [
        ("wav", "PCM_16"),
        ("wav", "PCM_24"),
        ("wav", "PCM_32"),
        ("wav", "FLOAT"),
        ("wav", "PCM_U8"),
        ("flac", "PCM_16"),
        ("ogg", "VORBIS"),
    ],
)
def test_formats_load_as_float_mono(tmp_path, ext, subtype):
    path = tmp_path / f"x.{ext}"
    sf.write(path, sine(), 16000, subtype=subtype)
    wav = load_audio(path, 16000)
    assert wav.dtype == torch.float32 and wav.shape[0] == 1
    assert abs(wav.shape[1] - 16000) < 700  # ogg may pad a little
    assert abs(dominant_freq(wav[0].numpy(), 16000) - 440) < 2
    tol = 0.05 if subtype in ("PCM_U8", "VORBIS") else 1e-3
    assert abs(float(wav.abs().max()) - 0.5) < tol


def test_stereo_mixes_down(tmp_path):
    left, right = sine(440), sine(440) * 0.0
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    wav = load_audio(tmp_path / "s.wav", 16000)
    assert wav.shape == (1, 16000)
    np.testing.assert_allclose(wav[0].numpy(), left / 2, atol=1e-6)
    assert load_audio(tmp_path / "s.wav", mono=False).shape == (2, 16000)


@pytest.mark.parametrize("sr_in,sr_out", [(44100, 16000), (8000, 16000), (24000, 16000)])
def test_resampling_keeps_sine_frequency(tmp_path, sr_in, sr_out):
    sf.write(tmp_path / "r.wav", sine(1000.0, sr_in, 2.0), sr_in, subtype="FLOAT")
    wav, sr = load_audio_with_sr(tmp_path / "r.wav", sr_out)
    assert sr == sr_out and abs(wav.shape[1] - 2 * sr_out) <= 1
    assert abs(dominant_freq(wav[0].numpy(), sr_out) - 1000.0) < 1.0


def test_empty_file_names_file_and_problem(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav.*empty"):
        load_audio(path, 16000)


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.flac"
    path.write_bytes(b"fLaC" + b"\x00garbage" * 20)
    with pytest.raises(AudioError, match=r"cannot read audio .*corrupt\.flac: not a readable audio file"):
        load_audio(path, 16000)


def test_not_audio_and_missing(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(AudioError, match="notes.txt"):
        load_audio(tmp_path / "notes.txt")
    with pytest.raises(AudioError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = sine()
    x[100] = bad
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav.*NaN/inf"):
        load_audio(tmp_path / "nan.wav", 16000)


def test_save_refuses_bad_audio_and_round_trips(tmp_path):
    with pytest.raises(AudioError, match="NaN"):
        save_audio(tmp_path / "a.wav", torch.tensor([[0.0, float("nan")]]), 16000)
    with pytest.raises(AudioError, match="empty"):
        save_audio(tmp_path / "b.wav", torch.zeros(1, 0), 16000)
    x = torch.from_numpy(sine())[None]
    save_audio(tmp_path / "c.flac", x, 16000)
    assert torch.allclose(load_audio(tmp_path / "c.flac", 16000), x, atol=1 / 32767)


def test_normalisation():
    x = torch.from_numpy(sine(amp=0.1))[None]
    assert abs(float(peak_normalize(x).abs().max()) - 0.95) < 1e-6
    assert torch.equal(peak_normalize(torch.zeros(1, 10)), torch.zeros(1, 10))
    y = loudness_normalize(x, target_db=-20.0)
    assert abs(float(rms_db(y)) + 20.0) < 0.01
    loud = loudness_normalize(x, target_db=0.0, max_peak=0.9)  # would clip: peak limited instead
    assert float(loud.abs().max()) <= 0.9 + 1e-6
