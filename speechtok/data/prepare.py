"""Data preparation by task, shared by the `recipes/data/hparams/*.yaml` runs of `recipes/data/prepare.py`.

Each task writes train/dev manifests (`manifests/<name>_<split>.csv`) under one output folder and
resumes: finished audio files are kept and skipped.

- `manifests` (codecs, and the clean speech of the other tasks): cathy, LibriSpeech, their union
  `real_speech` and noise, from the shared data, in their own splits;
- `synth` (TTS): a multi-speaker synthetic corpus with a voice-disjoint dev split;
- `noisy` (enhancement): noisy/clean pairs mixed from the clean manifests named in `noisy_sources`,
  which earlier `manifests` / `synth` runs wrote;
- `noisy_unseen` (choosing enhancers): dev pairs of unseen voices in unseen noise and rooms;
- `pieces` (TTS on many real voices): long recordings cut between words into pieces with text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from speechtok.data.corpora import shared_manifests
from speechtok.data.manifest import Utterance, read_manifest, write_manifest
from speechtok.data.noise import make_noisy_corpus
from speechtok.data.rooms import write_simulated_rirs
from speechtok.data.synth import build_synth_corpus
from speechtok.errors import cannot

SPLITS = ("train", "dev")
WRITTEN_BY = {
    name: "manifests" for name in ("cathy", "librispeech", "crowd", "real_speech", "noise", "noise_ambient", "rir")
}


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
    """Both splits of manifest `name`, which an earlier task wrote."""
    paths = [manifests / f"{name}_{split}.csv" for split in SPLITS]
    if not all(p.is_file() for p in paths):
        task = WRITTEN_BY.get(name, "synth")
        problem = f"no '{name}' manifests yet; prepare them first (recipes/data/hparams/{task}.yaml)"
        raise FileNotFoundError(cannot("read manifests in", manifests, problem))
    return [u for p in paths for u in read_manifest(p)]


def manifests_task(hp: dict, manifests: Path, summary: dict, progress: bool) -> None:
    corpora = shared_manifests(hp["shared_data"])
    for name, utts in corpora.items():
        write_splits(manifests, name, utts, summary)
    write_splits(manifests, "real_speech", corpora["cathy"] + corpora["librispeech"], summary)


def synth_task(hp: dict, manifests: Path, summary: dict, progress: bool) -> None:
    result = build_synth_corpus(
        hp["output_folder"] / "synth",
        hours=hp["hours"],
        voices=hp["synth_voices"],
        dev_voices=hp["synth_dev_voices"],
        dev_fraction=hp["dev_fraction"],
        text_dir=hp["shared_data"] / "text",
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


def noisy_task(hp: dict, manifests: Path, summary: dict, progress: bool) -> None:
    clean = [u for name in hp["noisy_sources"] for u in load_splits(manifests, name)]
    write_splits(manifests, "clean", clean, summary)
    name = hp["noisy_name"]
    noise = {s: [manifests / f"{n}_{s}.csv" for n in hp["noise_sources"]] for s in SPLITS}
    noise = {s: [p for p in paths if p.is_file()] for s, paths in noise.items()}  # absent: generated noise only
    rooms = hp["output_folder"] / "rir_sim"
    utts = []
    for split in SPLITS:
        hours = hp[f"noisy_{split}_hours"]
        if hours <= 0 or not summary["manifests"][f"clean_{split}"]["files"]:
            continue
        rirs = [manifests / f"{n}_{split}.csv" for n in hp["rir_sources"] if (manifests / f"{n}_{split}.csv").is_file()]
        if hp["simulated_rooms"].get(split, 0) > 0:
            rirs.append(write_simulated_rirs(rooms, hp["simulated_rooms"][split], split, hp["seed"], hp["sample_rate"]))
        path = make_noisy_corpus(
            manifests / f"clean_{split}.csv",
            noise[split] or None,
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
            rir_manifests=rirs,
        )
        utts += [u for u in read_manifest(path) if u.split == split]
    write_splits(manifests, name, utts, summary)


def noisy_unseen_task(hp: dict, manifests: Path, summary: dict, progress: bool) -> None:
    """Dev pairs of material no training sees: the unseen voices (`voices`, dev manifests; their
    pseudo-labelled copies where they exist) in unseen real noise (`noise`, dev recordings) at
    `snr_range`, a share `reverb_prob` in dev rooms (measured `rir` dev + simulated dev rooms)."""
    voices = []
    for name in hp["voices"]:
        labelled = manifests / f"{name}_pl.csv"
        voices += read_manifest(labelled if labelled.exists() else manifests / f"{name}.csv")
    clean = write_manifest(manifests / "unseen_voices_dev.csv", [u for u in voices if u.duration >= hp["min_seconds"]])
    rooms = write_simulated_rirs(
        hp["output_folder"] / "rir_sim", hp["simulated_rooms"], "dev", hp["room_seed"], hp["sample_rate"]
    )
    path = make_noisy_corpus(
        clean,
        [manifests / f"{n}.csv" for n in hp["noise"]],
        hp["output_folder"] / hp["noisy_name"] / "dev",
        hours=hp["hours"],
        snr_range=tuple(hp["snr_range"]),
        seed=hp["seed"],
        reverb_prob=hp["reverb_prob"],
        workers=hp["workers"],
        sample_rate=hp["sample_rate"],
        noise_kinds={"real": 1.0},
        rir_manifests=[*(manifests / f"{n}.csv" for n in hp["rirs"]), rooms],
    )
    utts = read_manifest(path)
    write_manifest(manifests / f"{hp['noisy_name']}_dev.csv", utts)
    summary["manifests"][f"{hp['noisy_name']}_dev"] = stats(utts)


def pieces_task(hp: dict, manifests: Path, summary: dict, progress: bool) -> None:
    """Recordings of `sources` (both splits; `min_source_seconds` long at least) cut between
    Whisper's words into pieces of `piece_seconds`, each with its transcript: several utterances of
    each LibriSpeech speaker and interview voice, where the corpus has one."""
    from speechtok.data.pieces import cut_pieces
    from speechtok.eval.judges import whisper_judge

    utts = [u for name in hp["sources"] for u in load_splits(manifests, name) if u.duration >= hp["min_source_seconds"]]
    lo, hi = hp["piece_seconds"]
    pieces = cut_pieces(utts, hp["output_folder"] / hp["name"], whisper_judge(), lo, hi, hp["sample_rate"], progress)
    write_splits(manifests, hp["name"], pieces, summary)


TASKS: dict[str, Callable[[dict, Path, dict, bool], None]] = {
    "manifests": manifests_task,
    "synth": synth_task,
    "noisy": noisy_task,
    "noisy_unseen": noisy_unseen_task,
    "pieces": pieces_task,
}


def prepare(hp: dict, progress: bool = True) -> dict:
    """Run task `hp["task"]` (a key of TASKS) into `hp["output_folder"]` (a Path, like `shared_data`);
    the summary (files, hours and speakers per manifest, wall time) is also written to
    `summary_<task>.json` there."""
    task = hp["task"]
    if task not in TASKS:
        raise ValueError(f"unknown data task {task!r} (known: {', '.join(TASKS)})")
    manifests = hp["output_folder"] / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    summary = {"task": task, "output_folder": str(hp["output_folder"]), "manifests": {}}
    t0 = time.perf_counter()
    TASKS[task](hp, manifests, summary, progress)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    path = hp["output_folder"] / f"summary_{task}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


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
    print(f"wall time: {summary['wall_s']:.1f}s")
    print(f"output: {summary['output_folder']}")
