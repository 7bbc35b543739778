#!/usr/bin/env python3
"""Prepare speechtok's data in three resumable stages (see hparams/prepare.yaml for the layout).

    python recipes/data/prepare.py recipes/data/hparams/prepare.yaml --hours 1

1. real speech: manifests of cathy, LibriSpeech and noise from the shared data (their own splits);
2. synth: a multi-speaker synthetic corpus with a voice-disjoint dev split;
3. noisy: noisy/clean pairs mixed from the clean manifests named in `noisy_sources`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechtok.data.corpora import shared_manifests
from speechtok.data.manifest import Utterance, read_manifest, write_manifest
from speechtok.data.noise import make_noisy_corpus
from speechtok.data.synth import build_synth_corpus

REPO = Path(__file__).resolve().parents[2]
SPLITS = ("train", "dev")


def repo_path(p: str | Path) -> Path:
    p = Path(p)
    return p if p.is_absolute() else (REPO / p).resolve()


def stats(utts: list[Utterance]) -> dict:
    return {
        "files": len(utts),
        "hours": round(sum(u.duration for u in utts) / 3600, 4),
        "speakers": len({u.speaker for u in utts if u.speaker}),
    }


def write_splits(manifests: Path, name: str, utts: list[Utterance], summary: dict) -> None:
    for split in SPLITS:
        part = [u for u in utts if u.split == split]
        write_manifest(manifests / f"{name}_{split}.csv", part)
        summary["manifests"][f"{name}_{split}"] = stats(part)


def load_splits(manifests: Path, name: str) -> list[Utterance]:
    paths = [manifests / f"{name}_{split}.csv" for split in SPLITS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing}: not prepared yet; run once with the stage that writes '{name}' enabled")
    return [u for p in paths for u in read_manifest(p)]


def real_speech_stage(hp: dict, manifests: Path, summary: dict) -> None:
    corpora = shared_manifests(repo_path(hp["shared_data"]))
    for name, utts in corpora.items():
        write_splits(manifests, name, utts, summary)
    write_splits(manifests, "real_speech", corpora["cathy"] + corpora["librispeech"], summary)


def synth_stage(hp: dict, manifests: Path, summary: dict, progress: bool) -> None:
    result = build_synth_corpus(
        hp["output_folder"] / "synth",
        hours=hp["hours"],
        voices=hp["synth_voices"],
        dev_voices=hp["synth_dev_voices"],
        dev_fraction=hp["dev_fraction"],
        text_dir=repo_path(hp["shared_data"]) / "text",
        seed=hp["seed"],
        workers=hp["workers"],
        block_size=hp["synth_block_size"],
        sample_rate=hp["sample_rate"],
        progress=progress,
    )
    write_splits(manifests, "synth", result.utterances, summary)
    summary["synth"] = {
        "synthesized_now": result.synthesized,
        "resumed": len(result.utterances) - result.synthesized,
        "voices": {s: sorted({u.speaker for u in result.split(s)}) for s in SPLITS},
    }


def noisy_stage(hp: dict, manifests: Path, summary: dict) -> None:
    clean = [u for name in hp["noisy_sources"] for u in load_splits(manifests, name)]
    write_splits(manifests, "clean", clean, summary)
    name = hp["noisy_name"]
    noise_ok = all((manifests / f"noise_{s}.csv").is_file() for s in SPLITS)
    utts = []
    for split in SPLITS:
        hours = hp[f"noisy_{split}_hours"]
        if hours <= 0 or not summary["manifests"][f"clean_{split}"]["files"]:
            continue
        path = make_noisy_corpus(
            manifests / f"clean_{split}.csv",
            manifests / f"noise_{split}.csv" if noise_ok else None,
            hp["output_folder"] / name / split,
            hours=hours,
            snr_range=tuple(hp["snr_range"]),
            seed=hp["seed"],
            reverb_prob=hp["reverb_prob"],
            workers=hp["workers"],
            sample_rate=hp["sample_rate"],
            noise_kinds=hp["noise_kinds"],
            speed_range=tuple(hp["speed_range"]),
            noise_speed_range=tuple(hp["noise_speed_range"]),
        )
        utts += [u for u in read_manifest(path) if u.split == split]
    write_splits(manifests, name, utts, summary)


def print_summary(summary: dict) -> None:
    print(f"\n{'manifest':<20}{'files':>8}{'hours':>10}{'speakers':>10}")
    for name, s in summary["manifests"].items():
        print(f"{name:<20}{s['files']:>8}{s['hours']:>10.3f}{s['speakers']:>10}")
    if "synth" in summary:
        v = summary["synth"]["voices"]
        print(
            f"synth voices: {len(v['train'])} train + {len(v['dev'])} dev (disjoint); "
            f"{summary['synth']['synthesized_now']} files synthesised now, {summary['synth']['resumed']} resumed"
        )
    print("wall time: " + ", ".join(f"{k} {s:.1f}s" for k, s in summary["wall_s"].items()))
    print(f"output: {summary['output_folder']}")


def main(argv: list[str]) -> dict:
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as f:
        hp = load_hyperpyyaml(f, overrides)
    hp["output_folder"] = repo_path(hp["output_folder"])
    manifests = hp["output_folder"] / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    summary = {"output_folder": str(hp["output_folder"]), "manifests": {}, "wall_s": {}}
    t_all = time.perf_counter()
    stages = [
        ("real_speech", lambda: real_speech_stage(hp, manifests, summary)),
        ("synth", lambda: synth_stage(hp, manifests, summary, not run_opts["noprogressbar"])),
        ("noisy", lambda: noisy_stage(hp, manifests, summary)),
    ]
    for name, run in stages:
        if hp[f"{name}_stage"]:
            t0 = time.perf_counter()
            print(f"== stage {name}", flush=True)
            run()
            summary["wall_s"][name] = round(time.perf_counter() - t0, 1)
    summary["wall_s"]["total"] = round(time.perf_counter() - t_all, 1)
    (hp["output_folder"] / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print_summary(summary)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
