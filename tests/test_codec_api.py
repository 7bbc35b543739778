"""The Codec contract, exercised on the parameter-free dMel codec."""

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import speechtok
from speechtok.codecs import CodecError, DMelCodec, available_codecs, load_codec
from speechtok.codecs.renderers import GriffinLim
from speechtok.codecs.vocoder import Vocoder


def speechlike(seconds=1.3, sr=16000, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    f0 = 120 + 40 * torch.sin(2 * torch.pi * 2 * t)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / sr
    x = sum(torch.sin(k * phase) / k for k in range(1, 20)) * 0.2 * (1 + torch.sin(2 * torch.pi * 3 * t))
    return (x + 0.01 * torch.randn(len(t), generator=g)).float()[None, None]


@pytest.fixture(scope="module")
def codec():
    return load_codec("dmel-16k-gl")


def test_properties(codec):
    assert codec.sample_rate == 16000 and codec.frame_rate == 50
    assert codec.n_codebooks == codec.max_codebooks == 80 and codec.codebook_size == 16
    assert codec.bitrate == codec.bitrate_at(80) == 80 * 4 * 50
    assert not codec.variable_bitrate  # every mel channel is needed to decode


def test_fixed_bitrate_refuses_other_codebook_counts(codec):
    x = speechlike(0.2)
    assert torch.equal(codec.encode(x, n_codebooks=80), codec.encode(x))
    for n in (8, 81, 0):
        with pytest.raises(CodecError, match=f"'dmel-16k-gl' has a fixed 80 codebooks; it cannot use {n}"):
            codec.encode(x, n_codebooks=n)
    with pytest.raises(CodecError, match="fixed 80"):
        codec.bitrate_at(40)
    with pytest.raises(CodecError, match="must be an integer, got 2.0"):
        codec.encode(x, n_codebooks=2.0)


def test_round_trip_shapes(codec):
    x = speechlike(1.01)
    codes = codec.encode(x)
    assert codes.dtype == torch.long and codes.shape == (1, 80, 51)
    assert 0 <= codes.min() and codes.max() < 16
    y = codec.decode(codes)
    assert y.shape == (1, 1, 51 * 320) and torch.isfinite(y).all()


def test_chunking_is_bit_exact():
    codec = DMelCodec()
    x = speechlike(7.3, seed=1)
    whole = codec.encode(x)
    for chunk in (7, 50, 101):
        codec.chunk_frames = chunk
        assert torch.equal(codec.encode(x), whole), chunk


def test_padded_batch_equals_single_items(codec):
    a, b = speechlike(1.7, seed=2), speechlike(0.9, seed=3)
    batch = torch.zeros(2, 1, a.shape[-1])
    batch[0, :, :] = a
    batch[1, :, : b.shape[-1]] = b
    codes, frames = codec.encode(batch, lengths=torch.tensor([a.shape[-1], b.shape[-1]]))
    assert frames.tolist() == [codec.n_frames(a.shape[-1]), codec.n_frames(b.shape[-1])]
    assert torch.equal(codes[0, :, : frames[0]], codec.encode(a)[0])
    assert torch.equal(codes[1, :, : frames[1]], codec.encode(b)[0])
    # garbage beyond an item's length must not leak into its codes
    batch[1, :, b.shape[-1] :] = 0.5
    codes2, _ = codec.encode(batch, lengths=torch.tensor([a.shape[-1], b.shape[-1]]))
    assert torch.equal(codes2, codes)


def test_sine_lands_in_its_mel_channel(codec):
    t = torch.arange(16000) / 16000
    lo = codec.encode((0.5 * torch.sin(2 * torch.pi * 300 * t))[None, None])
    hi = codec.encode((0.5 * torch.sin(2 * torch.pi * 4000 * t))[None, None])
    assert lo[0, :, 25].argmax() < 20 < hi[0, :, 25].argmax()


@pytest.mark.parametrize(
    "wav,match",
    [
        (torch.zeros(1, 2, 1600), "mono"),
        (torch.zeros(1, 1, 0), "empty"),
        (torch.full((1, 1, 1600), float("nan")), "NaN"),
        (torch.zeros(1, 1, 1600, dtype=torch.long), "float"),
        (torch.zeros(1, 1, 1, 1600), "shape"),
    ],
)
def test_bad_waveforms(codec, wav, match):
    with pytest.raises(CodecError, match=match):
        codec.encode(wav)


def test_bad_codes(codec):
    with pytest.raises(CodecError, match=r"\[B, 80, F\]"):
        codec.decode(torch.zeros(1, 8, 10, dtype=torch.long))
    with pytest.raises(CodecError, match="lie in"):
        codec.decode(torch.full((1, 80, 10), 16))
    with pytest.raises(CodecError, match="lie in"):
        codec.decode(torch.full((1, 80, 10), -1))
    with pytest.raises(CodecError, match="dmel codes must be integers, got torch.float32"):
        codec.decode(torch.full((1, 80, 10), 3.0))  # float codes: refused, not rounded
    with pytest.raises(CodecError, match="integer tensor, got ndarray"):
        codec.decode(np.zeros((1, 80, 10), dtype=np.int64))
    with pytest.raises(CodecError, match=r"\[B, 80, F\]"):
        codec.decode(torch.zeros(80, 10, dtype=torch.long))


def test_save_load_round_trip_with_vocoder(tmp_path, monkeypatch):
    codec = DMelCodec(vocoder={"dim": 32, "intermediate_dim": 64, "n_layers": 2})
    out = codec.save_pretrained(tmp_path / "my-dmel")
    meta = json.loads((out / "config.json").read_text())
    assert meta["family"] == "dmel" and meta["format_version"] == 1 and meta["sample_rate"] == 16000
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("loading must never unpickle"))
    loaded = load_codec(out)
    assert loaded.renderer is loaded.vocoder and loaded.name == "my-dmel"
    codes = codec.encode(speechlike(0.5))
    with torch.no_grad():
        for p in codec.vocoder.parameters():  # weights are stored in fp16
            p.copy_(p.half().float())
        ref = codec.vocoder(codec.dequantize(codes))
    assert torch.allclose(loaded.decode(codes), ref, atol=1e-5)


