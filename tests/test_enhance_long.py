"""Long inputs through the Enhancer in bounded memory: `enhance_stream` generates a few LM chunks at
a time and renders each block with its context, and equals whole-file enhancement; lengths are
exact; `speechtok enhance` writes the pieces as they come."""

import numpy as np
import pytest
import soundfile as sf
import torch

from speechtok.cli import main
from speechtok.enhance import BandGainFilter, Enhancer, GainRefiner, load_enhancer
from speechtok.lm.checkpoint import save_lm
from speechtok.tokens import TokenFile, save_tokens
from tests.conftest import harmonic_tone, tiny_dmel_lm

SR = 16000
HOP = 320
WHOLE = 1 << 40  # batch_rows: every chunk in one batch, rendered in one piece
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, gl_codec):
    """A tiny random enhancer for dmel-16k-gl: mean levels through the input at two gains."""
    torch.manual_seed(0)
    lm = tiny_dmel_lm(16, src_codebooks=80, max_len_ratio=1.0, max_len=64)
    return save_lm(
        tmp_path_factory.mktemp("models") / "enhance-dmel-16k-gl",
        lm,
        "enhance",
        gl_codec,
        sampling={"temperature": 0.0},
        render={"mode": "mixture", "mean_levels": True, "input_gains_db": [-3.0, 3.0]},
    )


def enhancer_with_small_chunks(folder, **kw) -> Enhancer:
    enhancer = load_enhancer(folder, **kw)
    enhancer.meta["training"] = {"crop_frames": 10}  # LM chunks of at most 10 frames
    return enhancer


