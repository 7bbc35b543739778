#!/usr/bin/env python3
"""Score enhancers where the issue sets its goal: held-out pairs at 0-10 dB SNR, PESQ-wb and STOI
over the noisy input (goal +0.4 and +0.05), on each of four draws of pairs and pooled.

    python recipes/lm/enhance/score_draws.py --models enhance-dmel-16k results/.../export/enhance-dmel-16k

The first draw is the dev pairs (`noisy_dev.csv`, used to choose the test-time settings); the
other three are the same held-out speech and noise drawn again with other seeds (211 pairs
each), made here with recipes/data/hparams/noisy.yaml when missing. Enhanced files are kept under --out, by a hash
of the model's weights and config and of each noisy file (a rerun only scores them), each model
with its shipped test-time settings, file by file as `speechtok enhance` runs them. Prints one
table and writes scores.json beside the audio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

from speechtok.data.audio import save_audio
from speechtok.data.manifest import read_manifest
from speechtok.enhance import load_enhancer
from speechtok.errors import cannot
from speechtok.eval.generation import evaluate_enhancement, load_pair

REPO = Path(__file__).resolve().parents[3]
DRAWS = {"noisy": None, "noisy_check": 777, "noisy_check3": 999, "noisy_check4": 31337}  # name -> seed


def draw_rows(manifests: Path, name: str, seed: int | None, band: tuple[float, float]) -> list:
    path = manifests / f"{name}_dev.csv"
    if not path.exists():
        if seed is None:
            raise SystemExit(cannot("read dev pairs", path, "file is missing; make them first (recipes/lm/README.md)"))
        subprocess.run(
            [
                sys.executable,
                str(REPO / "recipes/data/prepare.py"),
                str(REPO / "recipes/data/hparams/noisy.yaml"),
                "--output_folder",
                str(manifests.parent),
                "--seed",
                str(seed),
                "--noisy_name",
                name,
                "--noisy_train_hours",
                "0",
                "--noisy_dev_hours",
                "0.3",
            ],
            check=True,
        )
    return [u for u in read_manifest(path) if band[0] <= float(u.extra["snr_db"]) < band[1]]


def enhanced_files(enhancer, rows: list, out: Path, name: str) -> list[Path]:
    """Enhance each row once, into `out/<hash of weights and config>/<draw name>/<ID>-<hash of the
    noisy file>.wav`: a rerun of the same model and test-time settings on the same audio, under
    whatever name or beside whatever other models, only scores them, while a draw made again
    (or the same IDs from other manifests, such as an unpacked Opus pack's) is enhanced afresh."""
    folder = out / digest(Path(enhancer.path) / p for p in ("model.safetensors", "config.json")) / name
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"{u.ID}-{digest([Path(u.path)])}.wav" for u in rows]
    todo = [(u, f) for u, f in zip(rows, files) if not f.exists()]
    for i, (u, f) in enumerate(todo, 1):
        save_audio(f, enhancer.enhance(u.path), enhancer.sample_rate)
        print(f"\r{folder.parent.name}/{name}: {i}/{len(todo)}", end="", file=sys.stderr, flush=True)
    if todo:
        print(file=sys.stderr)
    return files


def digest(paths) -> str:
    """The first 16 hex digits of the SHA-1 of the files' bytes, in order."""
    h = hashlib.sha1()
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["enhance-dmel-16k"], help="bundled names or export folders")
    p.add_argument("--manifests", type=Path, default=Path("work_data/manifests"))
    p.add_argument("--out", type=Path, default=Path("results/lm/draws"))
    p.add_argument("--band", type=float, nargs=2, default=(0.0, 10.0), metavar=("LOW_DB", "HIGH_DB"))
    args = p.parse_args()
    tags = [Path(m).name if Path(m).parent.name != "export" else Path(m).parents[1].name for m in args.models]
    if len(set(tags)) != len(tags):
        tags = [f"{i}-{t}" for i, t in enumerate(tags)]
    enhancers = [load_enhancer(m) for m in args.models]
    scores: dict[str, dict[str, dict]] = {}
    for name, seed in DRAWS.items():
        rows = draw_rows(args.manifests, name, seed, tuple(args.band))
        noisy, clean = [load_pair(u.path) for u in rows], [load_pair(u.extra["clean_path"]) for u in rows]
        for tag, enhancer in zip(tags, enhancers):
            files = enhanced_files(enhancer, rows, args.out, name)
            table = evaluate_enhancement(
                noisy, [load_pair(f) for f in files], clean, [float(u.extra["snr_db"]) for u in rows], dnsmos=False
            )["table"]["all"]
            scores.setdefault(name, {})[tag] = {
                s: {k: table[s][k] for k in ("n", "pesq_wb", "stoi")} for s in ("noisy", "enhanced")
            }
    scores["all four"] = {t: {s: pooled([scores[d][t][s] for d in DRAWS]) for s in ("noisy", "enhanced")} for t in tags}
    lines = [
        "| pairs | n | noisy PESQ-wb / STOI | " + " | ".join(f"{t} | gain" for t in tags) + " |",
        "|" + "---|" * (3 + 2 * len(tags)),
    ]
    for name, row in scores.items():
        noisy = row[tags[0]]["noisy"]
        label = {"noisy": "dev pairs"}.get(name) or (f"seed {DRAWS[name]}" if name in DRAWS else name)
        cells = [label, str(noisy["n"]), f"{noisy['pesq_wb']:.3f} / {noisy['stoi']:.3f}"]
        for t in tags:
            n, e = row[t]["noisy"], row[t]["enhanced"]
            cells += [
                f"{e['pesq_wb']:.3f} / {e['stoi']:.3f}",
                f"{e['pesq_wb'] - n['pesq_wb']:+.3f} / {e['stoi'] - n['stoi']:+.3f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scores.json").write_text(
        json.dumps({"models": dict(zip(tags, args.models)), "band_db": args.band, "draws": scores}, indent=2)
    )


def pooled(means: list[dict]) -> dict:
    """Means over the union of the draws' pairs, from each draw's means and counts."""
    n = sum(m["n"] for m in means)
    return {"n": n, **{k: sum(m[k] * m["n"] for m in means) / n for k in ("pesq_wb", "stoi")}}


if __name__ == "__main__":
    main()
