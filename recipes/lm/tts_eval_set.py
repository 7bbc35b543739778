"""Build a TTS evaluation manifest: held-out sentences, each with a voice prompt.

Every row keeps its text and ground-truth audio (for the WER and codec ceilings) and gets a
`prompt_path`: another utterance, 2-4 s long where possible, by the same speaker. `speechtok tts
--text-file` reads the prompts from it, and `speechtok eval-tts --data` scores speaker similarity
against them. Rows are taken evenly across speakers, so held-out voices are not crowded out.

    python recipes/lm/tts_eval_set.py work_data/manifests/cathy_dev.csv work_data/manifests/synth_dev.csv \\
        --per-speaker 6 --out work_data/manifests/tts_eval.csv
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from speechtok.data.manifest import Utterance, read_manifest, write_manifest


def with_prompts(
    rows: list[Utterance], per_speaker: int, seed: int = 0, prompt_seconds: tuple[float, float] = (2.0, 4.0)
) -> list[Utterance]:
    """Up to `per_speaker` rows per speaker, each with another row of its speaker as prompt_path."""
    rng = np.random.default_rng(seed)
    by_speaker = defaultdict(list)
    for u in rows:
        if u.text.strip():
            by_speaker[u.speaker].append(u)
    out = []
    for speaker in sorted(by_speaker):
        mine = sorted(by_speaker[speaker], key=lambda u: u.ID)
        if len(mine) < 2:
            continue  # no other utterance to prompt with
        short = [u for u in mine if prompt_seconds[0] <= u.duration <= prompt_seconds[1]] or mine
        for j in sorted(rng.permutation(len(mine))[:per_speaker]):
            u = mine[j]
            prompts = [p for p in short if p.ID != u.ID] or [p for p in mine if p.ID != u.ID]
            prompt = prompts[int(rng.integers(len(prompts)))]
            out.append(
                Utterance(
                    u.ID,
                    u.path,
                    u.duration,
                    speaker=u.speaker,
                    text=u.text,
                    split=u.split,
                    extra={"prompt_path": prompt.path, "prompt_id": prompt.ID},
                )
            )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", nargs="+", type=Path, help="dev manifests (text, speaker, audio path)")
    parser.add_argument("--out", type=Path, required=True, help="manifest to write")
    parser.add_argument("--per-speaker", type=int, default=6, help="rows per speaker")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [u for m in args.manifests for u in read_manifest(m)]
    picked = with_prompts(rows, args.per_speaker, args.seed)
    if not picked:
        raise SystemExit(f"no speaker has two transcribed utterances in {', '.join(map(str, args.manifests))}")
    write_manifest(args.out, picked)
    print(f"wrote {args.out}: {len(picked)} rows, {len({u.speaker for u in picked})} speakers")


if __name__ == "__main__":
    main()
