"""Throughput of `speechtok encode` over a folder of >= 30 min of speech (dmel-16k-gl by default).

The corpus is the shared LibriSpeech subset, read in place (52 min, 251 FLAC files); without
the shared data, 30+ min of synthetic speech-like audio at mixed sample rates and formats is
generated once under bench/.cache/ (git-ignored by its own .gitignore). Each configuration runs
the CLI in a fresh process into an empty output folder (wall time includes Python/torch start-up),
then once more over the finished output to time the resume check. Prints a table and writes
bench/results/batch_encode.json.

    python bench/batch_encode.py [--codec dmel-16k-gl] [--workers 2] [--batch-sizes 8 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = HERE / ".cache"
SHARED = Path(os.environ.get("SPEECHTOK_SHARED_DATA", REPO.parent / "shared" / "data")) / "speech" / "librispeech_tc100"


def cache_dir() -> Path:
    CACHE.mkdir(exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    return CACHE


def synth_corpus(minutes: float = 31.0) -> Path:
    """Voiced-sounding test audio (harmonic chirps with syllable envelopes + noise), 2-20 s files."""
    root = cache_dir() / "synth_speech"
    if (root / "DONE").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    total, i = 0.0, 0
    while total < minutes * 60:
        sr, ext = [(16000, "flac"), (22050, "flac"), (24000, "ogg"), (44100, "wav")][i % 4]
        sec = float(rng.uniform(2, 20))
        t = np.arange(int(sec * sr)) / sr
        f0 = 110 + 60 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        voice = sum(np.sin(k * phase) / k for k in range(1, 12))
        env = np.clip(np.sin(2 * np.pi * rng.uniform(2, 5) * t), 0, None)
        wav = 0.2 * voice * env + 0.01 * rng.standard_normal(len(t))
        path = root / f"spk{i % 7}" / f"utt{i:05d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (wav / np.abs(wav).max() * 0.8).astype(np.float32), sr)
        total, i = total + sec, i + 1
    (root / "DONE").write_text(f"{i} files, {total / 60:.1f} min\n")
    return root


def corpus_minutes(root: Path) -> tuple[int, float]:
    files = [p for p in root.rglob("*") if p.suffix in {".flac", ".wav", ".ogg"}]
    return len(files), sum(sf.info(str(p)).duration for p in files) / 60


def run_cli(args: list[str]) -> tuple[float, float | None, str]:
    """Wall seconds of the whole process, the CLI's own encode time (excl. start-up), stderr."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "speechtok.cli", *args], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"speechtok {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    m = re.search(r"in ([\d.]+) s", r.stderr)
    return wall, float(m.group(1)) if m else None, r.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="dmel-16k-gl")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 1])
    ap.add_argument("--source", choices=["auto", "shared", "synth"], default="auto")
    ap.add_argument("--out", default=str(HERE / "results" / "batch_encode.json"))
    args = ap.parse_args()

    use_shared = args.source == "shared" or (args.source == "auto" and (SHARED / "metadata.tsv").exists())
    root = SHARED if use_shared else synth_corpus()
    n_files, minutes = corpus_minutes(root)
    print(f"corpus: {root} ({n_files} files, {minutes:.1f} min)")

    rows = []
    for bs in args.batch_sizes:
        out = cache_dir() / "tokens"
        shutil.rmtree(out, ignore_errors=True)
        common = ["encode", str(root), str(out), "--codec", args.codec, "--workers", str(args.workers)]
        wall, inner, _ = run_cli(common + ["--batch-size", str(bs)])
        rows.append(
            dict(
                run=f"encode batch {bs}",
                workers=args.workers,
                batch_size=bs,
                files=n_files,
                audio_min=round(minutes, 2),
                wall_s=round(wall, 2),
                encode_s=inner,
                x_realtime=round(minutes * 60 / wall, 1),
                x_realtime_excl_startup=round(minutes * 60 / inner, 1) if inner else None,
            )
        )
    wall, inner, err = run_cli(common + ["--batch-size", str(args.batch_sizes[0])])
    assert f"skipped {n_files} done before" in err, err
    rows.append(
        dict(
            run="resume (all done)",
            workers=args.workers,
            batch_size=args.batch_sizes[0],
            files=n_files,
            audio_min=round(minutes, 2),
            wall_s=round(wall, 2),
            encode_s=inner,
            x_realtime=None,
            x_realtime_excl_startup=None,
        )
    )

    print(f"\n{'run':<20}{'files':>7}{'audio min':>11}{'wall s':>9}{'x real time':>13}{'excl. start-up':>16}")
    for r in rows:
        xrt = f"{r['x_realtime']:.0f}x" if r["x_realtime"] else "-"
        ex = f"{r['x_realtime_excl_startup']:.0f}x" if r["x_realtime_excl_startup"] else "-"
        print(f"{r['run']:<20}{r['files']:>7}{r['audio_min']:>11.1f}{r['wall_s']:>9.1f}{xrt:>13}{ex:>16}")

    result = dict(
        codec=args.codec,
        corpus=str(root),
        rows=rows,
        cpus=os.cpu_count(),
        load_avg_1min=os.getloadavg()[0],
        machine=platform.machine(),
        python=platform.python_version(),
        time=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
