"""EnCodec behind the Codec API, with random weights from the library's own constructor:
nothing is downloaded (the hub download is replaced by a failure, as on this machine)."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from speechtok.codecs import CodecError, EncodecCodec, available_codecs, load_codec


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return EncodecCodec().eval()


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No SPEECHTOK_WEIGHTS, an empty hub cache and a download that fails."""
    monkeypatch.delenv("SPEECHTOK_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    return tmp_path


def test_frames_bitrates_and_lengths(codec):
    assert (codec.sample_rate, codec.hop_length, codec.frame_rate, codec.max_codebooks) == (24000, 320, 75.0, 32)
    assert [codec.bitrate_at(k) for k in (2, 4, 8, 16, 32)] == [1500.0, 3000.0, 6000.0, 12000.0, 24000.0]
    wav = torch.randn(2, 1, 24000 + 100) * 0.1
    codes, frames = codec.encode(wav, lengths=torch.tensor([24100, 12000]), n_codebooks=8)
    assert codes.shape == (2, 8, 76) and frames.tolist() == [76, 38]
    assert codec.decode(codes).shape == (2, 1, 76 * 320)


def test_first_k_codebooks_are_the_full_encodings_first_k(codec):
    wav = torch.randn(1, 1, 12000) * 0.1
    full = codec.encode(wav)
    for k in (1, 2, 8):
        assert torch.equal(codec.encode(wav, n_codebooks=k), full[:, :k])
        assert codec.decode(full[:, :k]).shape == (1, 1, full.shape[-1] * 320)
    with pytest.raises(CodecError, match="1 to 32"):
        codec.encode(wav, n_codebooks=33)
    with pytest.raises(CodecError, match=r"\[0, 1024\)"):
        codec.decode(torch.full((1, 2, 10), 1024))


def test_saved_folder_loads_by_path(codec, tmp_path):
    folder = codec.save_pretrained(tmp_path / "encodec-copy", dtype=torch.float32)
    loaded = load_codec(folder)
    wav = torch.randn(1, 1, 8000) * 0.1
    assert isinstance(loaded, EncodecCodec) and torch.equal(loaded.encode(wav), codec.encode(wav))


def test_without_weights_the_error_says_how_to_get_them(offline):
    with pytest.raises(CodecError, match=r"no local copy.*encodec_24khz-d7cc33bc.th.*SPEECHTOK_WEIGHTS"):
        load_codec("encodec-24k")
    assert "encodec-24k" not in available_codecs()


def test_local_weights_load_and_list(codec, offline, monkeypatch):
    folder = offline / "weights"
    folder.mkdir()
    torch.save(codec.model.state_dict(), folder / EncodecCodec.weights.file)
    monkeypatch.setenv("SPEECHTOK_WEIGHTS", str(folder))
    loaded = load_codec("encodec-24k")
    wav = torch.randn(1, 1, 8000) * 0.1
    assert loaded.name == "encodec-24k"
    assert torch.equal(loaded.encode(wav, n_codebooks=4), codec.encode(wav, n_codebooks=4))
    assert "encodec-24k" in available_codecs()
    (folder / EncodecCodec.weights.file).write_bytes(b"not a checkpoint")
    with pytest.raises(CodecError, match=r"encodec_24khz-d7cc33bc.th cannot be read"):
        load_codec("encodec-24k")


def test_cli_lists_and_encodes_with_local_weights(codec, offline, monkeypatch, tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    from speechtok.cli import main

    folder = offline / "weights"
    folder.mkdir()
    torch.save(codec.model.state_dict(), folder / EncodecCodec.weights.file)
    monkeypatch.setenv("SPEECHTOK_WEIGHTS", str(folder))
    assert main(["codecs"]) == 0
    assert any(line.split()[:2] == ["encodec-24k", "encodec"] for line in capsys.readouterr().out.splitlines())
    sf.write(tmp_path / "a.wav", np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)
    out = tmp_path / "a.npz"
    assert main(["encode", str(tmp_path / "a.wav"), str(out), "--codec", "encodec-24k", "--n-codebooks", "2"]) == 0
    codes = np.load(out)["codes"]
    assert codes.shape[-2:] == (2, 75)  # 1 s at 16 kHz, resampled to 24 kHz: 75 frames of 2 codebooks
