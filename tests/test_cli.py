"""`speechtok` CLI: batch encode (failures, resume, batching, shards, torchrun), decode, info, codecs."""

import importlib
import os
import re
import shutil
import socket
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechtok.cli import main
from speechtok.codecs import DMelCodec, load_codec
from speechtok.data.audio import load_audio
from speechtok.data.manifest import read_manifest
from speechtok.tokens import TokenFile, load_shard, load_tokens, save_tokens

REPO = Path(__file__).resolve().parents[1]
CODEC = "dmel-16k-gl"
GOOD = {"a": "a.wav", "sub/b": "sub/b.flac", "sub/c": "sub/c.ogg", "sub/deep/d": "sub/deep/d.wav"}
BAD = {"empty.wav": "audio is empty", "corrupt.wav": "not a readable audio file", "nan.wav": "NaN"}


def chirp(seconds, sr, f0=150.0, f1=3000.0):
    t = np.arange(int(seconds * sr)) / sr
    return 0.4 * np.sin(2 * np.pi * (f0 + (f1 - f0) * t / (2 * seconds)) * t)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "sub" / "deep").mkdir(parents=True)
    sf.write(root / "a.wav", chirp(1.0, 16000), 16000)
    sf.write(root / "sub/b.flac", chirp(1.5, 22050, 300, 5000), 22050)
    stereo = np.stack([chirp(1.0, 16000), chirp(1.0, 16000, 800, 200)], axis=1)
    sf.write(root / "sub/c.ogg", stereo, 16000)
    sf.write(root / "sub/deep/d.wav", chirp(0.7, 8000, 100, 3000), 8000)
    sf.write(root / "empty.wav", np.zeros(0), 16000)
    (root / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" * 8)
    nan = chirp(0.5, 16000).astype(np.float32)
    nan[100] = np.nan
    sf.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    (root / "notes.txt").write_text("not audio, ignored")
    return root


def encode(inp, out, *extra, capsys=None):
    rc = main(["encode", str(inp), str(out), "--codec", CODEC, *map(str, extra)])
    return (rc, capsys.readouterr()) if capsys else rc


@pytest.fixture(scope="module")
def encoded(corpus, tmp_path_factory) -> Path:
    """Default settings: 2 reader workers, length-bucketed batches of 8."""
    out = tmp_path_factory.mktemp("encoded")
    assert encode(corpus, out) == 1  # bad files -> non-zero exit
    return out


def npz_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.npz"))}


def test_encode_mirrors_tree_and_records_metadata(corpus, encoded):
    assert sorted(npz_files(encoded)) == sorted(f"{uid}.npz" for uid in GOOD)
    codec = load_codec(CODEC)
    for uid, name in GOOD.items():
        tf = load_tokens(encoded / f"{uid}.npz")
        orig_sr = sf.info(corpus / name).samplerate
        wav = load_audio(corpus / name, 16000)  # resampled, stereo mixed down
        assert (tf.codec, tf.sample_rate, tf.frame_rate, tf.orig_sample_rate) == (CODEC, 16000, 50.0, orig_sr)
        assert tf.n_samples == wav.shape[-1] and tf.codes.dtype == np.uint8
        np.testing.assert_array_equal(tf.codes, codec.encode(wav[None])[0].numpy())
    assert load_tokens(encoded / "sub/b.npz").n_samples == 24000  # 1.5 s at 22.05 kHz -> 16 kHz


def test_failed_report_lists_exactly_the_bad_files(corpus, encoded):
    lines = (encoded / "failed.tsv").read_text().splitlines()
    assert lines[0] == "path\treason"
    rows = dict(line.split("\t") for line in lines[1:])
    assert sorted(rows) == sorted(str(corpus / n) for n in BAD)
    for name, reason in BAD.items():
        assert reason in rows[str(corpus / name)]


def test_failures_printed_and_exit_code(corpus, tmp_path, capsys):
    rc, cap = encode(corpus, tmp_path / "o", "--workers", 0, capsys=capsys)
    assert rc == 1
    assert "3 file(s) failed to encode" in cap.err and "Traceback" not in cap.err
    for name, reason in BAD.items():
        assert re.search(rf"{re.escape(str(corpus / name))}\t.*{reason}", cap.err)
    good = tmp_path / "good"
    shutil.copytree(corpus / "sub", good)
    assert encode(good, tmp_path / "o2", "--workers", 0) == 0
    assert not (tmp_path / "o2" / "failed.tsv").exists()


def test_broken_links_and_unreadable_files_are_reported_not_skipped(corpus, tmp_path, monkeypatch, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(corpus / "a.wav", inp / "a.wav")
    (inp / "gone.wav").symlink_to(tmp_path / "deleted.wav")  # a broken symbolic link
    locked = inp / "locked.wav"
    shutil.copy(corpus / "a.wav", locked)
    locked.chmod(0)
    access = os.access  # root reads a chmod 000 file anyway: say no to it, as the kernel does to a user
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and access(path, mode, **kw))
    rc, cap = encode(inp, tmp_path / "out", "--workers", 0, capsys=capsys)
    assert rc == 1 and "2 file(s) failed to encode" in cap.err and "2 failed" in cap.err
    rows = dict(line.split("\t") for line in (tmp_path / "out" / "failed.tsv").read_text().splitlines()[1:])
    assert sorted(rows) == [str(inp / "gone.wav"), str(locked)]
    assert rows[str(inp / "gone.wav")].startswith("broken symbolic link")
    assert str(tmp_path / "deleted.wav") in rows[str(inp / "gone.wav")]
    assert rows[str(locked)].startswith("permission denied") and "System error" not in cap.err
    assert (tmp_path / "out" / "a.npz").exists()


def test_output_is_byte_identical_and_batching_equals_single(corpus, encoded, tmp_path):
    # the fixture batched all good files (different lengths) together; here one at a time
    encode(corpus, tmp_path / "single", "--batch-size", 1, "--workers", 0)
    assert npz_files(tmp_path / "single") == npz_files(encoded)


def test_resume_redoes_only_missing_and_truncated(corpus, encoded, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(encoded, out)
    old = 1_000_000_000
    for p in out.rglob("*.npz"):
        os.utime(p, (old, old))
    trunc, gone = out / "sub/b.npz", out / "a.npz"
    trunc.write_bytes(trunc.read_bytes()[:200])  # what a killed writer without atomic rename leaves
    os.utime(trunc, (old, old))
    gone.unlink()
    (out / "sub" / ".c.npz.part").write_bytes(b"partial")  # temp file of a killed run
    rc, cap = encode(corpus, out, capsys=capsys)
    assert rc == 1 and "encoded 2 file(s)" in cap.err and "skipped 2 done before" in cap.err
    redone = {p.relative_to(out).as_posix() for p in out.rglob("*.npz") if p.stat().st_mtime != old}
    assert redone == {"a.npz", "sub/b.npz"}
    assert npz_files(out) == npz_files(encoded)


def test_other_codec_output_is_redone(corpus, encoded, tmp_path):
    other = DMelCodec(n_bins=32).save_pretrained(tmp_path / "dmel32")
    out = tmp_path / "out"
    shutil.copytree(encoded, out)
    main(["encode", str(corpus / "a.wav"), str(out / "a.npz"), "--codec", str(other)])
    assert load_tokens(out / "a.npz").codebook_size == 32
    assert encode(corpus, out) == 1
    assert npz_files(out) == npz_files(encoded)


def test_single_file_input(corpus, encoded, tmp_path):
    assert encode(corpus / "sub/b.flac", tmp_path / "x.npz") == 0
    assert encode(corpus / "sub/b.flac", tmp_path / "folder") == 0
    assert (
        (tmp_path / "x.npz").read_bytes()
        == (tmp_path / "folder/b.npz").read_bytes()
        == (encoded / "sub/b.npz").read_bytes()
    )
    assert encode(corpus / "empty.wav", tmp_path / "e.npz") == 1


def test_sharded_layout(corpus, encoded, tmp_path, capsys):
    out = tmp_path / "sh"
    rc, _ = encode(corpus, out, "--shards", 2, "--workers", 0, capsys=capsys)
    assert rc == 1 and sorted(p.name for p in out.glob("*.npz")) == ["shard-00000.npz", "shard-00001.npz"]
    utts = read_manifest(out / "manifest.csv")
    assert sorted(u.ID for u in utts) == sorted(GOOD)
    for u in utts:
        tf = load_shard(out / u.extra["shard"])[u.ID]
        assert int(u.extra["n_frames"]) == tf.n_frames and Path(u.path) == (corpus / GOOD[u.ID]).resolve()
        np.testing.assert_array_equal(tf.codes, load_tokens(encoded / f"{u.ID}.npz").codes)
    # resume: complete shards are skipped but their recorded failures still reported
    shard0 = (out / "shard-00000.npz").read_bytes()
    rc, cap = encode(corpus, out, "--shards", 2, capsys=capsys)
    assert rc == 1 and "encoded 0 file(s)" in cap.err and "3 failed" in cap.err
    assert len((out / "failed.tsv").read_text().splitlines()) == 4
    (out / "shard-00000.npz").write_bytes(shard0[:-50])
    rc, cap = encode(corpus, out, "--shards", 2, capsys=capsys)
    assert "encoded 0 file(s)" not in cap.err and (out / "shard-00000.npz").read_bytes() == shard0
    # fewer shards later: stale shard files are dropped from the folder and the manifest
    encode(corpus, out, "--shards", 1)
    assert [p.name for p in out.glob("*.npz")] == ["shard-00000.npz"]
    assert {u.extra["shard"] for u in read_manifest(out / "manifest.csv")} == {"shard-00000.npz"}


def test_decode_round_trip(encoded, tmp_path):
    src = tmp_path / "tok"
    for uid in ("a", "sub/deep/d"):  # Griffin-Lim is slow: two short clips
        (src / uid).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(encoded / f"{uid}.npz", src / f"{uid}.npz")
    assert main(["decode", str(src), str(tmp_path / "wav")]) == 0
    for uid in ("a", "sub/deep/d"):
        info = sf.info(tmp_path / "wav" / f"{uid}.wav")
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, load_tokens(src / f"{uid}.npz").n_samples)
    wav, _ = sf.read(tmp_path / "wav" / "a.wav")
    assert np.abs(wav).max() > 0.05  # audio, not silence
    assert main(["decode", str(src / "a.npz"), str(tmp_path / "one.wav")]) == 0
    assert sf.info(tmp_path / "one.wav").frames == 16000


def test_decode_refuses_tokens_from_another_codec(corpus, tmp_path, capsys):
    # a different config saved under the bundled name: the name matches, the hash must not
    impostor = DMelCodec(n_bins=32).save_pretrained(tmp_path / "ckpt" / CODEC)
    main(["encode", str(corpus / "a.wav"), str(tmp_path / "a.npz"), "--codec", str(impostor)])
    assert main(["decode", str(tmp_path / "a.npz"), str(tmp_path / "a.wav")]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("speechtok: error: ") and "token file made by another codec" in err
    assert not (tmp_path / "a.wav").exists()
    assert main(["decode", str(tmp_path / "a.npz"), str(tmp_path / "a.wav"), "--codec", str(impostor)]) == 0


def test_rvq_fewer_codebooks_encode_resume_and_decode(corpus, tmp_path, capsys):
    """`--n-codebooks K` on a variable-bitrate codec: token files hold the K codebooks written,
    resume skips them only at that K, and decode takes any first K of a file."""
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(corpus / "a.wav", inp / "a.wav")
    shutil.copy(corpus / "sub/deep/d.wav", inp / "d.wav")
    out = tmp_path / "tok"

    def run(*extra):
        return main(["encode", str(inp), str(out), "--codec", "rvq-16k", "--workers", 0, *extra])

    assert run("--n-codebooks", 2) == 0
    codec = load_codec("rvq-16k")
    tf = load_tokens(out / "a.npz")
    wav = load_audio(corpus / "a.wav", 16000)[None]
    assert tf.codes.shape == (2, 50) and tf.bitrate == 1000 and tf.codec == "rvq-16k"
    np.testing.assert_array_equal(tf.codes, codec.encode(wav)[0, :2].numpy())
    two = npz_files(out)
    capsys.readouterr()
    assert run("--n-codebooks", 2) == 0 and "skipped 2 done before" in capsys.readouterr().err
    assert run() == 0 and "encoded 2 file(s)" in capsys.readouterr().err  # another K: redone at all 8
    assert load_tokens(out / "a.npz").codes.shape == (8, 50)
    assert run("--n-codebooks", 2, "--layout", "sharded") == 0
    shard = load_shard(out / "shard-00000.npz")
    assert {u: t.n_codebooks for u, t in shard.items()} == {"a": 2, "d": 2}
    capsys.readouterr()
    assert run("--n-codebooks", 2, "--layout", "sharded") == 0 and "encoded 0 file(s)" in capsys.readouterr().err
    assert run("--n-codebooks", 3, "--layout", "sharded") == 0 and "encoded 2 file(s)" in capsys.readouterr().err
    # decode: the 8-codebook file whole and its first 2 (what the 2-codebook file decodes to)
    assert main(["decode", str(out / "a.npz"), str(tmp_path / "k8.wav")]) == 0
    assert main(["decode", str(out / "a.npz"), str(tmp_path / "k2.wav"), "--n-codebooks", 2]) == 0
    save_tokens(tmp_path / "two.npz", TokenFile(**{**vars(load_tokens(out / "a.npz")), "codes": tf.codes}))
    assert npz_files(out) != two and main(["decode", str(tmp_path / "two.npz"), str(tmp_path / "two.wav")]) == 0
    k2, k8, two_wav = (sf.read(tmp_path / f)[0] for f in ("k2.wav", "k8.wav", "two.wav"))
    np.testing.assert_array_equal(k2, two_wav)
    assert len(k2) == len(k8) == 16000 and not np.array_equal(k2, k8)
    capsys.readouterr()
    assert main(["decode", str(tmp_path / "two.npz"), str(tmp_path / "x.wav"), "--n-codebooks", 4]) == 1
    assert capsys.readouterr().err == (
        f"speechtok: error: cannot decode {tmp_path / 'two.npz'}: it holds 2 codebooks, fewer than --n-codebooks 4\n"
    )


def test_decode_with_n_codebooks_on_a_fixed_codec_names_the_file(encoded, tmp_path, capsys):
    assert main(["decode", str(encoded / "a.npz"), str(tmp_path / "a.wav"), "--n-codebooks", 8]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"speechtok: error: cannot decode {encoded / 'a.npz'}: "
        f"codec '{CODEC}' has a fixed 80 codebooks; it cannot use 8\n"
    )
    # a folder: the same reason per file in the failure report
    src = tmp_path / "tok"
    src.mkdir()
    shutil.copy(encoded / "a.npz", src / "a.npz")
    assert main(["decode", str(src), str(tmp_path / "wav"), "--n-codebooks", 8]) == 1
    assert (tmp_path / "wav" / "failed.tsv").read_text().splitlines()[1] == (
        f"{src / 'a.npz'}\tcodec '{CODEC}' has a fixed 80 codebooks; it cannot use 8"
    )


def test_decode_tokens_of_another_family_says_so(corpus, tmp_path, capsys):
    assert main(["encode", corpus / "a.wav", tmp_path / "a.npz", "--codec", "rvq-16k", "--workers", 0]) == 0
    capsys.readouterr()
    assert main(["decode", str(tmp_path / "a.npz"), str(tmp_path / "a.wav"), "--codec", CODEC]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--n-codebooks" not in err and "Traceback" not in err
    assert err.startswith(
        f"speechtok: error: cannot decode {tmp_path / 'a.npz'}: token file made by another codec: 'rvq-16k' (rvq, "
    )
    assert f"the loaded codec '{CODEC}' (dmel, " in err and "differ in family" in err


def test_float_codes_and_bad_code_shapes_are_refused(encoded, tmp_path, capsys):
    tf = load_tokens(encoded / "a.npz")
    save_tokens(tmp_path / "float.npz", TokenFile(**{**vars(tf), "codes": tf.codes.astype(np.float32) + 0.4}))
    for argv in (["decode", tmp_path / "float.npz", tmp_path / "f.wav"], ["info", tmp_path / "float.npz"]):
        assert main(argv) == 1
        assert capsys.readouterr().err == (
            f"speechtok: error: cannot read token file {tmp_path / 'float.npz'}: codes are float32, not integers "
            "(corrupt or foreign file)\n"
        )
    save_tokens(tmp_path / "big.npz", TokenFile(**{**vars(tf), "codes": tf.codes + 16}))
    assert main(["info", str(tmp_path / "big.npz")]) == 1
    assert "outside the codebook [0, 16)" in capsys.readouterr().err
    # an integer file that the codec cannot decode (40 of dMel's 80 codebooks): a codec error naming the file
    save_tokens(tmp_path / "half.npz", TokenFile(**{**vars(tf), "codes": tf.codes[:40]}))
    assert main(["decode", str(tmp_path / "half.npz"), str(tmp_path / "h.wav")]) == 2
    assert capsys.readouterr().err == (
        f"speechtok: error: cannot decode {tmp_path / 'half.npz'}: dmel codes must be [B, 80, F], got (1, 40, 50)\n"
    )
    assert not (tmp_path / "f.wav").exists() and not (tmp_path / "h.wav").exists()


def test_info(encoded, capsys):
    assert main(["info", str(encoded / "sub/b.npz")]) == 0
    out = capsys.readouterr().out
    for text in (CODEC, "80 x 75 (K x F)", "16000 b/s", "1.500 s", "16000 Hz (source 22050 Hz)"):
        assert text in out


def test_codecs_lists_bundled(capsys):
    assert main(["codecs"]) == 0
    line = next(li for li in capsys.readouterr().out.splitlines() if li.startswith(CODEC))
    assert line.split() == [CODEC, "dmel", "16000", "50", "80", "16", "16000"]


def test_usage_errors_are_clean(corpus, tmp_path, capsys):
    assert main(["encode", str(corpus), str(tmp_path), "--codec", "no-such-codec"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("speechtok: error: unknown codec 'no-such-codec'") and CODEC in err
    assert "Traceback" not in err
    assert main(["encode", str(corpus), str(tmp_path), "--codec", CODEC, "--n-codebooks", "8"]) == 2
    assert capsys.readouterr().err == f"speechtok: error: codec '{CODEC}' has a fixed 80 codebooks; it cannot use 8\n"
    assert main(["encode", str(tmp_path / "missing"), str(tmp_path / "o"), "--codec", CODEC]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["info", str(corpus / "a.wav")]) == 1
    assert "not a valid token file" in capsys.readouterr().err
    assert main(["encode", str(corpus)]) == 2  # argparse: missing arguments
    assert main(["encode", str(corpus), str(tmp_path), "--codec", CODEC, "--shards", "0"]) == 2
    assert "expected an integer >= 1" in capsys.readouterr().err


def test_eval_subcommand_delegates_to_harness(monkeypatch, capsys):
    package = importlib.import_module("speechtok.eval")
    harness = types.ModuleType("speechtok.eval.harness")
    harness.add_eval_arguments = lambda p: p.add_argument("--codec")
    harness.run_eval = lambda args: 7 if args.codec == "x" else 0
    monkeypatch.setitem(sys.modules, "speechtok.eval.harness", harness)
    monkeypatch.setattr(package, "harness", harness, raising=False)
    assert main(["eval", "--codec", "x"]) == 7
    monkeypatch.setitem(sys.modules, "speechtok.eval.harness", None)  # module absent
    monkeypatch.delattr(package, "harness")
    assert main(["eval", "--codec", "x"]) == 1
    assert "speechtok.eval.harness" in capsys.readouterr().err
    assert main(["codecs"]) == 0  # the rest of the CLI does not need it


@pytest.mark.slow
def test_console_script_subprocess(corpus, encoded, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "speechtok.cli", "encode", str(corpus / "sub"), str(tmp_path / "o"), "--codec", CODEC],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert npz_files(tmp_path / "o") == {
        k.removeprefix("sub/"): v for k, v in npz_files(encoded).items() if k.startswith("sub/")
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_torchrun_two_ranks_split_the_files(corpus, encoded, tmp_path):
    out = tmp_path / "dist"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "speechtok.cli",
        "encode",
        str(corpus),
        str(out),
        "--codec",
        CODEC,
        "--workers",
        "0",
    ]
    r = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert r.returncode != 0  # the bad files fail on whichever rank had them
    counts = {int(m[0]): int(m[1]) for m in re.findall(r"rank (\d)/2: encoded (\d+) file", r.stdout + r.stderr)}
    # 7 sorted files split [0::2] / [1::2]: good files a, sub/b, sub/c, sub/deep/d sit at odd/even places
    uids = sorted(["a", "corrupt", "empty", "nan", "sub/b", "sub/c", "sub/deep/d"])
    assert counts == {r: sum(u in GOOD for u in uids[r::2]) for r in (0, 1)}
    assert sum(counts.values()) == len(GOOD)
    assert npz_files(out) == npz_files(encoded)
    assert (out / "failed.tsv").read_text() == (encoded / "failed.tsv").read_text()
