"""TTS inference on tiny random models, checkpoints and the tts/enhance CLI: prompts, errors, batches.

The Enhancer's own tests are in test_enhance_enhancer.py."""

import argparse
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from speechtok.codecs import DMelCodec
from speechtok.data.manifest import Utterance, write_manifest
from speechtok.enhance import load_enhancer
from speechtok.lm import cli as lm_cli
from speechtok.lm.checkpoint import CheckpointError, load_lm, save_lm
from speechtok.lm.runner import LMInputError, available_models
from speechtok.tokens import TokenFile, TokenFileError, save_tokens
from speechtok.tts import load_tts
from speechtok.tts.text import TextError, TextFrontend
from tests.conftest import harmonic_tone, tiny_dmel_lm

SR = 16000


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def codec(gl_codec):
    return gl_codec


@pytest.fixture(scope="module")
def models(tmp_path_factory, codec):
    """A folder with a tiny tts and enhance model for dmel-16k-gl."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("pretrained")
    fe = TextFrontend("chars")
    tts = tiny_dmel_lm(fe.vocab_size, max_len_ratio=2.0)
    prompt = codec.encode(torch.from_numpy(harmonic_tone(0.6)).view(1, 1, -1))[0]
    save_lm(
        folder / "tts-dmel-16k-gl",
        tts,
        "tts",
        codec,
        text=fe.config(),
        default_prompt={"codes": prompt, "text": "hi", "symbols": "hi"},
        sampling={"temperature": 1.0},
    )
    enh = tiny_dmel_lm(16, src_codebooks=80, max_len_ratio=1.0, max_len=64)
    save_lm(folder / "enhance-dmel-16k-gl", enh, "enhance", codec, sampling={"temperature": 0.0})
    return folder


def test_checkpoint_round_trip_is_fp16_safetensors(models, codec):
    path = models / "tts-dmel-16k-gl"
    meta = json.loads((path / "config.json").read_text())
    assert meta["task"] == "tts" and meta["pattern"] == "parallel" and meta["codec"]["name"] == "dmel-16k-gl"
    assert meta["text"]["kind"] == "chars" and meta["format_version"] == 1
    assert (path / "model.safetensors").read_bytes()[:1] != b"\x80"  # not a pickle
    lm, meta2 = load_lm(path, codec)
    torch.manual_seed(0)  # the fixture's model, rebuilt: loaded weights are its fp16 rounding
    fe = TextFrontend("chars")
    ref = tiny_dmel_lm(fe.vocab_size, max_len_ratio=2.0)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(lm.state_dict()[k], v.half().float())
    assert meta2["default_prompt"]["codes"].shape == (80, 30)


def test_default_prompt_named_but_missing_is_an_error(models, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "tts-broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((models / "tts-dmel-16k-gl" / "config.json").read_bytes())
    state = load_file(str(models / "tts-dmel-16k-gl" / "model.safetensors"))
    save_file({k: v for k, v in state.items() if k != "default_prompt.codes"}, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match="names a default prompt but model.safetensors lacks its codes"):
        load_lm(broken)


def test_codec_with_other_codes_is_refused_but_another_decoder_is_fine(models):
    with pytest.raises(CheckpointError, match="makes different codes"):
        load_lm(models / "tts-dmel-16k-gl", DMelCodec(n_bins=8))
    vocoded = DMelCodec(vocoder={"dim": 8, "intermediate_dim": 16, "n_layers": 1})
    load_lm(models / "tts-dmel-16k-gl", vocoded)  # same codes, a different decoder


def test_model_discovery_and_errors(models):
    assert available_models(folder=models) == ["enhance-dmel-16k-gl", "tts-dmel-16k-gl"]
    assert available_models("tts", folder=models) == ["tts-dmel-16k-gl"]
    assert load_tts(codec="dmel-16k-gl", folder=models).path.name == "tts-dmel-16k-gl"
    with pytest.raises(CheckpointError, match="unknown model 'nope'"):
        load_tts("nope", folder=models)
    with pytest.raises(CheckpointError, match="is a enhance model"):
        load_tts(models / "enhance-dmel-16k-gl", folder=models)


def test_tts_is_reproducible_with_a_seed_and_batches(models):
    synth = load_tts(folder=models)
    a = synth.tts("hello world", seed=3)
    assert a.dim() == 2 and a.shape[0] == 1 and a.shape[1] > 0 and a.shape[1] % 320 == 0
    assert torch.equal(a, synth.tts("hello world", seed=3))
    assert not torch.equal(a, synth.tts("hello world", seed=4))
    batch = synth.tts_batch(["one", "two three four"], seed=0, max_seconds=0.2)
    assert [w.shape[-1] <= 0.2 * SR for w in batch] == [True, True]


def test_tts_text_errors(models):
    synth = load_tts(folder=models)
    with pytest.raises(TextError, match="empty"):
        synth.tts("  ")
    with pytest.raises(TextError, match="no speakable characters"):
        synth.tts("?!...")


def test_prompt_sample_rate_rules(models, tmp_path):
    synth = load_tts(folder=models)
    with pytest.raises(LMInputError, match="22050 Hz.*needs 16000 Hz"):
        synth.tts("hi", prompt_wav=torch.from_numpy(harmonic_tone(2.0, sr=22050)), prompt_sr=22050)
    path = tmp_path / "ref22k.wav"
    sf.write(path, harmonic_tone(2.0, sr=22050), 22050)  # a file at another rate is resampled
    assert synth.tts("hi", prompt_wav=path, seed=0, max_seconds=0.3).shape[-1] > 0
    assert synth.tts("hi", prompt_wav=torch.from_numpy(harmonic_tone(2.0)), seed=0, max_seconds=0.3).shape[-1] > 0
    with pytest.raises(LMInputError, match="the clip is silent"):
        synth.tts("hi", prompt_wav=torch.zeros(SR))


def test_a_silent_prompt_is_called_silent(models):
    synth = load_tts(folder=models)
    for silent in (torch.zeros(3 * SR), 1e-4 * torch.randn(3 * SR)):  # digital silence, a -80 dBFS hiss
        with pytest.raises(LMInputError, match="prompt: the clip is silent") as err:
            synth.tts("hi", prompt_wav=silent)
        assert "s of sound" not in str(err.value)
    short = torch.zeros(3 * SR)
    short[SR : SR + SR // 5] = torch.from_numpy(harmonic_tone(0.2))  # 0.2 s of speech-loud sound in 3 s
    with pytest.raises(LMInputError, match=r"only 0\.\d\d s of sound after trimming silence") as err:
        synth.tts("hi", prompt_wav=short)
    assert "silent" not in str(err.value)


def test_token_file_from_another_codec_is_refused(models, tmp_path, codec):
    other = DMelCodec(n_bins=8)
    other.name = "dmel-8bins"
    wav = torch.from_numpy(harmonic_tone(1.0)).view(1, 1, -1)
    bad = save_tokens(tmp_path / "other.npz", TokenFile.from_codec(other, other.encode(wav)[0], SR, SR))
    good = save_tokens(tmp_path / "same.npz", TokenFile.from_codec(codec, codec.encode(wav)[0], SR, SR))
    synth = load_tts(folder=models)
    with pytest.raises(TokenFileError, match="made by codec 'dmel-8bins'"):
        synth.tts("hi", prompt_wav=bad)
    assert synth.tts("hi", prompt_wav=good, seed=0, max_seconds=0.2).shape[-1] > 0
    enhancer = load_enhancer(folder=models)
    with pytest.raises(TokenFileError, match="made by codec 'dmel-8bins'"):
        enhancer.enhance(bad)
    assert enhancer.enhance(good).shape == (1, SR)


def _args(add, argv):
    p = argparse.ArgumentParser()
    add(p)
    return p.parse_args([str(a) for a in argv])


def test_cli_tts_single_and_batch(models, tmp_path, capsys):
    model = models / "tts-dmel-16k-gl"
    out = tmp_path / "one.wav"
    rc = lm_cli.run_tts(
        _args(lm_cli.add_tts_arguments, ["hello", "-o", out, "--model", model, "--seed", 1, "--max-seconds", 0.3])
    )
    assert rc == 0 and sf.info(out).samplerate == SR
    lines = tmp_path / "lines.txt"
    lines.write_text("first line\n\n!!!\nthird line\n")
    rc = lm_cli.run_tts(
        _args(
            lm_cli.add_tts_arguments,
            ["--text-file", lines, "--out-dir", tmp_path / "batch", "--model", model, "--max-seconds", 0.3],
        )
    )
    assert rc == 1  # the "!!!" line failed and is reported; the others were written
    assert sorted(p.name for p in (tmp_path / "batch").glob("*.wav")) == ["0001.wav", "0004.wav"]
    assert (tmp_path / "batch" / "failed.tsv").read_text().splitlines()[:2] == [
        "input\treason",
        "line 3\ttext '!!!' has no speakable characters (only punctuation or symbols)",
    ]
    rc = lm_cli.run_tts(_args(lm_cli.add_tts_arguments, ["", "-o", out, "--model", model]))
    assert rc == 2 and "empty" in capsys.readouterr().err


def test_cli_tts_manifest_gives_each_row_its_id_and_voice(models, tmp_path):
    sf.write(tmp_path / "voice.wav", harmonic_tone(1.0, 220.0), SR)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    rows = [
        Utterance("a1", "x", 1.0, text="first line", extra={"prompt_path": str(tmp_path / "voice.wav")}),
        Utterance("a2", "x", 1.0, text="second line", extra={"prompt_path": str(tmp_path / "voice.wav")}),
        Utterance("b1", "x", 1.0, text="third line", extra={"prompt_path": str(tmp_path / "broken.wav")}),
        Utterance("c1", "x", 1.0, text="no prompt here", extra={"prompt_path": ""}),
    ]
    write_manifest(tmp_path / "sentences.csv", rows)
    out = tmp_path / "gen"
    rc = lm_cli.run_tts(
        _args(
            lm_cli.add_tts_arguments,
            [
                "--text-file",
                tmp_path / "sentences.csv",
                "--out-dir",
                out,
                "--model",
                models / "tts-dmel-16k-gl",
                "--max-seconds",
                0.3,
            ],
        )
    )
    assert rc == 1 and sorted(p.name for p in out.glob("*.wav")) == ["a1.wav", "a2.wav", "c1.wav"]
    assert "b1\tcannot read audio broken.wav: " in (out / "failed.tsv").read_text().replace(str(tmp_path) + "/", "")
    write_manifest(tmp_path / "empty.csv", [Utterance("e", "x", 1.0, text=" ")])
    rc = lm_cli.run_tts(
        _args(
            lm_cli.add_tts_arguments,
            ["--text-file", tmp_path / "empty.csv", "--out-dir", out, "--model", models / "tts-dmel-16k-gl"],
        )
    )
    assert rc == 2


def test_cli_enhance_file_and_folder(models, tmp_path):
    model = models / "enhance-dmel-16k-gl"
    noisy = tmp_path / "in"
    (noisy / "sub").mkdir(parents=True)
    sf.write(noisy / "a.flac", harmonic_tone(0.5), SR)
    sf.write(noisy / "sub" / "b.wav", harmonic_tone(0.7, sr=8000), 8000)
    (noisy / "broken.wav").write_bytes(b"not audio")
    rc = lm_cli.run_enhance(
        _args(lm_cli.add_enhance_arguments, [noisy / "a.flac", tmp_path / "a.wav", "--model", model])
    )
    assert rc == 0 and sf.info(tmp_path / "a.wav").frames == 8000
    rc = lm_cli.run_enhance(
        _args(lm_cli.add_enhance_arguments, [noisy / "a.flac", tmp_path / "m.wav", "--model", model, "--mean-levels"])
    )
    assert rc == 0 and not np.allclose(sf.read(tmp_path / "m.wav")[0], sf.read(tmp_path / "a.wav")[0])
    rc = lm_cli.run_enhance(
        _args(
            lm_cli.add_enhance_arguments,
            [
                noisy / "a.flac",
                tmp_path / "d.wav",
                "--model",
                model,
                "--mean-levels",
                "--level-passes",
                "2",
                "--level-blank",
                "0.5",
            ],
        )
    )
    assert rc == 0 and not np.allclose(sf.read(tmp_path / "d.wav")[0], sf.read(tmp_path / "m.wav")[0])
    assert (
        lm_cli.run_enhance(
            _args(
                lm_cli.add_enhance_arguments,
                [noisy / "a.flac", tmp_path / "x.wav", "--model", model, "--level-blank", "1"],
            )
        )
        == 2
    )
    rc = lm_cli.run_enhance(
        _args(
            lm_cli.add_enhance_arguments,
            [noisy / "a.flac", tmp_path / "g.wav", "--model", model, "--mean-levels", "--input-gains-db", "-3", "3"],
        )
    )
    assert rc == 0 and not np.allclose(sf.read(tmp_path / "g.wav")[0], sf.read(tmp_path / "m.wav")[0])
    rc = lm_cli.run_enhance(
        _args(
            lm_cli.add_enhance_arguments,
            [noisy / "a.flac", tmp_path / "f.wav", "--model", model, "--render", "mixture"],
        )
    )
    assert rc == 0 and not np.allclose(sf.read(tmp_path / "f.wav")[0], sf.read(tmp_path / "a.wav")[0])
    rc = lm_cli.run_enhance(  # every gain 1: the noisy input comes back
        _args(
            lm_cli.add_enhance_arguments,
            [noisy / "a.flac", tmp_path / "k.wav", "--model", model, "--render", "mixture", "--gain-floor", "1"],
        )
    )
    assert rc == 0 and np.allclose(sf.read(tmp_path / "k.wav")[0], sf.read(noisy / "a.flac")[0], atol=1e-3)
    args = [noisy / "a.flac", tmp_path / "k.wav", "--model", model, "--gain-floor", "0"]
    assert lm_cli.run_enhance(_args(lm_cli.add_enhance_arguments, args)) == 2
    (noisy / "gone.wav").symlink_to(tmp_path / "deleted.wav")  # broken links: listed as failed, not skipped
    (noisy / "sub" / "gone.npz").symlink_to(tmp_path / "deleted.npz")
    rc = lm_cli.run_enhance(_args(lm_cli.add_enhance_arguments, [noisy, tmp_path / "out", "--model", model]))
    rows = dict(line.split("\t") for line in (tmp_path / "out" / "failed.tsv").read_text().splitlines()[1:])
    assert rc == 1 and sorted(rows) == [str(noisy / n) for n in ("broken.wav", "gone.wav", "sub/gone.npz")]
    assert rows[str(noisy / "gone.wav")].startswith("broken symbolic link")
    assert rows[str(noisy / "sub/gone.npz")].startswith("broken symbolic link")
    assert sf.info(tmp_path / "out" / "sub" / "b.wav").frames == int(0.7 * SR)


LONG_TEXT = (
    "The old lighthouse keeper climbed the narrow stairs every evening, lit the great lamp, and watched "
    "the ships pass safely through the dark and stormy channel. In winter the waves rose higher than the "
    "rocks, the wind howled around the tower, and the glass rattled in its frame; still, the light never "
    "failed. Sailors spoke of him in every harbour along the coast: a quiet man, they said, who kept the "
    "flame alive for forty years without asking for thanks. When he finally retired, the village gathered "
    "on the cliff to watch the new electric beacon turn for the first time, and many of them wept."
)


def test_long_text_is_cut_to_fit_and_joined_with_pauses(codec, tmp_path):
    """A durations model (lengths known in advance) with 192 positions: a long text is spoken in
    pieces that each fit, their frames exactly as predicted, with silent pauses between them."""
    torch.manual_seed(0)
    fe = TextFrontend("chars")
    lm = tiny_dmel_lm(fe.vocab_size, durations=True, aligned_source=True, aligned_positions=True, max_len=192)
    save_lm(tmp_path / "tts-short", lm, "tts", codec, text=fe.config(), sampling={"temperature": 1.0})
    vocoded = DMelCodec(vocoder={"dim": 8, "intermediate_dim": 16, "n_layers": 1})  # same codes, fast to decode
    synth = load_tts(tmp_path / "tts-short", codec=vocoded)
    with pytest.raises(ValueError, match="too long for max_len 192"):  # one row would not fit: what tts() avoids
        synth.lm.generate(*synth.inputs([LONG_TEXT])[:2])
    (pieces,) = synth._pieces([LONG_TEXT], None, "", None)
    assert len(pieces) > 5 and " ".join(p for p, _ in pieces) == " ".join(LONG_TEXT.split())
    frames = []
    for piece, _ in pieces:
        src, src_len, *_ = synth.inputs([piece])
        frames.append(int(synth.lm.predict_durations(src, src_len).sum()))
        assert src_len.item() + 1 + frames[-1] <= 192  # source, separator and frames fit the positions
    hop, fr = codec.hop_length, codec.frame_rate
    gaps = [round(synth.pauses[b] * fr) * hop for _, b in pieces[:-1]]
    wav = synth.tts(LONG_TEXT, seed=0)
    assert wav.shape == (1, sum(frames) * hop + sum(gaps))
    torch.testing.assert_close(synth.tts(LONG_TEXT, seed=0), wav)  # one seed, one output
    start = frames[0] * hop  # the first pause: silence, after a faded-out edge
    assert gaps[0] > 0 and not wav[0, start : start + gaps[0]].any() and wav[0, start - 1] == 0
    assert wav[0, start - 200 : start - 80].abs().sum() > 0
    assert [w.shape for w in synth.tts_batch(["Short one.", LONG_TEXT], seed=0)][1] == wav.shape


@pytest.mark.slow
def test_bundled_tts_speaks_a_paragraph_to_one_file(tmp_path):
    """tts-dmel-16k has 1024 positions, about 170 characters of text beside its voice: a 600-character
    paragraph is cut into sentences, spoken and joined into one file."""
    assert len(LONG_TEXT) > 550
    out = tmp_path / "paragraph.wav"
    rc = lm_cli.run_tts(_args(lm_cli.add_tts_arguments, [LONG_TEXT, "-o", out, "--seed", 0]))
    assert rc == 0
    seconds = sf.info(out).duration
    assert 20 < seconds < 75  # about 100 words at 1.5 to 5 words a second
    synth = load_tts("tts-dmel-16k")
    first = LONG_TEXT.split(". ")[0] + "."
    assert seconds > 3 * synth.tts(first, seed=0).shape[-1] / synth.sample_rate


def test_tts_with_durations_speaks_for_as_long_as_they_say(codec, tmp_path):
    """A durations model: with the default voice (a clip and its transcript) the transcript is
    stretched over the clip and the text follows at the clip's pace; with a speaker prompt the
    text is as long as predicted."""
    torch.manual_seed(0)
    fe = TextFrontend("chars")
    lm = tiny_dmel_lm(fe.vocab_size, durations=True, aligned_source=True, aligned_positions=True)
    prompt = codec.encode(torch.from_numpy(harmonic_tone(0.6)).view(1, 1, -1))[0]  # 30 frames
    save_lm(
        tmp_path / "tts-dur",
        lm,
        "tts",
        codec,
        text=fe.config(),
        default_prompt={"codes": prompt, "text": "hi", "symbols": "hi"},
        sampling={"temperature": 1.0},
    )
    synth = load_tts(tmp_path / "tts-dur", codec=codec)
    text_ids = torch.tensor([fe.ids(fe.to_symbols("hello world"))])
    said = int(synth.lm.predict_durations(text_ids).sum())
    src, src_len, _, _, timeline = synth.inputs(["hello world"])
    dur = timeline["durations"][0]
    assert timeline["continue_prompt"] and int(dur[:3].sum()) == prompt.shape[-1]  # "hi " fills the clip
    assert synth.tts("hello world", seed=0).shape[-1] == int(dur[3:].sum()) * codec.hop_length
    speaker = synth.tts("hello world", prompt_wav=torch.from_numpy(harmonic_tone(2.0)), seed=0)
    assert speaker.shape[-1] == said * codec.hop_length
    # mean levels: the same frames, rendered from the model's expected level of each (also when cut short)
    for kw in ({}, {"prompt_wav": torch.from_numpy(harmonic_tone(2.0))}):
        codes = synth.tts("hello world", seed=0, **kw)
        levels = synth.tts("hello world", seed=0, mean_levels=True, **kw)
        assert levels.shape == codes.shape and not torch.equal(levels, codes)
        cut = synth.tts("hello world", seed=0, mean_levels=True, max_seconds=0.1, **kw)
        assert cut.shape[-1] == 5 * codec.hop_length
    with pytest.raises(LMInputError, match="cannot hold"):
        synth.tts("hi", prompt_wav=torch.from_numpy(harmonic_tone(0.02)), prompt_text="a much longer transcript")
