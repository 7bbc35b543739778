"""Training crops for a prompted token-to-mel decoder: tokens and audio of one voice, split into
a prompt (given) and a target (to predict), as CosyVoice trains its flow-matching decoder."""

from __future__ import annotations

import numpy as np
import torch

from speechtok.data.audio import load_audio
from speechtok.data.manifest import Utterance
from speechtok.data.segments import EpochSeeded, balanced_weights, fixed_subset


def _clips(codec, utts: list[Utterance], cache, frames: int) -> list[tuple[Utterance, torch.Tensor, torch.Tensor]]:
    """(utterance, codes [F], int16 audio [F*hop]) of the cached utterances of at least `frames` codes."""
    out = []
    for u in utts:
        if u.duration * codec.frame_rate < frames or u.ID not in cache.index:
            continue
        codes = codec.quantize(torch.from_numpy(cache[u.ID].astype(np.float32)))
        wav = load_audio(u.path, codec.sample_rate)[0]
        n = min(len(codes), wav.shape[-1] // codec.hop_length)
        if n >= frames:
            out.append((u, codes[:n], (wav[: n * codec.hop_length].clamp(-1, 1) * 32767).to(torch.int16)))
    return out


class PromptedCrops(EpochSeeded):
    """`steps_per_epoch` batches, each a dict: `codes` [B, N] (N = `crop_seconds` of codes), `wav`
    [B, 1, N*hop] of the same crop, and `prompt_codes` P, the number of leading frames given as the
    prompt (one random P per batch, from `prompt_seconds`). Crops are drawn by source share and
    speaker; each gets a random gain of -6 to +3 dB.

    With `speaker_crops` a crop joins clips of one speaker: from a random frame of the first, then
    the speaker's other clips in random order. Short clips then count (most crowd clips are about a
    second), and the prompt is often another recording of the target's voice, as in `decode(codes,
    prompt=...)`. Otherwise crops come from single utterances at least `crop_seconds` long."""

    def __init__(self, codec, sources: list[list[Utterance]], caches: list, hparams: dict) -> None:
        super().__init__(hparams["steps_per_epoch"], hparams["seed"])
        rate = codec.frame_rate
        self.crop = int(hparams["crop_seconds"] * rate)
        self.prompt = [int(s * rate) for s in hparams["prompt_seconds"]]
        self.speaker_crops = bool(hparams["speaker_crops"])
        per_source = [
            _clips(codec, utts, cache, 1 if self.speaker_crops else self.crop) for utts, cache in zip(sources, caches)
        ]
        if self.speaker_crops:  # speakers whose clips together fill a crop
            per_source = [_fill_a_crop(clips, self.crop) for clips in per_source]
        self.weights = balanced_weights([[u for u, _, _ in clips] for clips in per_source], hparams["source_shares"])
        self.clips = [(c, w) for clips in per_source for _, c, w in clips]
        self.speaker_of = [(n, _voice(u)) for n, clips in enumerate(per_source) for u, _, _ in clips]
        self.same_speaker: dict[tuple, list[int]] = {}
        for k, who in enumerate(self.speaker_of):
            self.same_speaker.setdefault(who, []).append(k)
        self.batch_size, self.hop = hparams["batch_size"], codec.hop_length

    def _crop(self, k: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes [N] and int16 audio [N*hop] of one crop starting in clip k."""
        if not self.speaker_crops:
            c, w = self.clips[k]
            s = int(rng.integers(0, len(c) - self.crop + 1))
            return c[s : s + self.crop], w[s * self.hop : (s + self.crop) * self.hop]
        order = [k] + [j for j in rng.permutation(self.same_speaker[self.speaker_of[k]]) if j != k]
        lengths = [len(self.clips[j][0]) for j in order]
        s = int(rng.integers(0, min(lengths[0] - 1, sum(lengths) - self.crop) + 1))  # the rest still fills
        codes, wavs, n = [], [], 0
        for j, start in zip(order, [s] + [0] * (len(order) - 1)):
            c, w = self.clips[j]
            codes.append(c[start:])
            wavs.append(w[start * self.hop :])
            n += len(c) - start
            if n >= self.crop:
                break
        return torch.cat(codes)[: self.crop], torch.cat(wavs)[: self.crop * self.hop]

    def __getitem__(self, i: int) -> dict:
        rng = self.rng(i)
        prompt = int(rng.integers(self.prompt[0], self.prompt[1] + 1))
        codes, wavs = [], []
        for k in rng.choice(len(self.clips), size=self.batch_size, p=self.weights):
            c, w = self._crop(int(k), rng)
            codes.append(c)
            wavs.append(w.float() / 32767 * 10 ** (rng.uniform(-6, 3) / 20))
        return {"codes": torch.stack(codes), "wav": torch.stack(wavs)[:, None], "prompt_codes": prompt}


def _voice(u: Utterance) -> str:
    """The speaker of an utterance, or the utterance itself where the manifest names none."""
    return u.speaker or u.ID


def _fill_a_crop(clips: list, frames: int) -> list:
    """The clips of the speakers whose clips hold at least `frames` codes in all."""
    total: dict[str, int] = {}
    for u, c, _ in clips:
        total[_voice(u)] = total.get(_voice(u), 0) + len(c)
    return [clip for clip in clips if total[_voice(clip[0])] >= frames]


def dev_crops(codec, sets: list[tuple[list[Utterance], object]], hparams: dict) -> list[dict]:
    """Fixed dev batches of one crop each: `n_dev_utts` utterances per set (at least `crop_seconds`
    long), their first `crop_seconds`, the first of `prompt_seconds` as the prompt."""
    items = []
    crop, prompt = int(hparams["crop_seconds"] * codec.frame_rate), int(hparams["prompt_seconds"][0] * codec.frame_rate)
    for utts, cache in sets:
        clips = _clips(codec, utts, cache, crop)
        for k in fixed_subset(len(clips), hparams["n_dev_utts"]):
            _, c, w = clips[k]
            wav = w[None, None, : crop * codec.hop_length].float() / 32767
            items.append({"codes": c[None, :crop], "wav": wav, "prompt_codes": prompt})
    return items
