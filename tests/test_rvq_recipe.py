"""The RVQ codec recipe runs on the CPU with a tiny config: its loss falls, it resumes and exports."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechtok.codecs import load_codec
from tests.test_dmel_vocoder_recipe import harmonic, train_twice

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes/codec/rvq"


def run(out, manifest, epochs):
    cmd = [
        sys.executable,
        str(RECIPE / "train.py"),
        str(RECIPE / "hparams/rvq-16k.yaml"),
        "--output_folder",
        str(out),
        "--manifest_folder",
        str(manifest),
        "--n_dev_utts",
        "1",
        "--batch_size",
        "4",
        "--steps_per_epoch",
        "30",
        "--number_of_epochs",
        str(epochs),
        "--warmup_steps",
        "1",
        "--lr",
        "0.003",
        "--segment_seconds",
        "0.5",
        "--codec",
        "{n_codebooks: 2, codebook_size: 16, codebook_dim: 8, dim: 32, intermediate_dim: 64, "
        "encoder_layers: 1, decoder_layers: 1, quantizer_dropout: True}",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.mark.slow
def test_tiny_training_loss_falls_resumes_and_exports(tmp_path):
    out, log = train_twice(run, tmp_path)
    losses = [float(re.search(r"valid mel_l1: ([\d.e+-]+)", line).group(1)) for line in log]
    assert losses[1] < losses[0]
    codec = load_codec(out / "export/rvq-16k")
    # the export is the epoch with the best dev PESQ-wb, and says so
    best = max(float(re.search(r"valid pesq_wb: ([\d.e+-]+)", line).group(1)) for line in log)
    exported = json.loads((out / "export/rvq-16k/training.json").read_text())
    assert exported["pesq_wb"] == pytest.approx(best, abs=0.006)  # the log rounds to 3 digits
    assert codec.family == "rvq" and codec.n_codebooks == 2 and codec.renderer is codec.vocoder
    dmel = load_codec("dmel-16k")  # the frozen vocoder is the bundled dMel one, carried along
    for (name, a), b in zip(codec.vocoder.state_dict().items(), dmel.vocoder.state_dict().values()):
        assert torch.equal(a, b), name
    wav = torch.from_numpy(harmonic(1.0, 150))[None, None]
    assert codec.decode(codec.encode(wav)).shape == (1, 1, 50 * 320)
