"""The speaker encoder for TTS conditioning: its EER, training crops, dev trials, save/load, and
the recipe on a tiny corpus of synthetic voices (loss falls, resumes, exports the best EER)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechtok.data.manifest import Utterance, write_manifest
from speechtok.tts.speaker import SpeakerCrops, SpeakerEncoder, dev_trials, equal_error_rate

REPO = Path(__file__).resolve().parents[1]


def test_equal_error_rate_on_known_scores():
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert equal_error_rate(e, ["a", "a", "b", "b"]) == 0.0  # every same pair above every other pair
    flipped = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # same pairs score -1, others 0
    assert equal_error_rate(flipped, ["a", "a", "b", "b"]) == 1.0
    # scores: a-a 1.0, two impostor pairs 0.8, b-b 0.6, two impostor pairs 0: accepting the top 3
    # pairs rejects one of two same pairs and accepts two of four impostors, the crossing at 0.5
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    assert equal_error_rate(e, ["a", "a", "b", "b"]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same and of different"):
        equal_error_rate(e[:2], ["a", "a"])


def test_crops_draw_qualifying_speakers_reproducibly():
    clips = {
        "a": [torch.zeros(80, 200, dtype=torch.uint8), torch.ones(80, 120, dtype=torch.uint8)],  # two clips
        "b": [torch.full((80, 400), 2, dtype=torch.uint8)],  # one clip, long enough for two crops
        "c": [torch.full((80, 100), 3, dtype=torch.uint8)],  # one short clip: left out
    }
    crops = SpeakerCrops(clips, crop_frames=150, batch_size=16, n_batches=3, seed=0)
    assert crops.speakers == ["a", "b"] and len(crops) == 3
    batch = crops[0]
    assert batch["levels"].shape == (16, 80, 150) and batch["labels"].tolist() != [0] * 16
    for levels, share, label in zip(batch["levels"], batch["lengths"], batch["labels"]):
        n = round(float(share) * 150)
        assert set(levels[:, :n].unique().tolist()) <= ({0, 1} if label == 0 else {2})  # its speaker's clip
        assert (levels[:, n:] == 0).all()  # a 120-frame clip is padded, its length says so
    assert {round(float(x), 2) for x in batch["lengths"]} <= {0.8, 1.0}
    again = SpeakerCrops(clips, 150, 16, 3, seed=0)
    assert torch.equal(again[0]["levels"], batch["levels"])
    crops.set_epoch(1)
    assert not torch.equal(crops[0]["labels"], batch["labels"]) or not torch.equal(crops[0]["levels"], batch["levels"])


def test_dev_trials_pair_a_single_recording_with_itself():
    clips = {"x": [torch.zeros(80, 500)], "y": [torch.zeros(80, 100), torch.zeros(80, 90)]}
    trials, who = dev_trials(clips, max_frames=200)
    assert who == ["x", "x", "y", "y"]
    assert [t.shape[-1] for t in trials] == [200, 200, 100, 90]


def test_encoder_embeds_unit_norm_and_saves(tmp_path):
    torch.manual_seed(0)
    enc = SpeakerEncoder(dim=16, channels=32).eval()
    mel = torch.randn(2, 80, 120)
    with torch.no_grad():
        e = enc(mel)
        assert e.shape == (2, 16) and torch.allclose(e.norm(dim=-1), torch.ones(2))
        assert torch.allclose(enc(mel + 3.0), e, atol=1e-5)  # a constant level (channel gain) is removed
        back = SpeakerEncoder.load(enc.save(tmp_path / "spk"))
        assert torch.allclose(back(mel), e, atol=2e-2)  # fp16 weights
    (tmp_path / "spk/model.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read weights .*spk.*truncated or not safetensors"):
        SpeakerEncoder.load(tmp_path / "spk")


def voices(root: Path) -> Path:
    """Manifests of 6 training voices and 3 + 2 unseen dev voices (under the file names the recipe's
    dev_sets read): harmonic sounds that differ in pitch and tilt."""
    rng = np.random.default_rng(0)
    t = np.arange(int(2.5 * 16000)) / 16000

    def voice(f0, tilt, k):
        wav = sum(np.sin(2 * np.pi * h * f0 * (1 + 0.02 * k) * t) / h**tilt for h in range(1, 12))
        return (0.2 * wav / np.abs(wav).max() + 0.003 * rng.standard_normal(len(t))).astype(np.float32)

    def write(name, specs):
        utts = []
        for s, (f0, tilt) in enumerate(specs):
            for k in range(3):
                path = root / "audio" / f"{name}_{s}_{k}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, voice(f0, tilt, k), 16000)
                utts.append(Utterance(f"{name}_{s}_{k}", str(path), 2.5, speaker=f"{name}{s}"))
        write_manifest(root / f"{name}.csv", utts)

    write("train", [(110, 0.8), (130, 1.6), (180, 1.0), (220, 2.0), (260, 1.2), (300, 0.7)])
    write("librispeech_dev", [(120, 1.0), (200, 1.8), (280, 0.9)])  # the names the recipe's dev_sets read
    write("crowd_dev", [(150, 1.4), (240, 0.8)])
    return root


@pytest.mark.slow
def test_recipe_loss_falls_resumes_and_exports_the_best_eer(tmp_path):
    data, out = voices(tmp_path / "data"), tmp_path / "exp"
    for epochs in (1, 2):
        cmd = [
            sys.executable,
            str(REPO / "recipes/speaker/train.py"),
            str(REPO / "recipes/speaker/hparams/ecapa.yaml"),
            "--output_folder",
            str(out),
            "--token_cache",
            str(tmp_path / "tokens"),
            "--train_manifests",
            f"[{data / 'train.csv'}]",
            "--manifest_folder",
            str(data),
            "--encoder",
            "{n_mels: 80, dim: 16, channels: 32}",
            "--batch_size",
            "12",
            "--steps_per_epoch",
            "20",
            "--number_of_epochs",
            str(epochs),
            "--crop_frames",
            "60",
            "--warmup_steps",
            "1",
            "--lr",
            "0.005",
            "--noprogressbar",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "train_log.txt").read_text().splitlines()
    assert [int(re.search(r"epoch: (\d+)", line).group(1)) for line in log] == [1, 2]
    losses = [float(re.search(r"train loss: ([\d.e+-]+)", line).group(1)) for line in log]
    eers = [float(re.search(r"valid eer: ([\d.e+-]+)", line).group(1)) for line in log]
    assert losses[1] < losses[0]
    exported = json.loads((out / "export/speaker-dmel-16k/training.json").read_text())
    assert exported["eer"] == pytest.approx(min(eers), abs=1e-3) and exported["codec"] == "dmel-16k"
    assert SpeakerEncoder.load(out / "export/speaker-dmel-16k").dim == 16
