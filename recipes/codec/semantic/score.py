#!/usr/bin/env python3
"""Round trip of a semantic codec with a voice prompt: speech -> tokens -> speech in the prompt's voice.

    python recipes/codec/semantic/score.py recipes/codec/semantic/hparams/semantic-16k-25.yaml \
        --codec results/codec/semantic-16k-25_1234/export/semantic-16k-25 --out results/semantic_round_trip.json

The prompt is 3 s of the same speaker, never the target itself:
- `librispeech` dev (25 unseen voices, one long utterance each): the first 3 s are the prompt, the
  rest (up to 8 s) is the target. Its reference text is Whisper's transcript of the real target
  (the corpus has no text for these), so its WER says how much of what Whisper heard survives.
- `crowd` dev (unseen voices, Speech Commands words with their true text): the target is a clip, the
  prompt other clips of the same speaker joined to 3 s.
- `cathy` dev (the seen voice, true text): the prompt is another of her utterances.
For each: Whisper tiny.en WER of the resynthesis and of the real target, resemblyzer similarity of
each to the prompt, and DNSMOS OVRL of each. The resynthesis's similarity to the prompts of the
set's other speakers (`fake_sim_others`) is the floor that speech of this decoder gets from any
voice: how far `fake_sim` rises above it is how much of the prompt's voice is carried.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from hyperpyyaml import load_hyperpyyaml

from speechtok.codecs import load_codec
from speechtok.data.audio import load_audio
from speechtok.data.manifest import read_manifest
from speechtok.eval.judges import corpus_wer, dnsmos, speaker_judge, whisper_judge

SR, PROMPT = 16000, 3 * 16000


def cases(hp: dict, n_per_set: int, seed: int = 0) -> list[dict]:
    """(set, target wav, prompt wav, reference text or None) for each dev set."""
    rng, out = np.random.default_rng(seed), []
    for u in read_manifest(hp["dev_sets"]["librispeech"])[:n_per_set]:
        wav = load_audio(u.path, SR)[0]
        if wav.shape[-1] >= PROMPT + 2 * SR:
            target = wav[PROMPT : PROMPT + 8 * SR]
            out.append({"set": "librispeech", "speaker": u.speaker or u.ID, "prompt": wav[:PROMPT], "target": target})
    for name in ("crowd", "cathy"):
        path = hp["dev_sets"].get(name) or hp["seen_dev_sets"][name]
        by_speaker = defaultdict(list)
        for u in read_manifest(path):
            if u.text.strip():
                by_speaker[u.speaker or u.ID].append(u)
        speakers = [s for s, utts in by_speaker.items() if len(utts) > 1]
        for s in rng.permutation(speakers)[:n_per_set] if name == "crowd" else speakers * n_per_set:
            utts = by_speaker[s]
            order = rng.permutation(len(utts))
            target, others = utts[order[0]], [utts[k] for k in order[1:]]
            prompt = torch.cat([load_audio(u.path, SR)[0] for u in others[:8]])[:PROMPT]
            if prompt.shape[-1] >= 2 * SR:
                wav = load_audio(target.path, SR)[0]
                out.append({"set": name, "speaker": s, "prompt": prompt, "target": wav, "text": target.text})
            if name == "cathy" and sum(c["set"] == "cathy" for c in out) >= n_per_set:
                break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("hparams")
    parser.add_argument("--codec", required=True)
    parser.add_argument("--n_per_set", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with open(args.hparams) as f:
        hp = load_hyperpyyaml(f, {"export_only": True})
    codec, asr, spk = load_codec(args.codec), whisper_judge(), speaker_judge()
    rows, embs = [], []
    for case in cases(hp, args.n_per_set):
        target, prompt = case["target"], case["prompt"]
        with torch.inference_mode():
            codes = codec.encode(target[None, None])
            fake = codec.decode(codes, prompt=prompt[None, None])[0, 0, : target.shape[-1]].clamp(-1, 1).numpy()
        real = target.numpy()
        heard = asr.transcribe(real, SR)
        voice, fake_emb = spk.embed(prompt.numpy(), SR), spk.embed(fake, SR)
        embs.append((case["set"], case["speaker"], voice, fake_emb))
        rows.append(
            {
                "set": case["set"],
                "reference": case.get("text") or heard,
                "real_hyp": heard,
                "fake_hyp": asr.transcribe(fake, SR),
                "real_sim": float(spk.embed(real, SR) @ voice),
                "fake_sim": float(fake_emb @ voice),
                "real_ovrl": dnsmos(real, SR)["dnsmos_ovrl"],
                "fake_ovrl": dnsmos(fake, SR)["dnsmos_ovrl"],
            }
        )
    for row, (name, speaker, _, fake_emb) in zip(rows, embs):
        others = [float(fake_emb @ v) for n, s, v, _ in embs if n == name and s != speaker]
        row["fake_sim_others"] = float(np.mean(others)) if others else float("nan")
    table = {}
    for name in dict.fromkeys(r["set"] for r in rows):
        rs = [r for r in rows if r["set"] == name]
        refs = [r["reference"] for r in rs]
        table[name] = {
            "n": len(rs),
            "wer_real": corpus_wer(refs, [r["real_hyp"] for r in rs]),
            "wer_round_trip": corpus_wer(refs, [r["fake_hyp"] for r in rs]),
            **{
                k: float(np.mean([r[k] for r in rs]))
                for k in ("real_sim", "fake_sim", "fake_sim_others", "real_ovrl", "fake_ovrl")
            },
        }
        print(name, " ".join(f"{k} {v:.3f}" for k, v in table[name].items()), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"codec": args.codec, "sets": table, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
