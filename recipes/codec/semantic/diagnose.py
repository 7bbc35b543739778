#!/usr/bin/env python3
"""Where a semantic codec's round trip loses the words: vocoder, decoder, or prompt.

    python recipes/codec/semantic/diagnose.py --codec semantic-16k-25 --manifest work_data/manifests/cathy_dev.csv

On the first `--n` utterances longer than 4 s, Whisper tiny.en WER against the manifest's text for:
the real speech; the vocoder on the real log-mel; the decoder in its training condition (the first
1.6 s of the same utterance as the prompt, the rest predicted); `decode` with the utterance's own
first 3 s as the prompt; `decode` with another utterance's first 3 s; and the target decoded in
pieces of 2 s or 4 s, each after the other utterance's first 1.6 s, as the decoder trains (does the
length of what is decoded matter?). `--read_states` adds what Whisper's own decoder reads from the
teacher's encoder states (CTranslate2's `generate` takes encoder output): as they are, mean-pooled
to the codec's frame rate, and replaced by the tokens' centroids: where the teacher's own decoder
stops reading the words, apart from any decoder of ours.
"""

from __future__ import annotations

import argparse

import numpy as np
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


class StateReader:
    """Whisper's decoder (beam 5, no timestamps, the judge's repeat guard) on encoder states [1500, D]
    of the codec's teacher. Whisper reads a whole padded 30 s window, whose silent tail tells it
    where the speech ends, so the speech's frames are put in place of the first frames of the
    padded window's states."""

    def __init__(self, teacher) -> None:
        import ctranslate2
        import tokenizers
        from faster_whisper.tokenizer import Tokenizer

        self.teacher, self.storage = teacher, ctranslate2.StorageView
        hf = tokenizers.Tokenizer.from_file(str(teacher.path / "tokenizer.json"))
        self.tokenizer = Tokenizer(hf, multilingual=False, task="transcribe", language="en")

    def read(self, states: np.ndarray) -> str:
        x = self.storage.from_array(np.ascontiguousarray(states[None], dtype=np.float32))
        prompt = [*self.tokenizer.sot_sequence, self.tokenizer.no_timestamps]
        out = self.teacher.model.generate(x, [prompt], beam_size=5, no_repeat_ngram_size=4)
        return self.tokenizer.decode(out[0].sequences_ids[0]).strip()

    def conditions(self, codec, wav: torch.Tensor) -> dict[str, str]:
        """Transcripts of the padded window's own states, and of it with the speech's frames
        replaced by the codec's unpadded states, mean-pooled to its frame rate, or its tokens' centroids."""
        x = wav.numpy()
        window = np.zeros(self.teacher.window_samples, np.float32)
        window[: len(x)] = x
        padded = self.teacher.states(window)
        pooled = codec.pooled_states(x)
        codes = codec.encode(wav.reshape(1, 1, -1))[0, 0]
        centroids = (codec.centroids[codes] * codec.std + codec.mean).numpy()

        def in_window(frames: np.ndarray) -> np.ndarray:
            head = np.repeat(frames, codec.pool, axis=0)
            return np.concatenate([head, padded[len(head) :]])

        return {
            "Whisper reads its states (padded window)": self.read(padded),
            "Whisper reads the codec's pooled states": self.read(in_window(pooled)),
            "Whisper reads the tokens' centroids": self.read(in_window(centroids)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codec", default="semantic-16k-25")
    parser.add_argument("--manifest", required=True, help="a manifest with true text")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--read_states", action="store_true", help="also what Whisper reads from its states and tokens")
    parser.add_argument("--min_seconds", type=float, default=4.0, help="utterances longer than this")
    args = parser.parse_args()
    codec, asr = load_codec(args.codec), whisper_judge()
    utts = [u for u in read_manifest(args.manifest) if u.duration > args.min_seconds and u.text][: args.n]
    if not utts:
        parser.error(f"{args.manifest}: no utterance with text is longer than {args.min_seconds} s")
    reader = StateReader(codec.teacher) if args.read_states else None
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
        if reader is not None:
            for c, text in reader.conditions(codec, wav[0, 0]).items():
                hyps.setdefault(c, []).append(text)
    refs = [u.text for u in utts]
    for c in hyps:
        print(f"{c}: WER {corpus_wer(refs, hyps[c]):.3f} (n {len(refs)})")


if __name__ == "__main__":
    main()
