"""Training crops of the prompted semantic decoder (speechtok.data.token_crops)."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch

from speechtok.data.manifest import Utterance
from speechtok.data.token_crops import PromptedCrops

RATE, HOP = 25, 640


class FakeCodec:
    """Codes are the cached 'states' themselves: 1000 * clip number + frame."""

    frame_rate, hop_length, sample_rate = RATE, HOP, 16000

    @staticmethod
    def quantize(states: torch.Tensor) -> torch.Tensor:
        return states[:, 0].long()


class Cache(dict):
    @property
    def index(self):
        return self


def corpus(tmp_path, clips: dict[str, list[int]]):
    """Utterances of the given speakers and lengths in frames, their audio a constant per clip."""
    utts, cache, number = [], Cache(), 0
    for speaker, lengths in clips.items():
        for n in lengths:
            number += 1
            path = tmp_path / f"{speaker}_{number}.wav"
            sf.write(path, np.full(n * HOP, number / 100, np.float32), 16000, subtype="FLOAT")
            u = Utterance(ID=f"{speaker}_{number}", path=str(path), duration=n / RATE, speaker=speaker)
            cache[u.ID] = (1000 * number + np.arange(n, dtype=np.float32))[:, None]
            utts.append(u)
    return utts, cache


def hparams(speaker_crops: bool) -> dict:
    return {"steps_per_epoch": 4, "seed": 0, "crop_seconds": 2.0, "prompt_seconds": [0.4, 0.8],
            "speaker_crops": speaker_crops, "source_shares": [1.0], "batch_size": 16}  # fmt: skip


def crops(tmp_path, speaker_crops: bool):
    utts, cache = corpus(tmp_path, {"a": [20, 15, 30], "b": [10, 12, 8, 25], "c": [60], "short": [10, 20]})
    data = PromptedCrops(FakeCodec(), [utts], [cache], hparams(speaker_crops))
    batches = [data[i] for i in range(len(data))]
    return [(row, w) for batch in batches for row, w in zip(batch["codes"], batch["wav"][:, 0])]


def clip_of(code: int) -> int:
    return code // 1000


def test_speaker_crops_join_one_speakers_clips_without_repeating_a_frame(tmp_path):
    speaker = {1: "a", 2: "a", 3: "a", 4: "b", 5: "b", 6: "b", 7: "b", 8: "c", 9: "short", 10: "short"}
    joined, used = 0, set()
    for codes, wav in crops(tmp_path, speaker_crops=True):
        assert codes.shape == (50,) and wav.shape == (50 * HOP,)
        clips = [clip_of(int(c)) for c in codes]
        used.update(clips)
        assert len({speaker[k] for k in clips}) == 1  # one voice per crop
        assert len(set(codes.tolist())) == 50  # no frame twice: the prompt never holds the target
        levels = wav.reshape(50, HOP).mean(-1) / wav.reshape(50, HOP).mean(-1)[0]
        assert torch.allclose(levels, torch.tensor(clips, dtype=torch.float) / clips[0], atol=0.02)  # audio = codes
        joined += len(set(clips)) > 1
    assert joined > 16 and {4, 5, 6, 7} <= used  # clips shorter than a crop count
    assert not used & {9, 10}  # a speaker whose clips cannot fill a crop is left out


def test_without_speaker_crops_a_crop_is_one_long_utterance(tmp_path):
    for codes, _ in crops(tmp_path, speaker_crops=False):
        assert clip_of(int(codes[0])) == 8 and (codes.diff() == 1).all()  # the only clip of 2 s or more
