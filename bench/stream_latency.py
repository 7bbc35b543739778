#!/usr/bin/env python3
"""Streaming codecs: algorithmic latency, compute per 20 ms frame on one thread, real-time factor.

One frame at a time, as a live caller would: 320 samples pushed into the stream encoder, its codes
into the stream decoder, timed together per frame (median and 95th percentile over the clip).
The reference in the same run is the offline `rvq-16k` on the whole clip (encode + decode), per
20 ms of audio. A codec without trained weights yet is timed from its architecture (random
weights: compute does not depend on training): `--arch rvq-16k-stream` builds the one the
recipe trains (`recipes/codec/rvq/README.md`).

    python bench/stream_latency.py [--codecs rvq-16k-stream FOLDER ...] [--seconds 10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_results

from speechtok.codecs import RVQCodec, load_codec

RESULTS = Path(__file__).resolve().parent / "results"
# the streaming codecs the recipes train: a causal log-mel, a causal vocoder with a 960-sample
# iSTFT window (lookahead 320 samples), and the RVQ codec of rvq-16k on that log-mel
STREAM_VOCODER = {"dim": 192, "intermediate_dim": 576, "n_layers": 6, "n_fft": 960, "causal": True}
ARCHITECTURES = {
    "rvq-16k-stream": lambda: RVQCodec(
        n_codebooks=8,
        codebook_size=1024,
        codebook_dim=32,
        dim=192,
        intermediate_dim=576,
        encoder_layers=4,
        decoder_layers=4,
        mel={"causal": True},
        vocoder=STREAM_VOCODER,
    )
}


def build(spec: str):
    """A trained codec (name or folder), or else the architecture of that name with random weights."""
    try:
        return load_codec(spec), "trained"
    except Exception:
        if spec not in ARCHITECTURES:
            raise
        codec = ARCHITECTURES[spec]()
        codec.train()
        codec(codec.log_mel(0.1 * torch.randn(2, 1, 16000)))  # initialises the codebooks
        return codec.eval(), "architecture, random weights"


def per_frame(codec, wav: torch.Tensor) -> np.ndarray:
    enc, dec, hop = codec.stream_encoder(), codec.stream_decoder(), codec.hop_length
    times = []
    for i in range(0, wav.shape[-1] - hop + 1, hop):
        t0 = time.perf_counter()
        dec.push(enc.push(wav[..., i : i + hop]))
        times.append(time.perf_counter() - t0)
    return np.array(times[5:])  # the first frames warm the kernels up


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codecs", nargs="+", default=["rvq-16k-stream"])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=RESULTS / "stream_latency.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    t = torch.arange(int(args.seconds * 16000)) / 16000
    wav = (0.3 * torch.sin(2 * torch.pi * 140 * t) + 0.02 * torch.randn(t.shape))[None, None]
    reference = load_codec("rvq-16k")
    with torch.inference_mode():
        reference.decode(reference.encode(wav[..., :16000]))
        t0 = time.perf_counter()
        reference.decode(reference.encode(wav))
        offline_ms = (time.perf_counter() - t0) * 1000 / (wav.shape[-1] / reference.hop_length)
    rows = []
    for spec in args.codecs:
        codec, weights = build(spec)
        ms = per_frame(codec, wav) * 1000
        frame_ms = 1000 * codec.hop_length / codec.sample_rate
        rows.append(
            {
                "codec": spec,
                "weights": weights,
                "latency_ms": codec.algorithmic_latency_ms,
                "frame_ms_median": float(np.median(ms)),
                "frame_ms_p95": float(np.percentile(ms, 95)),
                "real_time_factor": float(np.median(ms) / frame_ms),
                "vs_offline_rvq16k": float(np.median(ms) / offline_ms),
            }
        )
    print(f"{args.seconds:g} s of audio, 1 thread; offline rvq-16k: {offline_ms:.2f} ms per 20 ms of audio")
    print("| codec | weights | algorithmic latency | compute per 20 ms frame (median / p95) | RTF | vs offline |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['codec']} | {r['weights']} | {r['latency_ms']:.0f} ms | {r['frame_ms_median']:.2f} / "
            f"{r['frame_ms_p95']:.2f} ms | {r['real_time_factor']:.3f} | {r['vs_offline_rvq16k']:.1f}x |"
        )
    write_results(args.out, rows, seconds=args.seconds, threads=1, offline_rvq16k_ms_per_frame=offline_ms)


if __name__ == "__main__":
    main()
