#!/usr/bin/env python3
"""Learning curves: dev PESQ-wb on unseen voices against CPU-hours, one line per run, baselines flat.

    python recipes/codec/dmel_vocoder/plot_curves.py --runs "(a) mel only=results/dmel_vocoder/a_mel" \
        "(b) mel+STFT+phase=results/dmel_vocoder/b_phase" --baselines results/vocoder_scores_subset.json \
        --out recipes/codec/dmel_vocoder/curves.png

Each run's `train_log.txt` (written by train.py) gives `cpu_hours` and the unseen-voice mean `pesq_wb`
per dev pass; `--offset LABEL=HOURS` shifts a warm-started run by the CPU-hours of its start.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROW = re.compile(r"step: (?P<step>\d+).*cpu_hours: (?P<hours>[\d.e+-]+).*valid pesq_wb: (?P<pesq>[\d.e+-]+)")


def read_curve(run_folder: Path) -> list[tuple[float, float, int]]:
    """(cpu_hours, unseen-voice PESQ-wb, step) per dev pass of a run."""
    rows = []
    for line in (run_folder / "train_log.txt").read_text().splitlines():
        m = ROW.search(line)
        if m:
            rows.append((float(m["hours"]), float(m["pesq"]), int(m["step"])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="LABEL=RUN_FOLDER")
    parser.add_argument("--baselines", type=Path, help="score.py JSON: one flat line per decoder")
    parser.add_argument("--offset", nargs="*", default=[], help="LABEL=HOURS")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    offsets = {k: float(v) for k, v in (o.split("=", 1) for o in args.offset)}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for spec in args.runs:
        label, folder = spec.split("=", 1)
        curve = read_curve(Path(folder))
        ax.plot([h + offsets.get(label, 0.0) for h, _, _ in curve], [p for _, p, _ in curve], marker=".", label=label)
    if args.baselines:
        for name, scores in json.loads(args.baselines.read_text()).items():
            ax.axhline(scores["pesq_wb"], linestyle="--", linewidth=1, color="grey")
            ax.annotate(
                f"{Path(name).name} {scores['pesq_wb']:.2f}",
                (0, scores["pesq_wb"]),
                fontsize=8,
                xytext=(2, 2),
                textcoords="offset points",
            )
    ax.set_xlabel("CPU-hours (process CPU time, this 2-core machine)")
    ax.set_ylabel("dev PESQ-wb, unseen voices")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
