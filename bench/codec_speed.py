#!/usr/bin/env python3
"""Encode/decode speed of every bundled codec beside reference models, in one process.

References (random weights: speed does not depend on training):
  - EnCodec 24 kHz at 6 kbps from the `encodec` package (encode and decode);
  - a Vocos mel vocoder of the published size (24 kHz, 100 mels, hop 256, dim 512,
    intermediate 1536, 8 ConvNeXt layers) for vocoder decoding.
Ratios are against these references on the same machine, so they survive noisy timings.

    python bench/codec_speed.py [--seconds 10] [--batch 4] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _results import write_results
from encodec import EncodecModel

from speechtok.codecs import available_codecs, load_codec
from speechtok.codecs.renderers import decoder_name
from speechtok.codecs.vocoder import Vocoder

RESULTS = Path(__file__).resolve().parent / "results"


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def speech_like(seconds: float, sr: int, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    t = torch.arange(int(seconds * sr)) / sr
    phase = 2 * torch.pi * torch.cumsum(130 + 30 * torch.sin(2 * torch.pi * 1.5 * t), 0) / sr
    x = sum(torch.sin(k * phase) / k for k in range(1, 15)) * 0.1
    return (x + 0.01 * torch.randn(batch, 1, len(t), generator=g)).float()


@torch.inference_mode()
def measure(args) -> list[dict]:
    rows = []
    for batch in (1, args.batch):
        audio_s = args.seconds * batch

        def row(system, op, seconds, **extra):
            rows.append(
                {
                    "system": system,
                    "op": op,
                    "batch": batch,
                    "seconds": seconds,
                    "x_realtime": audio_s / seconds,
                    **extra,
                }
            )

        ref = EncodecModel.encodec_model_24khz(pretrained=False).eval()
        ref.set_target_bandwidth(6.0)
        x24 = speech_like(args.seconds, 24000, batch)
        frames = ref.encode(x24)
        row("encodec-24k-6kbps", "encode", best_time(lambda: ref.encode(x24), args.repeats))
        row("encodec-24k-6kbps", "decode", best_time(lambda: ref.decode(frames), args.repeats))

        vocos = Vocoder(n_mels=100, hop_length=256, dim=512, intermediate_dim=1536, n_layers=8, n_fft=1024).eval()
        mel = torch.randn(batch, 100, int(args.seconds * 24000 / 256))
        row(
            "vocos-mel-24k (ref size)",
            "decode",
            best_time(lambda: vocos(mel), args.repeats),
            params_m=sum(p.numel() for p in vocos.parameters()) / 1e6,
        )

        for name in args.codecs or available_codecs():
            codec = load_codec(name)
            x = speech_like(args.seconds, codec.sample_rate, batch)
            codes = codec.encode(x)
            row(name, "encode", best_time(lambda: codec.encode(x), args.repeats))
            decoder = decoder_name(codec)
            reps = 1 if decoder == "griffinlim" else args.repeats
            prompt = speech_like(3.0, codec.sample_rate, 1) if codec.takes_prompt else None  # a 3 s voice
            row(
                name,
                f"decode ({decoder}{', 3 s prompt' if prompt is not None else ''})",
                best_time(lambda: codec.decode(codes, prompt), reps),
                params_m=sum(p.numel() for p in codec.parameters()) / 1e6,
            )
    return rows


def add_ratios(rows: list[dict]) -> None:
    ref = {(r["op"], r["batch"]): r["seconds"] for r in rows if r["system"] == "encodec-24k-6kbps"}
    vocos = {r["batch"]: r["seconds"] for r in rows if r["system"].startswith("vocos")}
    for r in rows:
        op = "decode" if r["op"].startswith("decode") else r["op"]
        r["vs_encodec"] = ref[(op, r["batch"])] / r["seconds"]
        if r["op"].startswith("decode"):
            r["vs_vocos"] = vocos[r["batch"]] / r["seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--codecs", nargs="*", help="default: every bundled codec")
    p.add_argument("--out", type=Path, default=RESULTS / "codec_speed.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = measure(args)
    add_ratios(rows)
    print(f"{args.seconds:g} s of audio per item, {args.threads} threads, best of {args.repeats}")
    print("| system | op | batch | x real time | vs EnCodec | vs Vocos-mel |\n|---|---|---:|---:|---:|---:|")
    for r in rows:
        vv = f"{r['vs_vocos']:.2f}" if "vs_vocos" in r else ""
        print(f"| {r['system']} | {r['op']} | {r['batch']} | {r['x_realtime']:.1f} | {r['vs_encodec']:.2f} | {vv} |")
    write_results(args.out, rows, seconds=args.seconds, threads=args.threads)


if __name__ == "__main__":
    main()
