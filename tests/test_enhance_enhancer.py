"""The Enhancer on a tiny random model: chunking, mean levels, rendering through the noisy input,
input gains; and the model config's `render` block, with the older layout that kept it in `sampling`."""

import json

import pytest
import torch

from speechtok.enhance import BandGainFilter, Enhancer, GainRefiner, LMInputError, load_enhancer
from speechtok.lm import SamplingConfig
from speechtok.lm.checkpoint import read_lm_config, save_lm, split_render
from speechtok.tokens import TokenFile, save_tokens
from tests.conftest import harmonic_tone, tiny_dmel_lm

SR = 16000


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def codec(gl_codec):
    return gl_codec


@pytest.fixture(scope="module")
def models(tmp_path_factory, codec):
    """A folder with a tiny enhance model for dmel-16k-gl."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("pretrained")
    enh = tiny_dmel_lm(16, src_codebooks=80, max_len_ratio=1.0, max_len=64)
    save_lm(folder / "enhance-dmel-16k-gl", enh, "enhance", codec, sampling={"temperature": 0.0})
    return folder


def test_enhance_keeps_the_length_and_chunks_long_inputs(models):
    enhancer = load_enhancer(folder=models)
    assert enhancer.chunk_frames < 50  # max_len 64: a 1.3 s input needs several chunks
    wav = torch.from_numpy(harmonic_tone(1.3)) + 0.05 * torch.randn(int(1.3 * SR))
    out = enhancer.enhance(wav)
    assert out.shape == (1, wav.shape[-1]) and torch.isfinite(out).all()
    assert [w.shape for w in enhancer.enhance_batch([wav[:8000], wav])] == [(1, 8000), (1, wav.shape[-1])]
    with pytest.raises(LMInputError, match="8000 Hz"):
        enhancer.enhance(wav, sr=8000)
    enhancer.meta["training"] = {"crop_frames": 10}  # chunks no longer than the training crops
    assert enhancer.chunk_frames == 10 and enhancer.enhance(wav).shape == (1, wav.shape[-1])
    seen, generate = [], enhancer.lm.generate
    enhancer.lm.generate = lambda src, src_len, *a, **kw: (
        seen.append(src_len.tolist()) or generate(src, src_len, *a, **kw)
    )
    hop = enhancer.codec.hop_length
    assert enhancer.enhance(wav[: 23 * hop]).shape == (1, 23 * hop)
    assert seen == [[8, 8, 7]]  # equal chunks, not 10 + 10 + a 3-frame tail with little context


def test_enhance_can_decode_the_mean_level(models):
    enhancer = load_enhancer(folder=models)
    wav = torch.from_numpy(harmonic_tone(0.5)) + 0.05 * torch.randn(SR // 2)
    codes, mean = enhancer.enhance(wav), enhancer.enhance(wav, mean_levels=True)
    assert mean.shape == codes.shape == (1, SR // 2) and not torch.allclose(mean, codes)
    enhancer.mean_levels = True  # as a model's render.mean_levels sets it
    torch.testing.assert_close(enhancer.enhance(wav), mean)
    enhancer.set_level_dropout(3, 0.5)  # as render.level_passes / level_blank set it
    dropped = enhancer.enhance(wav, seed=1)
    assert not torch.allclose(dropped, mean)
    torch.testing.assert_close(enhancer.enhance(wav, seed=1), dropped)  # the blanks are seeded
    with pytest.raises(LMInputError, match="blank share"):
        enhancer.set_level_dropout(blank=1.0)
    enhancer.codec = type("Plain", (), {"name": "plain"})()  # a codec without ordinal levels
    with pytest.raises(LMInputError, match="no ordinal levels"):
        enhancer.enhance(wav)


def test_enhance_can_render_through_the_noisy_input(models, tmp_path, codec, monkeypatch):
    enhancer = load_enhancer(folder=models)
    wav = torch.from_numpy(harmonic_tone(0.5)) + 0.05 * torch.randn(SR // 2)
    captured, filter_mixture = [], BandGainFilter.filter_mixture
    monkeypatch.setattr(
        BandGainFilter,
        "filter_mixture",
        lambda self, mix, levels, *a: captured.append((mix, levels)) or filter_mixture(self, mix, levels, *a),
    )
    out = enhancer.enhance(wav, render="mixture")
    monkeypatch.undo()
    ((mix, levels),) = captured
    torch.testing.assert_close(mix[0], wav[None])  # the input itself is filtered
    assert levels.shape == (1, 80, 25) and out.shape == (1, SR // 2)
    assert 0 < out.square().sum() <= 1.01 * wav.square().sum()  # a filter of the input: gains <= 1
    enhancer.render = "mixture"  # as a model's render.mode sets it
    torch.testing.assert_close(enhancer.enhance(wav), out)
    tokens = tmp_path / "noisy.npz"
    save_tokens(tokens, TokenFile.from_codec(codec, codec.encode(wav.view(1, 1, -1))[0], SR // 2, SR))
    with pytest.warns(UserWarning, match="no waveform"):  # the default: decoded instead, and said so
        assert enhancer.enhance(tokens).shape == (1, SR // 2)
    with pytest.raises(LMInputError, match="needs the noisy waveform"):  # asked for: refused
        enhancer.enhance(tokens, render="mixture")
    with pytest.raises(LMInputError, match="render must be one of"):
        enhancer.enhance(wav, render="vocoder")
    enhancer.codec = type("Plain", (), {"name": "plain"})()
    with pytest.raises(LMInputError, match="cannot apply its tokens"):
        enhancer.enhance(wav)


def test_enhance_averages_over_input_gains(models, tmp_path, codec):
    enhancer = load_enhancer(folder=models)
    enhancer.mean_levels, enhancer.render = True, "mixture"
    wav = torch.from_numpy(harmonic_tone(0.5)) + 0.05 * torch.randn(SR // 2)
    plain, twice = enhancer.enhance(wav), 10 ** (6 / 20)
    at_6db = enhancer.enhance(wav * twice) / twice
    assert not torch.allclose(at_6db, plain, atol=1e-4)  # other codes: the quantisation falls elsewhere
    enhancer.set_input_gains([6.0])  # as render.input_gains_db sets it
    torch.testing.assert_close(enhancer.enhance(wav), at_6db)  # enhanced at +6 dB, scaled back
    enhancer.set_input_gains([0.0, 6.0])
    torch.testing.assert_close(enhancer.enhance(wav), (plain + at_6db) / 2, atol=1e-5, rtol=1e-4)
    tokens = tmp_path / "noisy.npz"  # no waveform to scale: enhanced once, beside a waveform that is not
    save_tokens(tokens, TokenFile.from_codec(codec, codec.encode(wav.view(1, 1, -1))[0], SR // 2, SR))
    with pytest.warns(UserWarning, match="no waveform"):
        from_tokens, both = enhancer.enhance_batch([tokens, wav])
    enhancer.set_input_gains([0.0])
    with pytest.warns(UserWarning, match="no waveform"):
        torch.testing.assert_close(from_tokens, enhancer.enhance(tokens), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(both, (plain + at_6db) / 2, atol=1e-5, rtol=1e-4)
    for bad in ([], [float("nan")], [60.0]):
        with pytest.raises(LMInputError, match="input gains"):
            enhancer.set_input_gains(bad)


@pytest.mark.parametrize("refined", [False, True])
def test_gain_floor_bounds_what_the_mixture_render_removes(models, refined):
    enhancer = load_enhancer(folder=models)
    enhancer.mean_levels, enhancer.render = True, "mixture"
    if refined:
        enhancer.refiner = GainRefiner()
    wav = torch.from_numpy(harmonic_tone(0.5)) + 0.05 * torch.randn(SR // 2)
    energy = {}
    for floor in (0.05, 0.3, 1.0):
        enhancer.set_gain_floor(floor)
        energy[floor] = enhancer.enhance(wav).square().sum()
    assert energy[0.05] < energy[0.3] < energy[1.0]  # a higher floor removes less
    enhancer.set_gain_floor(1.0)  # every gain 1: the input itself, through the STFT and back
    torch.testing.assert_close(enhancer.enhance(wav)[0], wav, atol=1e-4, rtol=1e-4)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(LMInputError, match="gain floor"):
            enhancer.set_gain_floor(bad)


def test_render_settings_are_split_from_sampling():
    old = {
        "temperature": 0.0,
        "rep_window": 0,
        "mean_levels": True,
        "render": "mixture",
        "level_passes": 1,
        "level_blank": 0.5,
        "input_gains_db": [-1.0, 1.0],
    }
    sampling, render = split_render(old)
    assert sampling == {"temperature": 0.0, "rep_window": 0}
    assert render == {
        "mode": "mixture",
        "mean_levels": True,
        "level_passes": 1,
        "level_blank": 0.5,
        "input_gains_db": [-1.0, 1.0],
    }
    assert split_render(sampling, render) == (sampling, render)  # the new layout is left as it is
    # an older key (a `--sampling` override) wins over the render block's own
    assert split_render({"render": "codec"}, {"mode": "mixture", "mean_levels": True}) == (
        {},
        {"mode": "codec", "mean_levels": True},
    )
    assert old["render"] == "mixture"  # the inputs are not changed


def test_a_config_in_the_older_layout_still_loads(models, codec, tmp_path):
    """Folders written before the render block (the bundled ones) kept its settings in sampling."""
    new = models / "enhance-dmel-16k-gl"
    meta = json.loads((new / "config.json").read_text())
    assert meta["sampling"] == {"temperature": 0.0} and meta["render"] == {}
    old = tmp_path / "enhance-old"
    old.mkdir()
    (old / "model.safetensors").write_bytes((new / "model.safetensors").read_bytes())
    del meta["render"]
    meta["sampling"].update(
        render="mixture", mean_levels=True, level_passes=2, level_blank=0.25, input_gains_db=[-3.0, 3.0]
    )
    (old / "config.json").write_text(json.dumps(meta))
    read = read_lm_config(old)
    assert read["sampling"] == {"temperature": 0.0}
    assert read["render"] == {
        "mode": "mixture",
        "mean_levels": True,
        "level_passes": 2,
        "level_blank": 0.25,
        "input_gains_db": [-3.0, 3.0],
    }
    enhancer = load_enhancer(old)
    assert (enhancer.render, enhancer.mean_levels, enhancer.level_passes, enhancer.level_blank) == (
        "mixture",
        True,
        2,
        0.25,
    )
    assert enhancer.input_gains_db == [-3.0, 3.0] and enhancer.sampling == SamplingConfig(temperature=0.0, rep_window=0)
    # the raw old layout handed to the runner directly (as recipes do with a config.json) reads the same
    direct = Enhancer(enhancer.lm, codec, meta, old)
    assert (direct.render, direct.mean_levels, direct.input_gains_db) == ("mixture", True, [-3.0, 3.0])
    meta["render"] = "mixture"
    (old / "config.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="render must be a mapping"):
        read_lm_config(old)


def test_the_bundled_enhancer_reads_its_render_block():
    enhancer = load_enhancer("enhance-dmel-16k")
    assert (enhancer.render, enhancer.mean_levels, enhancer.level_passes, enhancer.level_blank) == (
        "mixture",
        True,
        1,
        0.5,
    )
    assert enhancer.input_gains_db == [-1.47, -0.49, 0.49, 1.47] and enhancer.refiner is not None
    assert enhancer.sampling == SamplingConfig(temperature=0.0, rep_window=0)
