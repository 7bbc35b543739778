"""A voice embedding for TTS speaker conditioning, trained here (`recipes/speaker/`).

The bundled TTS hears its voice prompt only in context, and on unseen voices its output is no
closer to the prompt's voice than to anyone else's (recipes/lm/README.md). A speaker encoder
trained on many voices gives the LM the voice as one vector instead, as multi-speaker TTS
systems condition on d-vectors or x-vectors. It is SpeechBrain's ECAPA-TDNN over the dMel
codec's dequantised levels, so it embeds a prompt's tokens exactly as it embeds its audio, and
trains with the additive angular margin (AAM-softmax) loss over the training speakers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from speechtok.codecs.base import load_weights, read_json_config, read_weights
from speechtok.data.segments import EpochSeeded
from speechtok.errors import cannot

WEIGHTS = "model.safetensors"
VOICE_FRAMES = 300  # a voice is embedded from up to 6 s of dMel frames (50 Hz), in training and in use


class SpeakerEncoder(nn.Module):
    """log-mel [B, n_mels, F] (with `lengths` [B] as shares of F) -> unit-norm embedding [B, dim]."""

    def __init__(self, n_mels: int = 80, dim: int = 128, channels: int = 256) -> None:
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN  # SpeechBrain loads slowly: only when built

        super().__init__()
        self.n_mels, self.dim, self.channels = n_mels, dim, channels
        self.ecapa = ECAPA_TDNN(
            n_mels,
            lin_neurons=dim,
            channels=[channels] * 4 + [3 * channels],
            attention_channels=64,
            se_channels=64,
        )

    def config(self) -> dict:
        return {"n_mels": self.n_mels, "dim": self.dim, "channels": self.channels}

    def forward(self, log_mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = log_mel - log_mel.mean(-1, keepdim=True)  # per-utterance mean: the channel, not the voice
        return F.normalize(self.ecapa(x.transpose(1, 2), lengths)[:, 0], dim=-1)

    def save(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(
            json.dumps({"family": "speaker", "config": self.config()}, indent=2) + "\n"
        )
        state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> SpeakerEncoder:
        """A folder written by `save`; anything short of one is a ValueError naming it."""
        directory = Path(directory)
        config = read_json_config(directory, ("family", "config"), "speaker encoder", ValueError)["config"]
        try:
            model = cls(**config)
        except TypeError as exc:
            raise ValueError(cannot("load speaker encoder from", directory, f"config.json: {exc}")) from exc
        load_weights(model, read_weights(directory / WEIGHTS, ValueError), directory / WEIGHTS, ValueError)
        return model.eval()


class SpeakerCrops(EpochSeeded):
    """Training batches for the speaker encoder: `n_batches` batches of `batch_size` crops of
    `crop_frames` codes, each of a speaker drawn uniformly, one of its clips, a random crop (a
    shorter clip zero-padded, with its share of the crop as length). Speakers qualify with two
    clips, or one long enough for two crops; `speakers` lists them (class = index)."""

    def __init__(
        self, clips: dict[str, list[torch.Tensor]], crop_frames: int, batch_size: int, n_batches: int, seed: int = 0
    ) -> None:
        super().__init__(n_batches, seed)
        self.speakers = sorted(
            s for s, cs in clips.items() if len(cs) >= 2 or max(c.shape[-1] for c in cs) >= 2 * crop_frames
        )
        self.clips = [clips[s] for s in self.speakers]
        self.crop, self.batch_size = crop_frames, batch_size

    def __getitem__(self, i: int) -> dict:
        rng = self.rng(i)
        levels, lengths, labels = [], [], []
        for _ in range(self.batch_size):
            k = int(rng.integers(len(self.speakers)))
            clip = self.clips[k][int(rng.integers(len(self.clips[k])))]
            start = int(rng.integers(max(clip.shape[-1] - self.crop, 0) + 1))
            crop = clip[:, start : start + self.crop]
            lengths.append(crop.shape[-1] / self.crop)
            levels.append(F.pad(crop, (0, self.crop - crop.shape[-1])))
            labels.append(k)
        return {"levels": torch.stack(levels), "lengths": torch.tensor(lengths), "labels": torch.tensor(labels)}


def dev_trials(clips: dict[str, list[torch.Tensor]], max_frames: int) -> tuple[list[torch.Tensor], list[str]]:
    """(clips, their speakers) for an EER: each clip up to `max_frames`; a speaker with one clip
    gives its two halves instead (one recording a speaker, as in LibriSpeech dev)."""
    out, who = [], []
    for speaker, cs in sorted(clips.items()):
        if len(cs) == 1:
            half = cs[0].shape[-1] // 2
            cs = [cs[0][:, :half], cs[0][:, half:]]
        for c in cs:
            out.append(c[:, :max_frames])
            who.append(speaker)
    return out, who


def equal_error_rate(embeddings: torch.Tensor, speakers: list[str]) -> float:
    """EER of all pairs' cosine scores: the rate at which same-speaker pairs are rejected and
    other-speaker pairs accepted at the threshold where the two are equal."""
    scores = embeddings @ embeddings.T
    i, j = torch.triu_indices(len(speakers), len(speakers), offset=1)
    same = torch.tensor([speakers[a] == speakers[b] for a, b in zip(i.tolist(), j.tolist())])
    s = scores[i, j]
    if same.all() or not same.any():
        raise ValueError("equal_error_rate needs pairs of the same and of different speakers")
    order = s.argsort(descending=True)
    same = same[order].float()
    false_accept = (1 - same).cumsum(0) / (1 - same).sum()  # accepting the top k pairs
    false_reject = 1 - same.cumsum(0) / same.sum()
    k = int((false_accept - false_reject).abs().argmin())
    return float((false_accept[k] + false_reject[k]) / 2)


__all__ = ["VOICE_FRAMES", "SpeakerCrops", "SpeakerEncoder", "dev_trials", "equal_error_rate"]