def test_unknown_name_lists_available():
    with pytest.raises(CodecError, match="dmel-16k-gl"):
        load_codec("no-such-codec")
    assert "dmel-16k-gl" in available_codecs()
    assert speechtok.load_codec is load_codec


def test_other_family_and_newer_format(tmp_path):
    out = DMelCodec().save_pretrained(tmp_path / "c")
    meta = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**meta, "family": "rvq"}))
    with pytest.raises(CodecError, match="'rvq' codec, not 'dmel'"):
        DMelCodec.from_pretrained(out)
    (out / "config.json").write_text(json.dumps({**meta, "family": "soundstream"}))
    with pytest.raises(CodecError, match="unknown codec family 'soundstream'"):
        load_codec(out)
    (out / "config.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(CodecError, match="newer"):
        load_codec(out)


def test_weights_of_another_architecture(tmp_path):
    out = DMelCodec(vocoder={"dim": 32, "intermediate_dim": 64, "n_layers": 2}).save_pretrained(tmp_path / "c")
    meta = json.loads((out / "config.json").read_text())
    meta["config"]["vocoder"]["n_layers"] = 3
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CodecError, match="do not match"):
        load_codec(out)


def test_griffin_lim_on_real_speech(shared_data, codec):
    from speechtok.data import load_audio
    from speechtok.eval.metrics import stoi

    x = load_audio(shared_data / "speech/cathy/audio/arctic_b0440_1592528910.flac", 16000)[None]
    y = codec.decode(codec.encode(x))[..., : x.shape[-1]]
    assert stoi(x[0, 0].numpy(), y[0, 0].numpy(), 16000) > 0.85


def test_token_identity_ignores_the_decoder():
    from speechtok.tokens import codec_hash

    assert codec_hash(load_codec("dmel-16k")) == codec_hash(load_codec("dmel-16k-gl"))
    assert codec_hash(DMelCodec(frame_rate=80)) != codec_hash(DMelCodec())


