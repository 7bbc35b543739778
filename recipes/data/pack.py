#!/usr/bin/env python3
"""Build a compact, portable training pack: speech re-encoded as Ogg/Opus plus manifests.

The GPU machine gets a copy of the checkout only (no ../shared, at most 64 MiB), so training
there reads this pack instead. At the default Opus setting (soundfile's, about 32 kbit/s) the
134 min of shared speech, the 1 h synthetic corpus and the noise recordings take 46 MiB, which
fits beside the checkout and the wheels once the bundled models the run does not read are
offloaded (recipes/device/kit.sh). How many dMel codes Opus changes, and what training from the
pack costs the enhancer, is measured in recipes/lm/README.md. Manifest paths are relative to
the pack, and a file listed by several manifests (cathy in real_speech, say) is packed once.

    python recipes/data/pack.py --manifests work_data/manifests --out .pack

There, `--unpack .pack --out DIR` decodes the pack to 16-bit WAV in DIR/audio with manifests
in DIR/manifests pointing at them: mixing noisy pairs reads each clean file many times (babble
sums several), and WAV reads cost a fraction of Opus decoding. The pack itself stays as it
came. Both directions are resumable: files already written are kept.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from speechtok.data.audio import load_audio
from speechtok.data.manifest import Utterance, read_manifest, write_manifest


def convert(job: tuple[str, str, int, dict]) -> None:
    """Write `src` at `sample_rate` to `dst` with soundfile's `write` keywords (atomically)."""
    src, dst, sample_rate, fmt = job
    dst = Path(dst)
    if dst.exists():
        return
    wav = load_audio(src, sample_rate)[0].numpy()
    tmp = dst.with_name(f"{dst.stem}.part{dst.suffix}")  # soundfile tells the format by the suffix
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(tmp), wav, sample_rate, **fmt)
    tmp.replace(dst)


def run_jobs(jobs: list, workers: int, desc: str) -> None:
    with ProcessPoolExecutor(workers) as pool:
        list(tqdm(pool.map(convert, jobs, chunksize=16), total=len(jobs), desc=desc))


def pack(args) -> None:
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
    opus = {"format": "OGG", "subtype": "OPUS", "compression_level": args.compression_level}
    run_jobs([(src, str(args.out / r), args.sample_rate, opus) for src, r in rel_of.items()], args.workers, "opus")
    for key, utts in packed.items():
        write_manifest(args.out / "manifests" / f"{key}.csv", utts)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"packed {len(rel_of)} files, {sum(seconds.values()) / 3600:.2f} h, {size / 2**20:.1f} MiB in {args.out}")


def unpack(args) -> None:
    root, wav_of, tables = args.unpack.resolve(), {}, {}
    for m in sorted((args.unpack / "manifests").glob("*.csv")):
        utts = read_manifest(m)
        for u in utts:
            wav_of.setdefault(u.path, args.out.resolve() / Path(u.path).relative_to(root).with_suffix(".wav"))
        tables[m.name] = [replace(u, path=str(wav_of[u.path])) for u in utts]
    wav = {"subtype": "PCM_16"}
    run_jobs([(src, str(dst), args.sample_rate, wav) for src, dst in wav_of.items()], args.workers, "wav")
    for name, utts in tables.items():
        write_manifest(args.out / "manifests" / name, utts)
    print(f"unpacked {len(wav_of)} files into {args.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifests", type=Path, default=Path("work_data/manifests"))
    p.add_argument("--names", nargs="+", default=["cathy", "librispeech", "real_speech", "synth", "noise"])
    p.add_argument("--splits", nargs="+", default=["train", "dev"])
    p.add_argument("--out", type=Path, default=Path(".pack"))
    p.add_argument("--unpack", type=Path, help="a pack to decode into --out instead")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument(
        "--compression-level",
        type=float,
        default=0.9,
        help="soundfile's Opus setting: 0.9 is about 32 kbit/s, 0.97 about 14, 0.98 about 12",
    )
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    if args.unpack:
        unpack(args)
    else:
        pack(args)


if __name__ == "__main__":
    main()
