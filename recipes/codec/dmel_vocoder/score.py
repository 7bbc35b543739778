#!/usr/bin/env python3
"""Score codecs round trip (encode, decode) on the recipe's dev sets, and Griffin-Lim on dMel levels.

    python recipes/codec/dmel_vocoder/score.py recipes/codec/dmel_vocoder/hparams/cpu.yaml \
        --decoders dmel-16k gl32 fgl32 rvq-16k rvq-16k@2 single-16k-50 --n_utts 1000 --out results/scores.json

A decoder is a codec (bundled name or folder; `NAME@K` with its first K codebooks), `glN` for
Griffin-Lim with N iterations (momentum 0) or `fglN` for fast Griffin-Lim (momentum 0.99), both on
dMel's levels, or `real` for the recording itself (the ceiling). `--n_utts` per set (default: the
recipe's `n_dev_utts`, the subset the training log reports). Prints PESQ-wb / STOI per set, and
the mean over the unseen-voice sets that checkpoints are chosen by; `--dnsmos` adds DNSMOS OVRL
(naturalness, which PESQ-wb does not reward: what TTS is judged by), per set and over the unseen sets.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch
from hyperpyyaml import load_hyperpyyaml

from speechtok.codecs import DMelCodec, load_codec
from speechtok.codecs.renderers import GriffinLim
from speechtok.data.segments import dev_items, dev_summary
from speechtok.eval.judges import dnsmos
from speechtok.eval.metrics import pesq_wb, stoi


def round_trip(spec: str, frontend: DMelCodec):
    """waveform [1, 1, T] -> its resynthesis, for `glN` / `fglN`, a codec `NAME[@K]` or `real`."""
    if spec == "real":
        return lambda wav: wav
    match = re.fullmatch(r"(f?)gl(\d+)", spec)
    if match:
        momentum, n_iter = (0.99 if match.group(1) else 0.0), int(match.group(2))
        render = GriffinLim(frontend.mel_fb, frontend.window, frontend.hop_length, n_iter, momentum)
        return lambda wav: render(frontend.dequantize(frontend.encode(wav)))
    name, _, k = spec.partition("@")
    codec = load_codec(name)
    return lambda wav: codec.decode(codec.encode(wav, n_codebooks=int(k) if k else None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("hparams")
    parser.add_argument("--decoders", nargs="+", required=True)
    parser.add_argument("--n_utts", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--dnsmos", action="store_true", help="also DNSMOS OVRL of each resynthesis")
    args = parser.parse_args()
    with open(args.hparams) as f:
        hp = load_hyperpyyaml(f, {"export_only": True})
    frontend = DMelCodec(**hp["dmel"])
    items = dev_items(hp, frontend.sample_rate, args.n_utts)
    results = {}
    for spec in args.decoders:
        resynth, rows, ovrl = round_trip(spec, frontend), [], []
        for name, wav in items:
            with torch.inference_mode():
                est = resynth(wav[None]).float()[0, 0, : wav.shape[-1]].clamp(-1, 1).numpy()
            ref = wav[0].numpy()
            rows.append((name, pesq_wb(ref, est, 16000), stoi(ref, est, 16000)))
            if args.dnsmos:
                ovrl.append((name, dnsmos(est, 16000)["dnsmos_ovrl"]))
        mos = {}
        if ovrl:
            per_set = {n: float(np.mean([v for s, v in ovrl if s == n])) for n in dict.fromkeys(s for s, _ in ovrl)}
            mos = {f"{n}_dnsmos_ovrl": v for n, v in per_set.items()}
            mos["dnsmos_ovrl"] = float(np.mean([per_set[s] for s in hp["dev_sets"]]))
        results[spec] = {
            **dev_summary(rows, list(hp["dev_sets"])),
            **mos,
            "n_utts": {n: sum(r[0] == n for r in rows) for n in dict.fromkeys(r[0] for r in rows)},
        }
        print(spec, json.dumps({k: round(v, 3) for k, v in results[spec].items() if isinstance(v, float)}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
