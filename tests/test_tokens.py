"""Token-file format: round trips, deterministic bytes, and refusal of broken files."""

import zipfile

import numpy as np
import pytest

from speechtok.codecs import DMelCodec, load_codec
from speechtok.tokens import (
    TOKEN_FORMAT_VERSION,
    TokenFile,
    TokenFileError,
    codec_hash,
    codes_dtype,
    iter_tokens,
    load_tokens,
    read_shard,
    save_shard,
    save_tokens,
    write_npz,
)


@pytest.fixture(scope="module")
def codec():
    return load_codec("dmel-16k-gl")


def make(codec, n_samples=16000, orig_sr=22050, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, codec.codebook_size, size=(codec.n_codebooks, codec.n_frames(n_samples)))
    return TokenFile.from_codec(codec, codes, n_samples, orig_sr)


def test_codes_dtype_is_smallest_unsigned():
    assert codes_dtype(16) == np.uint8 and codes_dtype(256) == np.uint8
    assert codes_dtype(257) == np.uint16 and codes_dtype(65536) == np.uint16
    assert codes_dtype(65537) == np.uint32


def test_codec_hash_tracks_config(codec):
    assert codec_hash(codec) == codec_hash(load_codec("dmel-16k-gl"))
    assert codec_hash(codec) != codec_hash(DMelCodec(n_bins=32))
    assert len(codec_hash(codec)) == 16


def test_round_trip_keeps_codes_and_metadata(codec, tmp_path):
    tf = make(codec, n_samples=16001)
    path = save_tokens(tmp_path / "sub" / "x.npz", tf)
    back = load_tokens(path)
    assert back.codes.dtype == np.uint8 and back.codes.shape == (80, 51)
    np.testing.assert_array_equal(back.codes, tf.codes)
    assert (back.codec, back.codec_hash, back.sample_rate, back.frame_rate) == (
        "dmel-16k-gl",
        codec_hash(codec),
        16000,
        50.0,
    )
    assert (back.n_samples, back.orig_sample_rate, back.format_version) == (16001, 22050, TOKEN_FORMAT_VERSION)
    assert back.bitrate == 16000 and back.duration == pytest.approx(16001 / 16000)
    # a plain numpy reader needs no pickles
    with np.load(path, allow_pickle=False) as npz:
        assert str(npz["codec"]) == "dmel-16k-gl" and npz["codes"].shape == (80, 51)
    assert [p.name for p in path.parent.iterdir()] == ["x.npz"]  # no temp file left behind


def test_bytes_are_deterministic(codec, tmp_path):
    tf = make(codec)
    a = save_tokens(tmp_path / "a.npz", tf).read_bytes()
    assert save_tokens(tmp_path / "b.npz", tf).read_bytes() == a
    arrays = dict(np.load(tmp_path / "a.npz"))
    reordered = dict(reversed(list(arrays.items())))  # entry order must not depend on dict order
    assert write_npz(tmp_path / "c.npz", reordered).read_bytes() == a
    with zipfile.ZipFile(tmp_path / "c.npz") as zf:
        names = zf.namelist()
        assert names == sorted(names) and all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())


@pytest.mark.parametrize(
    "damage", ["truncate", "garbage", "plain_npz", "frames", "hash", "version", "float", "range", "ndim"]
)
def test_broken_files_are_refused_naming_the_file(codec, tmp_path, damage):
    path = save_tokens(tmp_path / "t.npz", make(codec))
    arrays = dict(np.load(path))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip at all")
    elif damage == "plain_npz":
        np.savez(path, codes=arrays["codes"])
    else:
        if damage == "frames":
            arrays["codes"] = arrays["codes"][:, :-1]
        elif damage == "hash":
            arrays["codec_hash"] = np.array("0" * 16)
        elif damage == "float":  # float codes would decode silently after a cast: refused, never rounded
            arrays["codes"] = arrays["codes"].astype(np.float32) + 0.4
        elif damage == "range":
            arrays["codes"] = arrays["codes"].astype(np.int16) - 1
        elif damage == "ndim":
            arrays["codes"] = arrays["codes"][0]
        else:
            arrays["format_version"] = np.array(TOKEN_FORMAT_VERSION + 1)
        write_npz(path, arrays)
    with pytest.raises(TokenFileError, match=str(path)) as exc:
        load_tokens(path)
    expected = {
        "truncate": "not a valid token file",
        "garbage": "not a valid token file",
        "plain_npz": "missing",
        "frames": "does not match",
        "hash": "corrupt",
        "version": "newer",
        "float": "codes are float32, not integers",
        "range": "outside the codebook [0, 16)",
        "ndim": "codes must be [K, F]",
    }[damage]
    assert expected in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(TokenFileError, match="does not exist"):
        load_tokens(tmp_path / "nope.npz")


def test_shard_round_trip_with_failures(codec, tmp_path):
    items = {"b/2": make(codec, 8000, 16000, seed=1), "a": make(codec, 16000, 44100, seed=2)}
    path = save_shard(tmp_path / "shard-00000.npz", items, {"c": "audio is empty (0 samples)"})
    back, failed = read_shard(path)
    assert list(back) == ["a", "b/2"] and failed == {"c": "audio is empty (0 samples)"}
    for uid, tf in items.items():
        np.testing.assert_array_equal(back[uid].codes, tf.codes)
        assert (back[uid].n_samples, back[uid].orig_sample_rate) == (tf.n_samples, tf.orig_sample_rate)
    assert [uid for uid, _ in iter_tokens(path)] == ["a", "b/2"]
    with pytest.raises(TokenFileError, match="shard of 2 utterances"):
        load_tokens(path)
    other = TokenFile.from_codec(DMelCodec(n_bins=32), np.zeros((80, 50), dtype=np.int64), 16000, 16000)
    with pytest.raises(TokenFileError, match="different codec"):
        save_shard(tmp_path / "mixed.npz", {"a": items["a"], "z": other})


def test_float_codes_are_refused(codec, tmp_path):
    with pytest.raises(TokenFileError, match="codes must be integers, got float64"):
        TokenFile.from_codec(codec, np.zeros((80, 50)), 16000, 16000)
    items = {"a": make(codec)}
    items["a"].codes = items["a"].codes.astype(np.float32)
    path = save_shard(tmp_path / "shard.npz", items)
    with pytest.raises(TokenFileError, match=f"cannot read token file {path}: codes are float32, not integers"):
        read_shard(path)