def test_long_audio_is_encoded_in_bounded_chunks(monkeypatch):
    codec = DMelCodec()
    seen = []
    inner = codec._encode_frames
    monkeypatch.setattr(codec, "_encode_frames", lambda w: seen.append(w.shape[-1]) or inner(w))
    x = torch.randn(1, 1, 16000 * 150) * 0.1  # 150 s = 7500 frames, chunks of 3000
    codes = codec.encode(x)
    assert codes.shape[-1] == 7500
    assert len(seen) == 3 and max(seen) <= (codec.chunk_frames + 2 * codec.context_frames) * codec.hop_length


def test_frame_rate_option():
    codec = DMelCodec(frame_rate=80)
    assert codec.hop_length == 200 and codec.bitrate == 80 * 4 * 80
    assert codec.encode(torch.randn(1, 1, 16000) * 0.1).shape == (1, 80, 80)


def test_decode_levels_renders_fractional_levels():
    codec = load_codec("dmel-16k")  # the vocoder: deterministic, so levels can be compared exactly
    codes = codec.encode(speechlike(0.5))
    torch.testing.assert_close(codec.decode_levels(codes.float()), codec.decode(codes))  # integer levels: decode
    between = codec.decode_levels(codes.float() + 0.5)  # half a bin up: between the codes and one bin up
    assert between.shape == (1, 1, codes.shape[-1] * 320)
    assert (
        codec.decode(codes).abs().mean() < between.abs().mean() < codec.decode((codes + 1).clamp(max=15)).abs().mean()
    )
    with pytest.raises(CodecError, match="finite"):
        codec.decode_levels(torch.full((1, 80, 4), float("nan")))
    with pytest.raises(CodecError, match=r"\[B, 80, F\]"):
        codec.decode_levels(torch.zeros(1, 8, 4))


# --- checkpoints that cannot make a working codec: one-line CodecErrors naming the file -------------
TINY_VOCODER = {"dim": 32, "intermediate_dim": 64, "n_layers": 2}


def _tiny_rvq():
    from speechtok.codecs import RVQCodec

    return RVQCodec(
        n_codebooks=2, codebook_size=16, codebook_dim=8, dim=32, intermediate_dim=64, encoder_layers=1, decoder_layers=1
    )


@pytest.fixture(params=["rvq", "dmel-vocoder"])
def saved(request, tmp_path):
    """A saved codec folder whose config has trained weights."""
    codec = _tiny_rvq() if request.param == "rvq" else DMelCodec(vocoder=TINY_VOCODER)
    return codec.save_pretrained(tmp_path / request.param)


def _load_error(folder) -> str:
    with pytest.raises(CodecError) as info:
        load_codec(folder)
    message = str(info.value)
    assert "\n" not in message and str(folder) in message, message
    return message


def test_missing_weights_are_an_error_not_random_weights(saved):
    (saved / "model.safetensors").unlink()
    family = json.loads((saved / "config.json").read_text())["family"]
    assert _load_error(saved).startswith(f"cannot load {family} codec from {saved}: model.safetensors is missing")


def test_dmel_without_vocoder_needs_no_weights(tmp_path):
    out = DMelCodec().save_pretrained(tmp_path / "gl")
    assert not (out / "model.safetensors").exists() and load_codec(out).renderer.name == "griffinlim"