def noisy(n_samples: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    tone = harmonic_tone(n_samples / SR + 0.01)[:n_samples]
    return torch.from_numpy(tone + 0.05 * rng.standard_normal(n_samples).astype(np.float32))


def whole_and_streamed(enhancer: Enhancer, wav, batch_rows: int, **kw) -> tuple[torch.Tensor, list[torch.Tensor]]:
    enhancer.batch_rows = WHOLE
    whole = enhancer.enhance(wav, **kw)
    enhancer.batch_rows = batch_rows
    return whole, list(enhancer.enhance_stream(wav, **kw))


@pytest.mark.parametrize("dilations", [(1,), (1, 2, 4)])  # the render margin covers the refiner's context
def test_streamed_enhance_equals_whole_file_enhance(folder, monkeypatch, dilations):
    enhancer = enhancer_with_small_chunks(folder)
    enhancer.set_level_dropout(2, 0.5)  # seeded per chunk: the same blanks however chunks are grouped
    torch.manual_seed(1)
    enhancer.refiner = GainRefiner(dilations=dilations)
    torch.nn.init.normal_(enhancer.refiner.net[-1].weight, std=0.05)  # a refiner that changes the gains
    wav = noisy(90 * HOP - 77)  # 90 frames: 9 LM chunks of 10, the last sample mid-frame
    batches, generate = [], enhancer.lm.generate
    enhancer.lm.generate = lambda src, *a, **k: batches.append(src.shape[0]) or generate(src, *a, **k)
    spans, apply = [], BandGainFilter.apply
    monkeypatch.setattr(BandGainFilter, "apply", lambda self, mix, g: spans.append(g.shape[-1]) or apply(self, mix, g))
    for refine in (True, False):
        batches.clear(), spans.clear()
        whole, pieces = whole_and_streamed(enhancer, wav, batch_rows=4, seed=3, refine=refine)
        assert whole.shape == (1, wav.shape[-1]) and 0 < whole.square().sum() <= wav.square().sum()
        assert sum(p.shape[-1] for p in pieces) == wav.shape[-1] and len(pieces) > 2
        torch.testing.assert_close(torch.cat(pieces, -1), whole, atol=1e-6, rtol=1e-5)
        assert batches == [18, 4, 4, 4, 4, 2]  # whole: 9 chunks x 2 gains; then 2 chunks a block
        if refine:  # the refined gains: over the whole file once, then block by block with context
            assert spans[0] == 90 and min(spans[1:]) < 90 and len(spans) == 1 + len(pieces)
            assert max(spans[1:]) < 90 or dilations != (1,)  # a wide refiner's margin may span the file
    enhancer.batch_rows = 4  # the dropout is seeded: another seed, other blanks
    assert not torch.allclose(torch.cat(list(enhancer.enhance_stream(wav, seed=4)), -1), whole)


@pytest.mark.parametrize("mean_levels", [True, False])
def test_streamed_codec_render_equals_whole_file_with_a_frame_local_decoder(folder, mean_levels):
    """dmel-16k's vocoder decodes within `decode_context_frames`, which the render margin includes."""
    enhancer = enhancer_with_small_chunks(folder, codec="dmel-16k")
    assert enhancer.render_margin >= enhancer.codec.decode_context_frames > 0
    wav = noisy(70 * HOP - 5)
    whole, pieces = whole_and_streamed(enhancer, wav, 2, render="codec", mean_levels=mean_levels)
    assert whole.shape == (1, wav.shape[-1]) and whole.abs().max() > 0 and len(pieces) > 2
    torch.testing.assert_close(torch.cat(pieces, -1), whole, atol=1e-6, rtol=1e-5)


def test_enhance_stream_lengths_are_exact(folder, tmp_path, gl_codec):
    enhancer = enhancer_with_small_chunks(folder)
    enhancer.batch_rows = 2  # one chunk (at both gains) a block
    for n in (1, HOP - 1, HOP, HOP + 1, 13 * HOP - 77, 61 * HOP + 3):
        pieces = list(enhancer.enhance_stream(noisy(n)))
        assert [p.shape[:1] for p in pieces] == [(1,)] * len(pieces)
        assert sum(p.shape[-1] for p in pieces) == n, n
    codes = gl_codec.encode(noisy(97 * HOP - 100).view(1, 1, -1))[0]
    tokens = tmp_path / "noisy.npz"  # a token file: its frames' worth, decoded with a crossfade (GL)
    save_tokens(tokens, TokenFile.from_codec(gl_codec, codes, 97 * HOP - 100, SR))
    with pytest.warns(UserWarning, match="no waveform"):
        pieces = list(enhancer.enhance_stream(tokens))
    assert sum(p.shape[-1] for p in pieces) == 97 * HOP and len(pieces) > 1


def test_cli_enhance_writes_a_long_file_piece_by_piece(folder, tmp_path, monkeypatch):
    wav = noisy(80 * HOP - 77)
    sf.write(tmp_path / "noisy.wav", wav.numpy(), SR, subtype="FLOAT")
    reference = enhancer_with_small_chunks(folder).enhance(tmp_path / "noisy.wav")
    pieces = []
    stream = Enhancer.enhance_stream

    def small_blocks(self, *a, **kw):  # as the CLI loads it, with small chunks and blocks, pieces counted
        self.meta["training"], self.batch_rows = {"crop_frames": 10}, 2
        for piece in stream(self, *a, **kw):
            pieces.append(piece.shape[-1])
            yield piece

    monkeypatch.setattr(Enhancer, "enhance_stream", small_blocks)
    monkeypatch.setattr(Enhancer, "enhance", lambda *a, **kw: pytest.fail("the CLI holds the whole output"))
    out = tmp_path / "clean.wav"
    assert main(["enhance", str(tmp_path / "noisy.wav"), str(out), "--model", str(folder)]) == 0
    got, sr = sf.read(out, dtype="float32")
    assert sr == SR and got.shape == (wav.shape[-1],) and len(pieces) > 2 and sum(pieces) == wav.shape[-1]
    assert np.abs(got - reference[0].numpy()).max() <= 1 / 32768 + 1e-6  # 16-bit wav: within an LSB
    (tmp_path / "dir").mkdir()  # a folder of inputs streams the same way
    sf.write(tmp_path / "dir" / "a.wav", wav.numpy(), SR, subtype="FLOAT")
    assert main(["enhance", str(tmp_path / "dir"), str(tmp_path / "dir_out"), "--model", str(folder)]) == 0
    np.testing.assert_array_equal(sf.read(tmp_path / "dir_out" / "a.wav", dtype="float32")[0], got)
