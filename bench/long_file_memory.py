#!/usr/bin/env python3
"""Peak memory and wall time of `speechtok decode` on one long token file, and of `speechtok enhance`
on one long noisy audio file (default 60 minutes each).

The token file holds the codes of real speech (the bundled examples, looped to a minute and
encoded with the codec, then repeated to the length; n_samples is not a whole number of frames).
Each run is a fresh subprocess; its peak RSS comes from os.wait4 (that child alone). Modes:
  - stream: `speechtok decode TOKENS OUT.wav`, which decodes chunk by chunk (`Codec.decode_stream`)
    and writes each piece as it comes;
  - whole: for comparison, the whole file's codes through the decoder in one call
    (`codec._decode`), then `save_audio` of the whole waveform.
Both outputs are checked for the exact length (n_samples), and stream against whole sample by sample.

Enhancement (`--tasks enhance`, model `--enhancer`, default the bundled enhance-dmel-16k) reads the
same looped speech with white noise added (about 5 dB SNR), as a 16-bit wav, n_samples again not a
whole number of frames. Modes:
  - stream: `speechtok enhance NOISY.wav OUT.wav`, which generates `Enhancer.batch_rows` rows (LM
    chunks x input gains) at a time, renders each block with its context and writes it as it comes
    (`Enhancer.enhance_stream`);
  - whole: the whole file in one block (`batch_rows` unbounded: every chunk generated in one batch,
    the band gains and refiner over the whole file), then `save_audio`: the whole-file reference.
The table's last column is the peak RSS against the whole-file run of the same row group.

    python bench/long_file_memory.py [--minutes 60] [--tasks decode enhance] [--codecs dmel-16k rvq-16k]
        [--modes stream whole]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from _results import write_results

from speechtok.codecs import load_codec
from speechtok.data.audio import load_audio
from speechtok.tokens import TokenFile, save_tokens

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
GOAL_GB = 2.0

WHOLE = """
import sys, torch
from speechtok.codecs import load_codec
from speechtok.data.audio import save_audio
from speechtok.tokens import load_tokens
tf = load_tokens(sys.argv[1])
codec = load_codec(sys.argv[3])
with torch.inference_mode():
    wav = codec._decode(codec.check_codes(torch.from_numpy(tf.codes.astype('int64'))[None]))[0, :, : tf.n_samples]
save_audio(sys.argv[2], wav, codec.sample_rate)
"""

WHOLE_ENHANCE = """
import sys
from speechtok.data.audio import save_audio
from speechtok.enhance import load_enhancer
enhancer = load_enhancer(sys.argv[3])
enhancer.batch_rows = 1 << 40  # one block: the whole file at once
save_audio(sys.argv[2], enhancer.enhance(sys.argv[1]), enhancer.sample_rate)
"""


def make_tokens(name: str, minutes: float, path: Path) -> tuple[int, int]:
    """A token file of `minutes` of looped real speech; returns (frames, n_samples)."""
    codec = load_codec(name)
    sr = codec.sample_rate
    clips = [load_audio(REPO / "examples" / f, sr)[0] for f in ("flite_slt.flac", "espeak_en-us.flac")]
    minute = torch.cat(clips * (60 * sr // sum(c.shape[-1] for c in clips) + 1))[: 60 * sr]
    codes = codec.encode(minute[None, None])[0]  # [K, 3000]
    frames = int(minutes * 60 * codec.frame_rate)
    codes = codes.repeat(1, -(-frames // codes.shape[-1]))[:, :frames]
    n_samples = frames * codec.hop_length - 77
    save_tokens(path, TokenFile.from_codec(codec, codes, n_samples, sr))
    return frames, n_samples


def make_noisy(minutes: float, path: Path, sr: int = 16000) -> int:
    """A 16-bit wav of `minutes` of looped real speech plus white noise (about 5 dB SNR), written a
    minute at a time; returns n_samples."""
    clips = [load_audio(REPO / "examples" / f, sr)[0] for f in ("flite_slt.flac", "espeak_en-us.flac")]
    minute = torch.cat(clips * (60 * sr // sum(c.shape[-1] for c in clips) + 1))[: 60 * sr]
    noise_std = float(minute.square().mean().sqrt()) * 10 ** (-5 / 20)
    n_samples = int(minutes * 60 * sr) - 77
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", sr, 1, subtype="PCM_16") as f:
        for start in range(0, n_samples, minute.shape[-1]):
            piece = minute[: min(minute.shape[-1], n_samples - start)].numpy()
            f.write(np.clip(piece + noise_std * rng.standard_normal(piece.shape[-1]), -1, 1).astype(np.float32))
    return n_samples


def run_child(cmd: list[str], threads: int) -> tuple[float, float, int]:
    """(peak RSS in GB, wall seconds, exit status) of one subprocess."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.stderr.write(err.decode(errors="replace")[-2000:])
    return usage.ru_maxrss / 1024**2, wall, proc.returncode  # ru_maxrss is in KiB on Linux


