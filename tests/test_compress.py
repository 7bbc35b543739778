"""Entropy-coded token files (.stz): lossless on every bundled codec, the same bytes whatever the
thread count or the folder a file is compressed in, clear errors for bad files and other priors,
and the bundled priors' savings."""

import numpy as np
import pytest
import torch

from speechtok.cli import main as cli_main
from speechtok.codecs import load_codec
from speechtok.compress import StzError, TokenPrior, compress_tokens, decompress_tokens
from speechtok.data.audio import load_audio
from speechtok.lm import LMConfig, TokenLM
from speechtok.lm.checkpoint import save_lm
from speechtok.lm.transformer import TransformerConfig
from speechtok.tokens import TokenFile, save_tokens

EXAMPLE = "examples/flite_slt.flac"
PATTERNS = {"dmel-16k": "parallel", "rvq-16k": "delay", "single-16k-50": "single"}


def tiny_prior(tmp_path, codec, seed=0, max_len=64) -> TokenPrior:
    """A random-weight prior for `codec` (a short window, so files span several)."""
    torch.manual_seed(seed)
    cfg = LMConfig(
        pattern=PATTERNS[codec.name],
        n_codebooks=codec.n_codebooks,
        codebook_size=codec.codebook_size,
        src_vocab=1,
        transformer=TransformerConfig(dim=32, n_layers=1, n_heads=2, max_len=max_len),
    )
    folder = save_lm(tmp_path / f"prior-{codec.name}-{seed}", TokenLM(cfg), "prior", codec)
    return TokenPrior.load(folder)


def example_tokens(codec, seconds=None) -> TokenFile:
    wav = load_audio(EXAMPLE, codec.sample_rate)
    if seconds is not None:  # repeat the example to make a long file
        wav = wav.repeat(1, int(np.ceil(seconds * codec.sample_rate / wav.shape[-1])))[
            :, : int(seconds * codec.sample_rate)
        ]
    codes = codec.encode(wav[None])[0]
    return TokenFile.from_codec(codec, codes, wav.shape[-1], codec.sample_rate)


@pytest.mark.parametrize("name", list(PATTERNS))
def test_round_trip_is_lossless_on_every_bundled_codec(tmp_path, name):
    codec = load_codec(name)
    prior = tiny_prior(tmp_path, codec)
    tf = example_tokens(codec)
    assert tf.n_frames > 2 * prior.window  # several windows, the last one short
    data = compress_tokens(tf, prior)
    back = decompress_tokens(data, prior)
    assert np.array_equal(back.codes, tf.codes) and back.codes.dtype == tf.codes.dtype
    save_tokens(tmp_path / "a.npz", tf)
    save_tokens(tmp_path / "b.npz", back)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_long_file_and_thread_count(tmp_path):
    codec = load_codec("dmel-16k")
    prior = tiny_prior(tmp_path, codec, max_len=128)
    tf = example_tokens(codec, seconds=90.0)  # 4500 frames: more windows than a group
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        data = compress_tokens(tf, prior)
        torch.set_num_threads(1)
        again = compress_tokens(tf, prior)
        back = decompress_tokens(data, prior)
    finally:
        torch.set_num_threads(threads)
    assert data == again and np.array_equal(back.codes, tf.codes)


def test_cli_folder_resumes_and_matches_single_files(tmp_path):
    codec = load_codec("dmel-16k")
    tiny_prior(tmp_path, codec)
    tokens = tmp_path / "tokens"
    for i, seconds in enumerate((1.0, 2.5, 4.0)):
        save_tokens(tokens / "sub" / f"u{i}.npz", example_tokens(codec, seconds))
    (tokens / "bad.npz").write_bytes(b"not a token file")
    folder = str(tmp_path / "prior-dmel-16k-0")
    assert cli_main(["compress", str(tokens), str(tmp_path / "stz"), "--prior", folder]) == 1  # bad.npz reported
    assert "bad.npz" in (tmp_path / "stz" / "failed.tsv").read_text()
    one = tmp_path / "one.stz"
    assert cli_main(["compress", str(tokens / "sub" / "u1.npz"), str(one), "--prior", folder]) == 0
    assert one.read_bytes() == (tmp_path / "stz" / "sub" / "u1.stz").read_bytes()  # alone or in a folder
    stamp = (tmp_path / "stz" / "sub" / "u0.stz").stat().st_mtime_ns
    (tokens / "bad.npz").unlink()
    assert cli_main(["compress", str(tokens), str(tmp_path / "stz"), "--prior", folder]) == 0
    assert (tmp_path / "stz" / "sub" / "u0.stz").stat().st_mtime_ns == stamp  # resumed, not redone
    assert not (tmp_path / "stz" / "failed.tsv").exists()
    assert cli_main(["decompress", str(tmp_path / "stz"), str(tmp_path / "back"), "--prior", folder]) == 0
    for i in range(3):
        assert (tmp_path / "back" / "sub" / f"u{i}.npz").read_bytes() == (tokens / "sub" / f"u{i}.npz").read_bytes()


def test_bad_truncated_and_foreign_files(tmp_path, capsys):
    codec = load_codec("dmel-16k")
    prior, other = tiny_prior(tmp_path, codec, seed=0), tiny_prior(tmp_path, codec, seed=1)
    data = compress_tokens(example_tokens(codec), prior)
    with pytest.raises(StzError, match="bad magic"):
        decompress_tokens(b"RIFF" + data[4:], prior, "x.stz")
    with pytest.raises(StzError, match="format 2"):
        decompress_tokens(b"STZ\x02" + data[4:], prior, "x.stz")
    with pytest.raises(StzError, match="not bundled"):
        decompress_tokens(data, None, "x.stz")
    with pytest.raises(StzError, match="x.stz.*(truncated|corrupt)"):
        decompress_tokens(data[: len(data) // 2 + 1], prior, "x.stz")
    with pytest.raises(StzError, match=rf"x.stz.*coded by prior {prior.hash}, not by 'prior-dmel-16k-1'"):
        decompress_tokens(data, other, "x.stz")
    with pytest.raises(ValueError, match="another codec"):
        compress_tokens(example_tokens(load_codec("single-16k-50")), prior)
    bad = tmp_path / "cut.stz"
    bad.write_bytes(data[:10])
    assert (
        cli_main(["decompress", str(bad), str(tmp_path / "out.npz"), "--prior", str(tmp_path / "prior-dmel-16k-0")])
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "truncated" in err[0]


@pytest.mark.parametrize("name,saved", [("dmel-16k", 0.40)])
def test_bundled_prior_saves_bits_on_unseen_speech(name, saved, tmp_path):
    """The bundled prior codes a voice it never heard (the bundled example) in fewer bits than raw."""
    codec = load_codec(name)
    tf = example_tokens(codec)
    data = compress_tokens(tf, TokenPrior.for_codec(tf))
    assert 1 - len(data) * 8 / (tf.bitrate * tf.duration) >= saved
    assert np.array_equal(decompress_tokens(data).codes, tf.codes)  # the prior named in the file
