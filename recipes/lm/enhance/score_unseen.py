#!/usr/bin/env python3
"""Score enhancers on material no training saw: unseen voices in unseen real noise, dry and in rooms.

    python recipes/lm/enhance/score_unseen.py --models enhance-dmel-16k --hours 0.1

Pairs (recipes/data/hparams/noisy_unseen.yaml; made once, seeded, under work_data/noisy_unseen):
speech of the LibriSpeech dev and crowd dev speakers (texts: Whisper pseudo-labels where
LibriSpeech has none, crowd's command words), mixed at 0-10 dB SNR with the `noise_ambient` dev
recordings (never heard in training); half of them reverberated by a dev room (the measured `rir/`
dev responses and 30 simulated dev rooms), the target staying dry. The enhancer recipe's dev loss
reads the same pairs. For each model: the noisy input, the codec ceilings (the clean speech's tokens
decoded, and rendered through the noisy input: what the enhancer's tokens could do at best) and
the enhanced output, with PESQ-wb, STOI and
Whisper tiny.en WER, per SNR band, per noise kind and with and without reverberation. This is the
set to choose enhancer checkpoints on (cathy is not in it). Prints markdown, writes scores.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from hyperpyyaml import load_hyperpyyaml
from score_draws import REPO, enhanced_files

from speechtok.data.manifest import read_manifest
from speechtok.data.prepare import prepare
from speechtok.enhance import load_enhancer
from speechtok.eval.generation import evaluate_enhancement, load_pair, summarize

SYSTEMS = ("noisy", "codec_ceiling", "mixture_ceiling", "enhanced")


def unseen_pairs(output_folder: Path, hours: float, seed: int) -> list:
    """The dev pairs of recipes/data/hparams/noisy_unseen.yaml (made on the first call; a rerun reads them)."""
    with open(REPO / "recipes/data/hparams/noisy_unseen.yaml", encoding="utf-8") as f:
        hp = load_hyperpyyaml(f, {"hours": hours, "seed": seed})
    hp["output_folder"] = output_folder.resolve()
    prepare(hp, progress=False)
    return read_manifest(output_folder / "manifests" / f"{hp['noisy_name']}_dev.csv")


def breakdown(items: list, rows: list, categories: dict[str, str]) -> dict[str, dict[str, dict]]:
    """Means per group (SNR band, noise kind, reverberation, all) and system."""
    groups: dict[str, list] = defaultdict(list)
    for item, u in zip(items, rows):
        kind = categories.get(u.extra["noise_id"], u.extra["noise_id"])
        for label in (
            "all",
            f"SNR {item['band']}",
            f"noise: {kind}",
            "reverberant" if u.extra["reverb"] == "1" else "dry",
        ):
            groups[label].append(item)
    order = sorted(groups, key=lambda g: (g != "all", not g.startswith("SNR"), g in ("dry", "reverberant"), g))
    return {g: {s: summarize([it[s] for it in groups[g]]) for s in SYSTEMS} for g in order}


def markdown(table: dict[str, dict[str, dict]]) -> str:
    lines = [
        "| pairs | n | noisy PESQ-wb / STOI / WER | codec ceiling | ceiling through noisy input | enhanced | gain |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    cell = lambda m: f"{m['pesq_wb']:.2f} / {m['stoi']:.3f} / {m.get('wer', float('nan')):.1%}"  # noqa: E731
    for group, row in table.items():
        noisy, enhanced = row["noisy"], row["enhanced"]
        gain = f"{enhanced['pesq_wb'] - noisy['pesq_wb']:+.2f} / {enhanced['stoi'] - noisy['stoi']:+.3f}"
        ceilings = [cell(row["codec_ceiling"]), cell(row["mixture_ceiling"])]
        cells = [group, str(noisy["n"]), cell(noisy), *ceilings, cell(enhanced), gain]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["enhance-dmel-16k"], help="bundled names or export folders")
    p.add_argument("--manifests", type=Path, default=Path("work_data/manifests"))
    p.add_argument("--hours", type=float, default=0.1, help="hours of clean speech in the pairs")
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--out", type=Path, default=Path("results/lm/unseen"))
    p.add_argument("--gain-floor", type=float, help="the mixture render's lowest band gain (default: the model's)")
    args = p.parse_args()
    rows = unseen_pairs(args.manifests.parent, args.hours, args.seed)
    categories = {u.ID: u.extra.get("category", "") for u in read_manifest(args.manifests / "noise_ambient_dev.csv")}
    noisy, clean = [load_pair(u.path) for u in rows], [load_pair(u.extra["clean_path"]) for u in rows]
    texts = [u.text or None for u in rows]
    results = {}
    for model in args.models:
        enhancer = load_enhancer(model)
        enhancer.set_gain_floor(args.gain_floor)
        if args.gain_floor is not None:
            model = f"{model}, gain floor {args.gain_floor:g}"
        files = enhanced_files(enhancer, rows, args.out, f"unseen-floor{enhancer.gain_floor:g}")
        result = evaluate_enhancement(
            noisy,
            [load_pair(f) for f in files],
            clean,
            [float(u.extra["snr_db"]) for u in rows],
            codec=enhancer.codec,
            transcripts=texts,
            ids=[u.ID for u in rows],
            band_edges=(0.0, 5.0, 10.0),
            dnsmos=False,
        )
        results[model] = breakdown(result["items"], rows, categories)
        print(f"## {model}\n\n{markdown(results[model])}\n", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scores.json").write_text(
        json.dumps({"hours": args.hours, "seed": args.seed, "models": results}, indent=2)
    )


if __name__ == "__main__":
    sys.exit(main())
