"""Causal codecs stream: audio chunks of any size in, codes out as frames complete; codes in,
final samples out. Both equal the offline encode/decode of the same model (tiny random weights)."""

import json

import numpy as np
import pytest
import torch

from speechtok.codecs import DMelCodec, RVQCodec, load_codec
from speechtok.codecs.base import CodecError
from speechtok.modules.vocos import ConvCache, ConvNeXtBackbone
from tests.test_codec_api import speechlike
from tests.test_rvq_codec import tiny

VOCODER = {"dim": 32, "intermediate_dim": 64, "n_layers": 2, "n_fft": 960, "causal": True}


def causal_dmel() -> DMelCodec:
    torch.manual_seed(0)
    return DMelCodec(vocoder=VOCODER, causal=True).eval()


def causal_rvq() -> RVQCodec:
    """test_rvq_codec's tiny fitted codec (distinct codewords: no code is a tie) on a causal log-mel."""
    return tiny(n_codebooks=3, codebook_size=16, decoder_layers=2, mel={"causal": True}, vocoder=VOCODER)


def speech_like(seconds: float, seed: int = 0) -> torch.Tensor:
    """Speech-like audio [1, 1, T], 123 samples past a whole number of frames (flush pads the last)."""
    return speechlike(seconds + 0.02, seed=seed)[..., : int(seconds * 16000) + 123]


def in_chunks(push, flush, x: torch.Tensor, sizes) -> torch.Tensor:
    """push x along its last axis in chunks of the given sizes (cycled), then flush; concatenated."""
    out, i, k = [], 0, 0
    while i < x.shape[-1]:
        n = sizes[k % len(sizes)]
        out.append(push(x[..., i : i + n]))
        i, k = i + n, k + 1
    out.append(flush())
    return torch.cat(out, dim=-1)


def bundled(name: str):
    return lambda: load_codec(name)


@pytest.mark.parametrize(
    "make",
    [causal_dmel, causal_rvq, bundled("dmel-16k-stream"), bundled("rvq-16k-stream")],
    ids=["dmel", "rvq", "dmel-16k-stream", "rvq-16k-stream"],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_streams_equal_offline_encode_and_decode(make, seed):
    codec = make()
    wav = speech_like(1.3 + 0.1 * seed, seed)
    rng = np.random.default_rng(seed)
    sizes = [int(n) for n in rng.integers(1, 1500, 40)]
    enc = codec.stream_encoder()
    codes = in_chunks(enc.push, enc.flush, wav, sizes)
    offline = codec.encode(wav)
    assert codes.dtype == torch.long and torch.equal(codes, offline)
    dec = codec.stream_decoder()
    audio = in_chunks(dec.push, dec.flush, offline, [int(n) for n in rng.integers(1, 8, 40)])
    assert audio.shape == (1, 1, offline.shape[-1] * codec.hop_length)
    torch.testing.assert_close(audio, codec.decode(offline), atol=1e-5, rtol=0)


def test_a_frame_is_coded_when_its_hop_is_in_and_heard_a_lookahead_later():
    codec = causal_dmel()
    hop = codec.hop_length
    enc, dec = codec.stream_encoder(), codec.stream_decoder()
    assert enc.push(torch.zeros(hop - 1)).shape[-1] == 0  # not a whole frame yet
    first = enc.push(torch.zeros(1))
    assert first.shape == (1, 80, 1)
    assert dec.push(first).shape[-1] == hop - codec.stream_lookahead  # 10 ms of the first 20 are final
    assert codec.stream_lookahead == 320 and codec.algorithmic_latency_ms == pytest.approx(40.0)


def test_fewer_codebooks_stream_as_the_first_k():
    codec = causal_rvq()
    wav = speech_like(0.5)
    enc = codec.stream_encoder(n_codebooks=2)
    assert torch.equal(in_chunks(enc.push, enc.flush, wav, [777]), codec.encode(wav, n_codebooks=2))


def test_causal_backbone_depends_on_the_past_only():
    torch.manual_seed(0)
    net = ConvNeXtBackbone(4, 8, 16, 2, causal=True).eval()
    x = torch.randn(1, 4, 30)
    y = x.clone()
    y[..., 20:] = torch.randn(1, 4, 10)
    with torch.no_grad():
        a, b = net(x), net(y)
        cache = ConvCache()
        streamed = torch.cat([net(x[..., i : i + 3], cache) for i in range(0, 30, 3)], dim=1)
    assert torch.equal(a[:, :20], b[:, :20]) and not torch.allclose(a[:, 20:], b[:, 20:])
    torch.testing.assert_close(streamed, a, atol=1e-6, rtol=0)
    assert net.context_frames == 18 and ConvNeXtBackbone(4, 8, 16, 2).context_frames == 9


@pytest.mark.parametrize("groups", [1, 8, 2])  # dense, depthwise, and grouped (left to Conv1d)
def test_a_streams_few_new_frames_convolve_as_conv1d_does(groups):
    """ConvCache runs the convolution over 1-4 new frames as window products (oneDNN's Conv1d set-up
    dominates there): the same outputs as Conv1d over the whole sequence, chunk after chunk."""
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(8, 8, 7, groups=groups)
    x = torch.randn(2, 8, 23)
    whole = conv(torch.nn.functional.pad(x, (6, 0)))
    cache, parts, at = ConvCache(), [], 0
    for n in (1, 4, 2, 3, 5, 8):  # 5 and 8 frames take Conv1d itself
        parts.append(cache(conv, x[..., at : at + n]))
        at += n
    torch.testing.assert_close(torch.cat(parts, -1), whole, atol=1e-5, rtol=0)


def test_offline_codecs_refuse_to_stream_and_say_so():
    for codec in (
        load_codec("dmel-16k"),
        load_codec("rvq-16k"),
        DMelCodec(vocoder=VOCODER, causal=True).set_renderer("griffinlim"),
    ):
        assert not codec.streaming
        with pytest.raises(CodecError, match="not causal and does not stream"):
            codec.stream_encoder()
        with pytest.raises(CodecError, match="not causal and does not stream"):
            codec.stream_decoder()
    with pytest.raises(CodecError, match="causal dMel codec needs a causal vocoder"):
        DMelCodec(vocoder={**VOCODER, "causal": False}, causal=True)
    with pytest.raises(CodecError, match="causal dMel codec needs a causal vocoder"):
        DMelCodec(vocoder=VOCODER)


def test_causal_configs_save_and_load_and_offline_ones_keep_their_identity(tmp_path):
    codec = causal_rvq()
    loaded = load_codec(codec.save_pretrained(tmp_path / "rvq-stream"))
    assert loaded.streaming and loaded.config()["mel"] == {"causal": True}
    wav = speech_like(0.4)  # saved in fp16: the loaded codec streams as it encodes
    enc = loaded.stream_encoder()
    assert torch.equal(in_chunks(enc.push, enc.flush, wav, [500]), loaded.encode(wav))
    # offline codecs write no `causal` key: their configs and token files are as before
    for name in ("dmel-16k", "rvq-16k"):
        config = json.loads((load_codec(name).save_pretrained(tmp_path / name) / "config.json").read_text())
        assert "causal" not in json.dumps(config)


@pytest.mark.parametrize("name", ["dmel-16k-stream", "rvq-16k-stream"])
def test_bundled_streaming_codecs_are_causal_at_40_ms(name):
    codec = load_codec(name)
    assert codec.streaming and codec.algorithmic_latency_ms == 40
    if codec.family == "rvq":  # the vocoder is borrowed by name, not copied
        assert codec.vocoder_from == "dmel-16k-stream"
