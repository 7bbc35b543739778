#!/usr/bin/env python3
"""How fast does the synthetic corpus build? Times N minutes of audio with the default voices.

    python bench/synth_speed.py --minutes 60

Each engine's default voices synthesise their share of the minutes (proportional to their voice
count, as in a real build) into a fresh folder, so nothing is resumed; the total row is the sum.
Writes bench/results/synth_speed.json. RTF = wall seconds / audio seconds (lower is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from speechtok.data.synth import DEFAULT_VOICES, build_synth_corpus, load_sentences

RESULTS = Path(__file__).resolve().parent / "results" / "synth_speed.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="audio minutes in total (default 60)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    sentences = load_sentences()
    rows = []
    with tempfile.TemporaryDirectory(prefix="synth-speed-") as tmp:
        for engine in ("espeak", "flite", "festival"):
            voices = [v for v in DEFAULT_VOICES if v.engine == engine]
            minutes = args.minutes * len(voices) / len(DEFAULT_VOICES)
            r = build_synth_corpus(
                Path(tmp) / engine,
                minutes / 60,
                voices=voices,
                dev_voices=[],
                sentences=sentences,
                seed=args.seed,
                workers=args.workers,
                progress=False,
            )
            audio_s = sum(u.duration for u in r.utterances)
            rows.append(
                {
                    "engine": engine,
                    "voices": len(voices),
                    "files": len(r.utterances),
                    "audio_min": round(audio_s / 60, 2),
                    "wall_s": round(r.wall_s, 1),
                    "rtf": round(r.wall_s / audio_s, 4),
                }
            )
    audio = sum(r["audio_min"] for r in rows)
    wall = sum(r["wall_s"] for r in rows)
    rows.append(
        {
            "engine": "total",
            "voices": sum(r["voices"] for r in rows),
            "files": sum(r["files"] for r in rows),
            "audio_min": round(audio, 2),
            "wall_s": round(wall, 1),
            "rtf": round(wall / (audio * 60), 4),
        }
    )

    print(f"{'engine':<10}{'voices':>7}{'files':>7}{'audio min':>11}{'wall s':>9}{'RTF':>8}")
    for r in rows:
        print(
            f"{r['engine']:<10}{r['voices']:>7}{r['files']:>7}{r['audio_min']:>11.2f}{r['wall_s']:>9.1f}{r['rtf']:>8.4f}"
        )
    print(f"=> 1 hour of audio in about {60 * rows[-1]['rtf']:.1f} min with {args.workers} workers")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "minutes": args.minutes,
                "workers": args.workers,
                "cpus": os.cpu_count(),
                "machine": platform.processor() or platform.machine(),
                "rows": rows,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
