#!/usr/bin/env python3
"""Where a semantic codec's round trip loses the words: vocoder, decoder, or prompt.

    python recipes/codec/semantic/diagnose.py --codec semantic-16k-25 --manifest work_data/manifests/cathy_dev.csv

On the first `--n` utterances longer than 4 s, Whisper tiny.en WER against the manifest's text for:
the real speech; the vocoder on the real log-mel; the decoder in its training condition (the first
1.6 s of the same utterance as the prompt, the rest predicted); `decode` with the utterance's own
first 3 s as the prompt; `decode` with another utterance's first 3 s; and the target decoded in
pieces of 2 s or 4 s, each after the other utterance's first 1.6 s, as the decoder trains (does the
length of what is decoded matter?).
"""

from __future__ import annotations

import argparse

import torch

from speechtok.codecs import load_codec
from speechtok.data.audio import load_audio
from speechtok.data.manifest import read_manifest
from speechtok.eval.judges import corpus_wer, whisper_judge

SR = 16000


def in_pieces(codec, codes: torch.Tensor, prompt: torch.Tensor, frames: int) -> torch.Tensor:
    """The codes decoded `frames` at a time, each piece after the same `prompt`, as in training."""
    prompt_codes = codec.encode(prompt)[:, 0]
    prompt_mel = codec.normalise(codec.log_mel(prompt))[..., : prompt_codes.shape[1] * codec.pool]
    pieces = [
        codec.mel_decoder(codes[:, 0, s : s + frames], prompt_codes, prompt_mel)
        for s in range(0, codes.shape[-1], frames)
    ]
    return codec.render(codec.denormalise(torch.cat(pieces, dim=-1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codec", default="semantic-16k-25")
    parser.add_argument("--manifest", required=True, help="a manifest with true text")
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    codec, asr = load_codec(args.codec), whisper_judge()
    utts = [u for u in read_manifest(args.manifest) if u.duration > 4 and u.text][: args.n]
    conditions = (
        "real",
        "vocoder on real log-mel",
        "decoder, adjacent 1.6 s prompt",
        "decode, own 3 s",
        "decode, other 3 s",
        "pieces of 2 s, other 1.6 s",
        "pieces of 4 s, other 1.6 s",
    )
    hyps: dict[str, list[str]] = {c: [] for c in conditions}
    p = int(1.6 * codec.frame_rate)
    for i, u in enumerate(utts):
        wav = load_audio(u.path, SR)[0]
        wav = wav[: wav.numel() // codec.hop_length * codec.hop_length][None, None]
        other = load_audio(utts[(i + 1) % len(utts)].path, SR)[0][None, None, : 3 * SR]
        short = other[..., : p * codec.hop_length]
        with torch.inference_mode():
            mel, codes = codec.log_mel(wav), codec.encode(wav)
            pred = codec.mel_decoder(codes[:, 0, p:], codes[:, 0, :p], codec.normalise(mel)[..., : p * codec.pool])
            adjacent = torch.cat([mel[..., : p * codec.pool], codec.denormalise(pred)], dim=-1)
            outs = (
                wav,
                codec.render(mel),
                codec.render(adjacent),
                codec.decode(codes, prompt=wav[..., : 3 * SR]),
                codec.decode(codes, prompt=other),
                in_pieces(codec, codes, short, int(2 * codec.frame_rate)),
                in_pieces(codec, codes, short, int(4 * codec.frame_rate)),
            )
        for c, out in zip(conditions, outs):
            hyps[c].append(asr.transcribe(out[0, 0].numpy(), SR))
    refs = [u.text for u in utts]
    for c in conditions:
        print(f"{c}: WER {corpus_wer(refs, hyps[c]):.3f} (n {len(refs)})")


if __name__ == "__main__":
    main()