def test_renderer_is_a_module_switched_explicitly(tmp_path):
    """The renderer is the vocoder when the config has one, else Griffin-Lim; `set_renderer` swaps
    it by name or module, and never changes what is saved."""
    codec = DMelCodec(vocoder={"dim": 32, "intermediate_dim": 64, "n_layers": 2})
    keys = set(codec.state_dict())
    assert codec.renderer is codec.vocoder and codec.renderer_choices() == ("vocoder", "griffinlim")
    assert codec.decode_crossfade_frames == 0 and codec.decode_context_frames == codec.vocoder.receptive_frames
    assert codec.set_renderer("griffinlim") is codec and isinstance(codec.renderer, GriffinLim)
    assert codec.decode_crossfade_frames > 0 and set(codec.state_dict()) == keys
    codes = codec.encode(speechlike(0.3))
    slow = GriffinLim(codec.mel_fb, codec.window, codec.hop_length, n_iter=2, momentum=0.0)
    assert torch.equal(codec.set_renderer(slow).decode(codes), slow(codec.dequantize(codes)))
    assert codec.set_renderer("vocoder").renderer is codec.vocoder
    with pytest.raises(CodecError, match="no renderer 'hifigan'"):
        codec.set_renderer("hifigan")
    with pytest.raises(CodecError, match="renderer with weights must be its own vocoder"):
        codec.set_renderer(Vocoder(n_mels=80, hop_length=320, dim=8, intermediate_dim=8, n_layers=1))
    with pytest.raises(CodecError, match="no trained vocoder"):
        DMelCodec().set_renderer("vocoder")


@pytest.mark.parametrize("damage", ["truncated", "zero-byte", "random-bytes", "pickle"])
def test_unreadable_weights(saved, damage):
    weights = saved / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        {
            "truncated": data[: len(data) // 2],
            "zero-byte": b"",
            "random-bytes": np.random.default_rng(0).bytes(4096),
            "pickle": pickle.dumps({"encoder.embed.weight": np.zeros(3)}),
        }[damage]
    )
    message = _load_error(saved)
    assert message.startswith(f"cannot read weights {saved / 'model.safetensors'}: truncated or not safetensors"), (
        message
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(saved, value):
    weights = saved / "model.safetensors"
    state = load_file(str(weights))
    name = next(k for k, v in sorted(state.items()) if v.is_floating_point())
    state[name][..., 0] = value
    save_file(state, str(weights))
    assert f"NaN/inf values in 1 tensor(s), first '{name}'" in _load_error(saved)


def _edit_config(folder, edit):
    meta = json.loads((folder / "config.json").read_text())
    meta = edit(meta)
    (folder / "config.json").write_text(json.dumps(meta))


def test_mismatched_or_malformed_configs(saved):
    key = "dim" if saved.name == "rvq" else "vocoder"
    wrong_dim = {"dim": 48} if key == "dim" else {"vocoder": {**TINY_VOCODER, "dim": 48}}
    original = (saved / "config.json").read_text()
    cases = [
        (lambda m: {**m, "config": {**m["config"], **wrong_dim}}, "of another shape, first"),
        (lambda m: {**m, "config": {**m["config"], "colour": "blue"}}, "unexpected keyword argument 'colour'"),
        (lambda m: {**m, "config": {**m["config"], "frame_rate": 7}}, "invalid"),
        (lambda m: [m], "config.json holds a list, not a JSON object"),
        (lambda m: {**m, "format_version": "1"}, "format_version must be an integer, got '1'"),
        (lambda m: {**m, "config": [1, 2]}, "config must be a JSON object, got a list"),
        (lambda m: {**m, "family": 3}, "family must be a string, got 3"),
        (lambda m: {k: v for k, v in m.items() if k != "config"}, "config.json lacks 'config'"),
    ]
    for edit, want in cases:
        (saved / "config.json").write_text(original)
        _edit_config(saved, edit)
        message = _load_error(saved)
        assert want in message, (want, message)
    (saved / "config.json").write_bytes(b"\xff\xfe{")
    assert _load_error(saved).startswith(f"cannot load codec from {saved}: config.json has invalid JSON")
    (saved / "config.json").write_text(original)
    assert load_codec(saved).family == json.loads(original)["family"]  # repaired: loads again


def test_cli_reports_a_broken_checkpoint_in_one_line(saved, tmp_path, capsys):
    import soundfile as sf

    from speechtok.cli import main

    (saved / "model.safetensors").write_bytes(b"")
    wav = tmp_path / "a.wav"
    sf.write(wav, speechlike(0.3)[0, 0].numpy(), 16000)
    assert main(["encode", str(wav), str(tmp_path / "a.npz"), "--codec", str(saved)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"speechtok: error: cannot read weights {saved / 'model.safetensors'}: truncated")