def jobs(args, work: Path):
    """(task, model or codec name, input path, frames, n_samples, {mode: command(out)}) per row group."""
    if "decode" in args.tasks:
        for name in args.codecs:
            tok = work / f"{name}.npz"
            frames, n_samples = make_tokens(name, args.minutes, tok)
            cmds = {
                "stream": lambda out, tok=tok, name=name: ["-m", "speechtok.cli", "decode", tok, out, "--codec", name],
                "whole": lambda out, tok=tok, name=name: ["-c", WHOLE, tok, out, name],
            }
            yield "decode", name, tok, frames, n_samples, cmds
    if "enhance" in args.tasks:
        noisy, name = work / "noisy.wav", args.enhancer
        n_samples = make_noisy(args.minutes, noisy)
        cmds = {
            "stream": lambda out: ["-m", "speechtok.cli", "enhance", noisy, out, "--model", name],
            "whole": lambda out: ["-c", WHOLE_ENHANCE, noisy, out, name],
        }
        yield "enhance", name, noisy, -(-n_samples // 320), n_samples, cmds


def measure(args, work: Path) -> list[dict]:
    rows = []
    for task, name, source, frames, n_samples, cmds in jobs(args, work):
        outs, group = {}, len(rows)
        for mode in args.modes:
            out = work / f"{task}-{name}-{mode}.wav"
            cmd = [sys.executable, *map(str, cmds[mode](out))]
            rss, wall, rc = run_child(cmd, args.threads)
            exact = rc == 0 and sf.info(out).frames == n_samples
            rows.append(
                {
                    "task": task,
                    "codec": name,
                    "mode": mode,
                    "minutes": args.minutes,
                    "frames": frames,
                    "n_samples": n_samples,
                    "peak_rss_gb": rss,
                    "wall_s": wall,
                    "x_realtime": args.minutes * 60 / wall,
                    "exit": rc,
                    "exact_length": exact,
                }
            )
            print(f"{task} {name} {mode}: {rss:.2f} GB peak RSS, {wall:.0f} s, length exact: {exact}", flush=True)
            if rc == 0:
                outs[mode] = out
        if len(outs) == 2:  # PCM_16 files: compare in int16, a block at a time
            diff = 0
            with sf.SoundFile(outs["stream"]) as a, sf.SoundFile(outs["whole"]) as b:
                for x, y in zip(a.blocks(1 << 20, dtype="int16"), b.blocks(1 << 20, dtype="int16")):
                    diff = max(diff, int(np.abs(x.astype(np.int32) - y.astype(np.int32)).max()))
            for r in rows[-2:]:
                r["stream_vs_whole_max_lsb"] = diff
        whole = [r for r in rows[group:] if r["mode"] == "whole" and r["exit"] == 0]
        for r in rows[group:]:
            if whole:
                r["rss_vs_whole"] = r["peak_rss_gb"] / whole[0]["peak_rss_gb"]
        for out in outs.values():
            out.unlink(missing_ok=True)
        source.unlink(missing_ok=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--tasks", nargs="+", choices=["decode", "enhance"], default=["decode", "enhance"])
    p.add_argument("--enhancer", default="enhance-dmel-16k", help="enhance model: bundled name or folder")
    p.add_argument("--codecs", nargs="+", default=["dmel-16k", "rvq-16k"])
    p.add_argument("--modes", nargs="+", choices=["stream", "whole"], default=["stream", "whole"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "long_file_memory.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="long_file_memory.") as tmp:
        rows = measure(args, Path(tmp))
    print(f"\n{args.minutes:g} min files, {args.threads} threads, goal < {GOAL_GB:g} GB peak RSS")
    print(
        "| task | codec or model | mode | peak RSS (GB) | wall (s) | x real time | length exact "
        "| stream vs whole (LSB) | RSS vs whole |"
    )
    print("|---|---|---|---:|---:|---:|---|---:|---:|")
    for r in rows:
        ratio = f"{r['rss_vs_whole']:.2f}" if "rss_vs_whole" in r else ""
        print(
            f"| {r['task']} | {r['codec']} | {r['mode']} | {r['peak_rss_gb']:.2f} | {r['wall_s']:.0f} "
            f"| {r['x_realtime']:.2f} | {r['exact_length']} | {r.get('stream_vs_whole_max_lsb', '')} | {ratio} |"
        )
    write_results(args.out, rows, minutes=args.minutes, tasks=args.tasks, threads=args.threads, goal_gb=GOAL_GB)


if __name__ == "__main__":
    main()
