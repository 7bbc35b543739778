#!/usr/bin/env python3
"""Build a compact, portable training pack: speech re-encoded as Ogg/Opus plus manifests.

The GPU machine gets a copy of the checkout only (no ../shared, at most 64 MiB), so training
there reads this pack instead. At the default Opus setting (about 18 kbit/s) the 134 min of
shared speech, the 1 h synthetic corpus and the noise recordings fit in about 26 MiB, leaving
room beside the checkout for wheels (recipes/device/kit.sh); that setting scores PESQ-wb 4.0
against cathy's FLAC (4.4 at soundfile's default of about 30 kbit/s, `--compression-level 0.9`),
far finer than a dMel level. Manifest paths are relative to the pack, and a file listed by
several manifests (cathy in real_speech, say) is packed once.

    python recipes/data/pack.py --manifests work_data/manifests --out .pack

Then on the device: `--manifest_folder .pack/manifests` for any training recipe. Resumable:
files already in the pack are kept.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from speechtok.data.audio import load_audio
from speechtok.data.manifest import Utterance, read_manifest, write_manifest


def to_opus(job: tuple[str, str, int, float]) -> None:
    src, dst, sample_rate, level = job
    dst = Path(dst)
    if dst.exists():
        return
    wav = load_audio(src, sample_rate)[0].numpy()
    tmp = dst.with_name(dst.name + ".part")
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(tmp), wav, sample_rate, format="OGG", subtype="OPUS", compression_level=level)
    tmp.replace(dst)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifests", type=Path, default=Path("work_data/manifests"))
    p.add_argument("--names", nargs="+", default=["cathy", "librispeech", "real_speech", "synth", "noise"])
    p.add_argument("--splits", nargs="+", default=["train", "dev"])
    p.add_argument("--out", type=Path, default=Path(".pack"))
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--compression-level", type=float, default=0.97,
                   help="soundfile's Opus setting: 0.97 is about 14 kbit/s, 0.9 about 32, 0.98 about 12")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    packed, rel_of, seconds = {}, {}, {}  # rel_of: source path -> its one packed file
    for name in args.names:
        for split in args.splits:
            utts = read_manifest(args.manifests / f"{name}_{split}.csv")
            rel = [rel_of.setdefault(u.path, Path("audio") / name / f"{u.ID}.ogg") for u in utts]
            seconds.update((u.path, u.duration) for u in utts)
            packed[f"{name}_{split}"] = [
                Utterance(u.ID, str(Path("..") / r), u.duration, u.speaker, u.text, u.phonemes, u.split, u.extra)
                for u, r in zip(utts, rel)
            ]
    jobs = [(src, str(args.out / r), args.sample_rate, args.compression_level) for src, r in rel_of.items()]
    with ProcessPoolExecutor(args.workers) as pool:
        list(tqdm(pool.map(to_opus, jobs, chunksize=16), total=len(jobs), desc="opus"))
    for key, utts in packed.items():
        write_manifest(args.out / "manifests" / f"{key}.csv", utts)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    hours = sum(seconds.values()) / 3600
    print(f"packed {len(jobs)} files, {hours:.2f} h, {size / 2**20:.1f} MiB in {args.out}")


if __name__ == "__main__":
    main()
