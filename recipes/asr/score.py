#!/usr/bin/env python3
"""WER and CER of a transcriber through the tokens against Whisper tiny.en on the same dev speech.

    python recipes/asr/score.py recipes/asr/hparams/ctc-semantic-16k-25.yaml \
        --model results/asr/asr-semantic-16k-25_1234/export/asr-semantic-16k-25 --out results/asr_score.json

Runs from audio, as `speechtok transcribe` does (Whisper encoder -> tokens -> CTC head), on every
transcribed utterance of the recipe's dev sets (unseen voices) and, apart, its seen dev sets.
LibriSpeech dev's references are Whisper's own pseudo-labels, so there Whisper's figure is near 0
by construction and ours says how much of what Whisper heard the tokens keep; crowd and cathy have
true text. Texts are normalised as for CTC (lower-case letters and spaces) for both systems.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jiwer
import torch
from hyperpyyaml import load_hyperpyyaml

from speechtok.asr import load_transcriber
from speechtok.asr.ctc import text_for_ctc
from speechtok.asr.data import transcribed
from speechtok.data.audio import load_audio
from speechtok.eval.judges import whisper_judge


def rates(refs: list[str], hyps: list[str]) -> dict[str, float]:
    hyps = [h or "-" for h in hyps]  # jiwer refuses an empty hypothesis
    return {"wer": jiwer.wer(refs, hyps), "cer": jiwer.cer(refs, hyps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hparams")
    parser.add_argument("--model", required=True, help="a transcriber folder or bundled name")
    parser.add_argument("--max_per_set", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with open(args.hparams) as f:
        hp = load_hyperpyyaml(f, {"export_only": True})
    ours, whisper = load_transcriber(args.model), whisper_judge()
    sr = ours.codec.sample_rate
    table, rows = {}, []
    sets = {**hp["dev_sets"], **{f"{k} (seen)": v for k, v in hp["seen_dev_sets"].items()}}
    for name, manifest in sets.items():
        utts = transcribed(manifest)[: args.max_per_set]
        refs, hyp_ours, hyp_whisper = [], [], []
        for u in utts:
            wav = load_audio(u.path, sr)[0]
            refs.append(text_for_ctc(u.text))
            hyp_ours.append(ours.transcribe(wav))
            hyp_whisper.append(text_for_ctc(whisper.transcribe(wav.numpy(), sr)))
            rows.append({"set": name, "id": u.ID, "ref": refs[-1], "ours": hyp_ours[-1], "whisper": hyp_whisper[-1]})
        table[name] = {"n": len(utts), "ours": rates(refs, hyp_ours), "whisper": rates(refs, hyp_whisper)}
        t = table[name]
        print(
            f"{name}: n {t['n']}  ours WER {t['ours']['wer']:.3f} CER {t['ours']['cer']:.3f}  "
            f"whisper WER {t['whisper']['wer']:.3f} CER {t['whisper']['cer']:.3f}",
            flush=True,
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": str(args.model), "sets": table, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    with torch.inference_mode():
        main()
