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


def run(out, manifest, epochs, lr="0.003", steps=30, extra=()):
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
        str(steps),
        "--number_of_epochs",
        str(epochs),
        "--warmup_steps",
        "1",
        "--lr",
        lr,
        "--segment_seconds",
        "0.5",
        "--codec",
        "{n_codebooks: 2, codebook_size: 16, codebook_dim: 8, dim: 32, intermediate_dim: 64, "
        "encoder_layers: 1, decoder_layers: 1, quantizer_dropout: True}",
        *extra,
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
    hours = [float(re.search(r"cpu_hours: ([\d.e+-]+)", line).group(1)) for line in log]
    assert 0 < hours[0] < hours[1] and exported["cpu_hours"] > 0  # CPU time counts on across the resume
    # init_from: a fresh run starts from the export, so one step at lr 0 leaves the exported codec's
    # dev loss (its EMA codebooks still move a little), far below the cold start's first epoch
    warm = run(
        tmp_path / "warm",
        tmp_path / "manifests",
        epochs=1,
        lr="0.0",
        steps=1,
        extra=("--init_from", str(out / "export/rvq-16k")),
    )
    assert warm.returncode == 0, warm.stderr[-3000:]
    assert "warm start from" in warm.stdout
    warm_loss = float(re.search(r"valid mel_l1: ([\d.e+-]+)", (tmp_path / "warm/train_log.txt").read_text()).group(1))
    assert warm_loss == pytest.approx(exported["mel_l1"], rel=0.1) and warm_loss < losses[0]
