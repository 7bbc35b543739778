#!/usr/bin/env python3
"""Entropy-coded token files: bits and speed of every codec with a bundled prior, on unseen speech.

For each codec: the audio of voices no codec or prior heard (LibriSpeech dev, crowd dev) is encoded
(`speechtok encode`'s library call), compressed to `.stz` and decompressed (checked lossless), each
timed in the same run on the same files, so the three speeds compare. Bits per second of audio:
the whole `.stz` files and the coded payload alone (without the ~40-byte headers), against the raw
n_codebooks x log2(codebook_size) x frame_rate.

    python bench/compress.py [--n_files 60] [--threads 2] [--priors prior-dmel-16k results/.../prior-rvq-16k]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_results

from speechtok.codecs import load_codec
from speechtok.compress import HEADER, MAGIC, TokenPrior, compress_tokens, decompress_tokens
from speechtok.data.audio import load_audio
from speechtok.data.manifest import read_manifest
from speechtok.errors import cannot
from speechtok.tokens import TokenFile

RESULTS = Path(__file__).resolve().parent / "results"
SETS = {"librispeech dev": "librispeech_dev.csv", "crowd dev": "crowd_dev.csv"}


def measure(codec_name: str, prior: TokenPrior, files: dict[str, list[str]]) -> list[dict]:
    codec = load_codec(codec_name)
    rows = []
    for source, paths in files.items():
        seconds = bits = payload = t_enc = t_c = t_d = 0.0
        for path in paths:
            wav = load_audio(path, codec.sample_rate)
            t0 = time.perf_counter()
            codes = codec.encode(wav[None])[0]
            t_enc += time.perf_counter() - t0
            tf = TokenFile.from_codec(codec, codes, wav.shape[-1], codec.sample_rate)
            t0 = time.perf_counter()
            data = compress_tokens(tf, prior)
            t_c += time.perf_counter() - t0
            t0 = time.perf_counter()
            back = decompress_tokens(data, prior)
            t_d += time.perf_counter() - t0
            if not np.array_equal(back.codes, tf.codes):
                raise SystemExit(cannot("compress", path, f"{codec_name} round trip is not lossless"))
            seconds += tf.duration
            bits += 8 * len(data)
            payload += 8 * (len(data) - len(MAGIC) - HEADER.size - len(tf.codec.encode()))
        raw = codec.n_codebooks * np.log2(codec.codebook_size) * codec.frame_rate
        rows.append(
            {
                "codec": codec_name,
                "prior": prior.name,
                "set": source,
                "files": len(paths),
                "seconds": round(seconds, 1),
                "raw_bps": raw,
                "stz_bps": bits / seconds,
                "payload_bps": payload / seconds,
                "saved": 1 - bits / seconds / raw,
                "saved_payload": 1 - payload / seconds / raw,
                "encode_x_realtime": seconds / t_enc,
                "compress_x_realtime": seconds / t_c,
                "decompress_x_realtime": seconds / t_d,
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifests", type=Path, default=Path("work_data/manifests"))
    p.add_argument("--n_files", type=int, default=60, help="per set (the first ones, sorted by ID)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--priors", nargs="*", help="prior names or folders (default: every bundled prior)")
    p.add_argument("--out", type=Path, default=RESULTS / "compress.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    files = {
        s: [u.path for u in sorted(read_manifest(args.manifests / m), key=lambda u: u.ID)][: args.n_files]
        for s, m in SETS.items()
    }
    rows = []
    with torch.inference_mode():
        for folder in args.priors or TokenPrior.bundled():
            prior = TokenPrior.load(folder)
            rows += measure(prior.codec["name"], prior, files)
    print(f"{args.threads} threads; speeds in x real time")
    print("| codec | set | raw b/s | .stz b/s | saved | payload saved | encode | compress | decompress |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['codec']} | {r['set']} ({r['files']} files, {r['seconds']:.0f} s) | {r['raw_bps']:.0f} | "
            f"{r['stz_bps']:.0f} | {r['saved']:.1%} | {r['saved_payload']:.1%} | {r['encode_x_realtime']:.0f} | "
            f"{r['compress_x_realtime']:.1f} | {r['decompress_x_realtime']:.1f} |"
        )
    write_results(args.out, rows, threads=args.threads)


if __name__ == "__main__":
    main()
