"""The dMel vocoder recipe runs on the CPU with a tiny config, its loss falls, it resumes and exports."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechtok.codecs import load_codec
from speechtok.data.manifest import Utterance, write_manifest

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes/codec/dmel_vocoder"


def harmonic(seconds, f0, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))).astype(np.float32)


def run(out, manifests, epochs, extra=(), lr="0.003", steps=25):
    cmd = [
        sys.executable,
        str(RECIPE / "train.py"),
        str(RECIPE / "hparams/cpu.yaml"),
        "--output_folder",
        str(out),
        "--manifest_folder",
        str(manifests),
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
        "--adv_start_step",
        "45",
        "--num_workers",
        "0",
        "--vocoder",
        "{dim: 32, intermediate_dim: 64, n_layers: 2}",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)


def tone_manifests(tmp_path) -> Path:
    """Three harmonic tones, 1.5 s each, as every train and dev manifest the codec recipes read
    (recipes/data/prepare.py's names): a corpus for tiny codec runs. Returns the manifest folder."""
    utts = []
    for i, f0 in enumerate((110, 150, 220)):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, harmonic(1.5, f0), 16000)
        utts.append(Utterance(f"u{i}", str(path), 1.5, speaker=f"s{i}"))
    for name in ("cathy", "librispeech", "crowd"):
        for split in ("train", "dev"):
            write_manifest(tmp_path / "manifests" / f"{name}_{split}.csv", utts)
    return tmp_path / "manifests"


def train_twice(run, tmp_path) -> tuple[Path, list[str]]:
    """One epoch, then the same command for two (it must resume): the output folder and its log lines."""
    manifest, out = tone_manifests(tmp_path), tmp_path / "exp"
    for epochs in (1, 2):
        proc = run(out, manifest, epochs=epochs)
        assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "train_log.txt").read_text().splitlines()
    assert [int(re.search(r"epoch: (\d+)", line).group(1)) for line in log] == [1, 2]
    return out, log


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained for one epoch and resumed for a second: (its folder, output folder, log lines)."""
    tmp_path = tmp_path_factory.mktemp("vocoder")
    return (tmp_path, *train_twice(run, tmp_path))


@pytest.mark.slow
def test_tiny_training_loss_falls_resumes_and_exports(trained):
    tmp_path, out, log = trained
    losses = [float(re.search(r"valid mel_loss: ([\d.e+-]+)", line).group(1)) for line in log]
    assert losses[1] < losses[0]
    assert "d_loss" in log[1]  # the adversarial phase started in epoch 2
    codec = load_codec(out / "export/dmel-16k")
    # the export is the epoch with the best dev PESQ-wb, and says so
    best = max(float(re.search(r"valid pesq_wb: ([\d.e+-]+)", line).group(1)) for line in log)
    exported = json.loads((out / "export/dmel-16k/training.json").read_text())
    assert exported["pesq_wb"] == pytest.approx(best, abs=0.006)  # the log rounds to 3 digits
    assert codec.renderer is codec.vocoder
    manifests = tmp_path / "manifests"
    assert exported["dev_sets"] == {
        "librispeech": f"{manifests}/librispeech_dev.csv",
        "crowd": f"{manifests}/crowd_dev.csv",
    }
    assert exported["seen_dev_sets"] == {"cathy": f"{manifests}/cathy_dev.csv"}
    assert "valid cathy_pesq_wb" in log[0]  # the seen voice is reported
    # the STFT and phase losses are on in the shipped config; CPU time counts on across the resume
    assert "train stft:" in log[0] and "train phase:" in log[0]
    hours = [float(re.search(r"cpu_hours: ([\d.e+-]+)", line).group(1)) for line in log]
    assert 0 < hours[0] < hours[1]


@pytest.mark.slow
def test_warm_start_from_an_exported_folder(trained):
    """`init_from` starts a fresh run from a codec folder's vocoder: its first dev loss is the folder's."""
    tmp_path, out, _ = trained
    manifest = tmp_path / "manifests"
    proc = run(
        tmp_path / "warm", manifest, epochs=1, extra=("--init_from", str(out / "export/dmel-16k")), lr="0.0", steps=2
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warm start from" in proc.stdout
    cold = run(tmp_path / "cold", manifest, epochs=1, lr="0.0", steps=2)
    assert cold.returncode == 0, cold.stderr[-3000:]
    mel = lambda folder: float(
        re.search(
            r"valid mel_loss: ([\d.e+-]+)",  # noqa: E731
            (folder / "train_log.txt").read_text(),
        ).group(1)
    )
    assert mel(tmp_path / "warm") < mel(tmp_path / "cold") - 0.1
