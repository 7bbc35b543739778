"""The GPU machine's kit, run here on the CPU: pack.py packs each audio file once with manifests
relative to the pack, and recipes/device/enhance.sh decodes that pack, mixes pairs from it, grows
and trains the bundled enhancer under a time budget and leaves a loadable export and its logs in
$OUT."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechtok.data.manifest import Utterance, read_manifest, write_manifest
from speechtok.enhance import load_enhancer

REPO = Path(__file__).resolve().parents[1]


def tone_corpus(root: Path) -> Path:
    """Six train and four dev tones, one speaker each: real_speech all but the last, cathy its
    first (listed twice, as prepare.py does), synth the last; a noise file per split. FLAC."""
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000

    def wav(name, x):
        path = root / "audio" / f"{name}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x.astype(np.float32), 16000)
        return str(path)

    speech = {
        split: [
            Utterance(
                f"{split}{i}",
                wav(f"{split}{i}", 0.3 * np.sin(2 * np.pi * (120 + 40 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t))),
                2.0,
                f"s{i}",
                split=split,
            )
            for i in range(6 if split == "train" else 4)
        ]
        for split in ("train", "dev")
    }
    noise = {
        split: [Utterance(f"n{split}", wav(f"n{split}", 0.1 * rng.standard_normal(32000)), 2.0, split=split)]
        for split in ("train", "dev")
    }
    manifests = root / "manifests"
    for split in ("train", "dev"):
        write_manifest(manifests / f"cathy_{split}.csv", speech[split][:1])
        write_manifest(manifests / f"real_speech_{split}.csv", speech[split][:-1])
        write_manifest(manifests / f"synth_{split}.csv", speech[split][-1:])
        write_manifest(manifests / f"noise_{split}.csv", noise[split])
    return manifests


@pytest.mark.slow
def test_pack_then_device_script_train_an_enhancer_from_it(tmp_path):
    manifests, pack = tone_corpus(tmp_path / "corpus"), tmp_path / "pack"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "recipes/data/pack.py"),
            "--manifests",
            str(manifests),
            "--names",
            "cathy",
            "real_speech",
            "synth",
            "noise",
            "--out",
            str(pack),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        len(list((pack / "audio").rglob("*.ogg"))) == 10 + 2
    )  # speech and noise; cathy's rows are real_speech's: packed once
    (cathy,) = read_manifest(pack / "manifests/cathy_train.csv")
    assert cathy.path == read_manifest(pack / "manifests/real_speech_train.csv")[0].path
    assert "../audio/" in (pack / "manifests/cathy_train.csv").read_text()  # relative: the pack can travel
    assert sf.info(cathy.path).format == "OGG" and sf.info(cathy.path).samplerate == 16000
    packed = list(pack.rglob("*"))

    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "PACK": str(pack),
        "WORK": str(tmp_path / "work"),
        "PYTHON": sys.executable,
        "WHEELS": str(tmp_path / "no-wheels"),
        "DEVICE": "cpu",
        "HOURS": "0.005",
        "DEV_HOURS": "0.003",
        "LAYERS": "5",
        "BATCH": "2",
        "TRAIN_MINUTES": "0.1",
        "ROOMS": "{train: 3, dev: 2}",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        ["bash", "recipes/device/enhance.sh", "--precision", "fp32", "--n_export_samples", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    data = tmp_path / "work" / "data"  # the pack decoded to WAV, and the pairs mixed from it
    assert all(
        read_manifest(data / f"manifests/{name}.csv")
        for name in ("noisy_train", "noisy_dev", "noisy_aug_train", "noisy_aug2_train")
    )
    (clean,) = read_manifest(data / "manifests/cathy_train.csv")
    assert sf.info(clean.path).format == "WAV" and clean.path.startswith(str(data))
    assert sorted(p.name for p in pack.iterdir()) == ["audio", "manifests"]  # the pack is left as it came
    assert len(list(pack.rglob("*"))) == len(packed)
    timings = (out / "timings.txt").read_text()
    assert "pairs mixed" in timings and "trained and exported" in timings
    train = (out / "train.txt").read_text()
    assert "grown from 4 to 5 blocks" in train and "Train iteration limit exceeded" in train  # the budget ended it
    assert "epoch: 1" in (out / "train_log.txt").read_text()
    enhancer = load_enhancer(out / "enhance-dmel-16k")
    assert enhancer.lm.cfg.transformer.n_layers == 5
    wav = torch.from_numpy(sf.read(cathy.path, dtype="float32")[0][:8000])
    assert enhancer.enhance(wav).shape == (1, 8000)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_offload_keeps_unread_models_from_travelling_and_restores_them(tmp_path):
    repo = tmp_path / "repo"
    (repo / "recipes/device").mkdir(parents=True)
    (repo / "recipes/device/offload.sh").write_text((REPO / "recipes/device/offload.sh").read_text())
    for name in ("dmel-16k", "enhance-dmel-16k", "rvq-16k", "tts-dmel-16k"):
        (repo / f"speechtok/pretrained/{name}").mkdir(parents=True)
        (repo / f"speechtok/pretrained/{name}/model.safetensors").write_bytes(name.encode())
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "models")
    (repo / "speechtok/pretrained/mine").mkdir()  # an untracked export of the user's: offloaded too
    (repo / "speechtok/pretrained/mine/config.json").write_text("{}")
    offload = ["bash", "recipes/device/offload.sh"]

    proc = subprocess.run(offload, cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 1 and ".offload/ must be git-ignored" in proc.stderr  # else it would travel
    (repo / ".gitignore").write_text("/.offload/\n")
    subprocess.run(offload, cwd=repo, check=True, capture_output=True)
    travels = git(repo, "ls-files", "--cached", "--others", "--exclude-standard").split()
    assert sorted(travels) == [
        ".gitignore",
        "recipes/device/offload.sh",
        "speechtok/pretrained/dmel-16k/model.safetensors",
        "speechtok/pretrained/enhance-dmel-16k/model.safetensors",
    ]
    assert (repo / ".offload/rvq-16k/model.safetensors").read_bytes() == b"rvq-16k"

    subprocess.run([*offload, "--restore"], cwd=repo, check=True, capture_output=True)
    assert git(repo, "status", "--porcelain").split() == ["??", ".gitignore", "??", "speechtok/pretrained/mine/"]
    assert (repo / "speechtok/pretrained/tts-dmel-16k/model.safetensors").read_bytes() == b"tts-dmel-16k"
    assert not (repo / ".offload").exists()
