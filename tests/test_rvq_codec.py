"""The learned RVQ / single-codebook codecs keep the Codec contract (tiny, briefly fitted instances) and ship usable."""

import json

import pytest
import torch
from torch import nn

from speechtok.codecs import CodecError, DMelCodec, RVQCodec, load_codec
from speechtok.tokens import codec_hash
from tests.test_codec_api import speechlike


def tiny(seed=0, **kw) -> RVQCodec:
    """A tiny codec whose codebooks were initialised (k-means) and updated on speech-like audio:
    distinct codewords, so no code is a tie."""
    torch.manual_seed(seed)
    cfg = (
        dict(
            n_codebooks=4,
            codebook_size=32,
            codebook_dim=8,
            dim=32,
            intermediate_dim=64,
            encoder_layers=2,
            decoder_layers=1,
        )
        | kw
    )
    codec = RVQCodec(**cfg).train()
    wav = torch.cat([speechlike(2.0, seed=s) for s in range(4)])
    with torch.no_grad():
        for _ in range(3):
            codec(codec.frontend.log_mel(wav))
    return codec.eval()


@pytest.fixture(scope="module")
def codec():
    return tiny()


def test_properties_and_round_trip_shapes(codec):
    assert codec.family == "rvq" and codec.frame_rate == 50 and codec.n_codebooks == 4
    assert codec.bitrate == 4 * 5 * 50
    codes = codec.encode(speechlike(1.01))
    assert codes.dtype == torch.long and codes.shape == (1, 4, 51) and 0 <= codes.min() and codes.max() < 32
    assert codec.decode(codes).shape == (1, 1, 51 * 320)
    assert codec.decode_mel(codes).shape == (1, 80, 51)


def test_codes_do_not_depend_on_chunking_or_batch_padding(codec):
    x = speechlike(4.3, seed=1)
    whole = codec.encode(x)
    for chunk in (7, 50):
        codec.chunk_frames = chunk
        assert torch.equal(codec.encode(x), whole), chunk
    codec.chunk_frames = 3000
    a, b = speechlike(1.7, seed=2), speechlike(0.9, seed=3)
    batch = torch.zeros(2, 1, a.shape[-1])
    batch[0], batch[1, :, : b.shape[-1]] = a[0], b[0]
    batch[1, :, b.shape[-1] :] = 0.5  # garbage past an item's end must not leak into its codes
    codes, frames = codec.encode(batch, lengths=torch.tensor([a.shape[-1], b.shape[-1]]))
    assert torch.equal(codes[0, :, : frames[0]], codec.encode(a)[0])
    assert torch.equal(codes[1, :, : frames[1]], codec.encode(b)[0])


def test_fewer_codebooks_are_a_prefix_and_decode(codec):
    """The bitrate is a per-call argument: the codec holds no setting, and the hash (the token
    space) is the same whatever K; a token file's K is its codes' shape."""
    x = speechlike(1.0, seed=4)
    full = codec.encode(x)
    hash_before = codec_hash(codec)
    two = codec.encode(x, n_codebooks=2)
    assert torch.equal(two, full[:, :2])
    codes, frames = codec.encode(x, lengths=torch.tensor([x.shape[-1]]), n_codebooks=3)
    assert torch.equal(codes, full[:, :3]) and frames.tolist() == [50]
    assert codec.variable_bitrate and codec.max_codebooks == codec.n_codebooks == 4
    assert codec.bitrate_at(2) == 2 * 5 * 50 and codec.bitrate == 4 * 5 * 50
    assert codec.decode(two).shape == codec.decode(full).shape
    assert not torch.equal(codec.decode_mel(two), codec.decode_mel(full))
    assert codec_hash(codec) == hash_before and torch.equal(codec.encode(x), full)  # nothing was left set
    with pytest.raises(CodecError, match="1 to 4 codebooks; it cannot use 5"):
        codec.encode(x, n_codebooks=5)
    with pytest.raises(CodecError, match="cannot use 0"):
        codec.bitrate_at(0)
    with pytest.raises(AttributeError):
        codec.n_codebooks = 2  # read-only: no mutable bitrate state


def test_inference_quantiser_is_the_residual_vqs_own(codec):
    """`codes_of_latent` / `latent_of_codes` (the lean inference path) give exactly the codes of
    vector-quantize-pytorch's ResidualVQ, and its quantised latent for any first K codebooks."""
    with torch.inference_mode():
        z = codec.latent(codec.log_mel(speechlike(2.0, seed=3)))
        z = torch.cat([z, z + 0.5 * torch.randn_like(z)])  # off the training data too, batched
        _, ref, _ = codec.quantizer(z)
        codes = codec.codes_of_latent(z)
        assert torch.equal(codes, ref.transpose(1, 2).long())
        for k in range(1, codec.max_codebooks + 1):
            dropped = nn.functional.pad(ref[..., :k], (0, codec.max_codebooks - k), value=-1)
            assert torch.allclose(
                codec.latent_of_codes(codes[:, :k]), codec.quantizer.get_output_from_indices(dropped), atol=1e-5
            )


