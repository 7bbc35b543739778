"""Long files decode in bounded memory: `Codec.decode` / `decode_stream` work chunk by chunk, equal to
whole decoding (up to float rounding) where the decoder is frame-local, and `speechtok decode` streams
the pieces into the output file."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechtok.cli import main
from speechtok.codecs import Codec, load_codec
from speechtok.data.audio import AudioError, load_audio, save_audio_stream
from speechtok.tokens import load_tokens

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4  # float32 rounding of convolutions over chunks of other lengths (seen: ~1e-6)


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    """~10 s of real speech (the bundled example, looped at three levels): [1, 1, T]."""
    x = load_audio(REPO / "examples" / "flite_slt.flac", 16000)[None]
    return torch.cat([x, 0.5 * x, x], dim=-1)[..., : 16000 * 10 - 123]  # not a whole number of frames


def decode_with_chunks(codec: Codec, codes: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    old = codec.chunk_frames
    codec.chunk_frames = chunk_frames
    try:
        return codec.decode(codes)
    finally:
        codec.chunk_frames = old


@pytest.mark.parametrize("name", ["dmel-16k", "rvq-16k"])
def test_chunked_decode_equals_whole_decode(name, speech, monkeypatch):
    codec = load_codec(name)
    codes = codec.encode(speech)
    if name == "rvq-16k":
        codes = torch.cat([codes, codec.encode(speech.flip(-1))])  # a batch of two
    n = codes.shape[-1]
    whole = decode_with_chunks(codec, codes, n)
    assert whole.shape == (codes.shape[0], 1, n * codec.hop_length)
    seen = []
    inner = codec._decode
    monkeypatch.setattr(codec, "_decode", lambda c: seen.append(c.shape[-1]) or inner(c))
    for chunk in (37, 100):
        seen.clear()
        chunked = decode_with_chunks(codec, codes, chunk)
        assert chunked.shape == whole.shape
        assert (chunked - whole).abs().max() < TOL, (name, chunk)
        assert len(seen) == -(-n // chunk) and max(seen) <= chunk + 2 * codec.decode_context_frames
    # the declared context is what makes it exact: without it the seams differ
    monkeypatch.setattr(type(codec), "decode_context_frames", 0)
    assert (decode_with_chunks(codec, codes, 100) - whole).abs().max() > 100 * TOL


def test_receptive_fields_follow_the_config():
    dmel, rvq = load_codec("dmel-16k"), load_codec("rvq-16k")
    voc = dmel.vocoder
    assert voc.receptive_frames == 3 * (len(voc.backbone.blocks) + 1) + voc.head.n_fft // dmel.hop_length
    assert dmel.decode_context_frames == voc.receptive_frames and dmel.decode_crossfade_frames == 0
    assert rvq.decode_context_frames == 3 * (rvq.dims["decoder_layers"] + 1) + rvq.vocoder.receptive_frames
    gl = load_codec("dmel-16k-gl")
    assert gl.decode_context_frames > 0 and gl.decode_crossfade_frames > 0


def test_griffin_lim_chunks_are_crossfaded_without_clicks(speech):
    """Griffin-Lim is not frame-local (each chunk finds its own phases), so chunked decoding is not
    equal to whole decoding: its spectrum is, and the crossfades leave no steps in the waveform."""
    codec = load_codec("dmel-16k-gl")
    codes = codec.encode(speech)
    n, hop, chunk = codes.shape[-1], codec.hop_length, 100
    whole = decode_with_chunks(codec, codes, n)
    chunked = decode_with_chunks(codec, codes, chunk)
    assert chunked.shape == whole.shape == (1, 1, n * hop)
    target = codec.dequantize(codes)[0]
    mel_whole, mel_chunked = codec.log_mel(whole)[0], codec.log_mel(chunked)[0]
    assert torch.corrcoef(torch.stack([mel_whole.flatten(), mel_chunked.flatten()]))[0, 1] > 0.98
    assert (mel_chunked - target).abs().mean() < 1.3 * (mel_whole - target).abs().mean()
    step = chunked[0, 0].diff().abs()
    fade = codec.decode_crossfade_frames
    edges = [b * hop for s in range(chunk, n, chunk) for b in (s, s + fade)]
    at_edges = max(step[e - 8 : e + 8].max() for e in edges)
    assert at_edges <= whole[0, 0].diff().abs().max()  # no click: no step beyond the largest in the signal


def test_cli_decode_streams_to_exact_length(speech, tmp_path, monkeypatch):
    wav_in = tmp_path / "long.wav"
    sf.write(wav_in, speech[0, 0].numpy(), 16000)
    assert main(["encode", str(wav_in), str(tmp_path / "tok"), "--codec", "dmel-16k"]) == 0
    tok = next((tmp_path / "tok").rglob("*.npz"))
    tf = load_tokens(tok)
    assert tf.n_samples == speech.shape[-1]
    codec = load_codec("dmel-16k")
    reference = codec.decode(torch.from_numpy(tf.codes.astype("int64"))[None])[0, 0, : tf.n_samples]
    pieces = []
    real = save_audio_stream

    def spy(path, stream, *args, **kwargs):
        return real(path, (pieces.append(p.shape[-1]) or p for p in stream), *args, **kwargs)

    monkeypatch.setattr("speechtok.cli.save_audio_stream", spy)
    monkeypatch.setattr(Codec, "chunk_frames", 120)
    assert main(["decode", str(tok), str(tmp_path / "out.wav")]) == 0
    assert len(pieces) == -(-tf.n_frames // 120) and max(pieces) == 120 * codec.hop_length
    out, sr = sf.read(tmp_path / "out.wav", dtype="float32")
    assert sr == 16000 and out.shape == (tf.n_samples,)
    assert np.abs(out - reference.clamp(-1, 1).numpy()).max() < 2 / 32768 + TOL  # PCM_16 rounding
    assert not list(tmp_path.glob(".*.part*"))


def test_save_audio_stream_checks_and_cleans_up(tmp_path):
    ok = save_audio_stream(tmp_path / "a.flac", (torch.full((1, 100), 0.25) for _ in range(3)), 16000, n_samples=250)
    data, _ = sf.read(ok)
    assert data.shape == (250,) and np.allclose(data, 0.25, atol=1e-4)
    bad = [torch.zeros(1, 100), torch.tensor([[0.0, float("nan")]])]
    with pytest.raises(AudioError, match="NaN"):
        save_audio_stream(tmp_path / "b.wav", iter(bad), 16000)
    assert not (tmp_path / "b.wav").exists()
    with pytest.raises(AudioError, match="empty"):
        save_audio_stream(tmp_path / "c.wav", iter([torch.zeros(1, 0)]), 16000)
    assert not (tmp_path / "c.wav").exists()