def test_bad_codes(codec):
    with pytest.raises(CodecError, match="1 <= K <= 4"):
        codec.decode(torch.zeros(1, 5, 10, dtype=torch.long))
    with pytest.raises(CodecError, match="lie in"):
        codec.decode(torch.full((1, 4, 10), 32))
    with pytest.raises(CodecError, match="must be integers, got torch.float32"):
        codec.decode(torch.zeros(1, 4, 10))  # float codes are refused, never rounded
    with pytest.raises(CodecError, match="must be integers"):
        codec.decode_mel(torch.zeros(1, 2, 10))
    assert codec.decode(torch.zeros(1, 4, 10, dtype=torch.uint8)).shape == (1, 1, 3200)  # any integer dtype


def test_save_load_keeps_codes_and_identity(tmp_path, monkeypatch):
    out = tiny().save_pretrained(tmp_path / "my-rvq")
    meta = json.loads((out / "config.json").read_text())
    assert meta["family"] == "rvq" and meta["n_codebooks"] == 4 and meta["codebook_size"] == 32
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("loading must never unpickle"))
    a, b = load_codec(out), load_codec(out)
    x = speechlike(1.5, seed=5)
    assert a.name == "my-rvq" and torch.equal(a.encode(x), b.encode(x))
    assert codec_hash(a) == codec_hash(b)
    with torch.inference_mode():  # loaded and used there: weights without version counters
        c = load_codec(out)
        assert codec_hash(c) == codec_hash(a) and torch.equal(c.encode(x), a.encode(x))
    with torch.no_grad():
        a.encoder.embed.weight.mul_(1.01)  # the cached weight digest must see an in-place update
    assert codec_hash(a) != codec_hash(b)
    # the same config with other weights makes other tokens: another codec to the token files
    assert codec_hash(b) != codec_hash(load_codec(tiny(seed=1).save_pretrained(tmp_path / "other")))
    with pytest.raises(CodecError, match="'rvq' codec, not 'dmel'"):
        DMelCodec.from_pretrained(out)


def test_single_codebook_setting():
    codec = tiny(n_codebooks=1, codebook_size=64, quantizer_dropout=False)
    codes = codec.encode(speechlike(1.0))
    assert codes.shape == (1, 1, 50) and codec.bitrate == 6 * 50 and codec.max_codebooks == 1
    assert codec.decode(codes).shape == (1, 1, 50 * 320)
    with pytest.raises(CodecError, match="fixed 1 codebook; it cannot use 2"):
        codec.encode(speechlike(1.0), n_codebooks=2)


def test_dead_code_threshold_reaches_every_codebook_and_is_saved(tmp_path):
    """A code is restarted when its EMA count falls below the threshold: with 4096 codes and a CPU
    batch of 1,600 frames the mean count is 0.4, so the threshold must be settable per codec."""
    codec = tiny(n_codebooks=2, dead_code_threshold=0.15)
    assert [layer._codebook.threshold_ema_dead_code for layer in codec.quantizer.layers] == [0.15, 0.15]
    loaded = load_codec(codec.save_pretrained(tmp_path / "rvq"))
    assert loaded.config()["dead_code_threshold"] == 0.15
    assert loaded.quantizer.layers[1]._codebook.threshold_ema_dead_code == 0.15
    config_file = tmp_path / "rvq" / "config.json"
    config = json.loads(config_file.read_text())
    del config["config"]["dead_code_threshold"]
    config_file.write_text(json.dumps(config))
    assert load_codec(tmp_path / "rvq").dead_code_threshold == 2.0  # what configs without the key were trained with
    assert load_codec("rvq-16k").dead_code_threshold == 0.6


def test_bundled_learned_codecs_on_real_speech(shared_data):
    """The shipped checkpoints on a held-out cathy prompt: intelligible, and better with more codebooks."""
    from speechtok.data import load_audio
    from speechtok.eval.metrics import stoi

    x = load_audio(shared_data / "speech/cathy/audio/arctic_b0440_1592528910.flac", 16000)[None]
    score = lambda codec, codes: stoi(x[0, 0].numpy(), codec.decode(codes)[0, 0, : x.shape[-1]].numpy(), 16000)  # noqa: E731
    rvq = load_codec("rvq-16k")
    codes = rvq.encode(x)
    assert codes.shape[1] == 8 and rvq.bitrate == 4000
    by_k = [score(rvq, codes[:, :k]) for k in (1, 2, 8)]
    assert by_k[0] < by_k[1] < by_k[2] and by_k[2] > 0.9, by_k
    single = load_codec("single-16k-50")
    assert single.bitrate == 600 and score(single, single.encode(x)) > 0.8
