"""The enhancer's gain refiner: untrained it is the rows' average, stored beside the LM it is
used by default, and its recipe trains (dev loss falls), resumes and exports."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from speechtok.codecs import load_codec
from speechtok.data.manifest import Utterance, write_manifest
from speechtok.enhance import GAIN_FLOOR, GainRefiner, LMInputError, load_enhancer
from speechtok.lm import cli as lm_cli
from speechtok.lm.checkpoint import CheckpointError, save_lm
from tests.conftest import harmonic_tone, tiny_dmel_lm
from tests.test_lm_inference import _args

SR = 16000
REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def enhancer_folder(tmp_path_factory):
    """A tiny random enhancer for dmel-16k-gl that renders mean levels through the input at two gains."""
    torch.manual_seed(0)
    codec = load_codec("dmel-16k-gl")
    lm = tiny_dmel_lm(16, src_codebooks=80, max_len_ratio=1.0, aligned_source=True, max_len=256)
    folder = tmp_path_factory.mktemp("models") / "enhance-dmel-16k-gl"
    return save_lm(
        folder,
        lm,
        "enhance",
        codec,
        sampling={"temperature": 0.0},
        render={"mode": "mixture", "mean_levels": True, "input_gains_db": [-3.0, 3.0]},
    )


def noisy(seconds=0.6, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(harmonic_tone(seconds) + 0.05 * rng.standard_normal(int(seconds * SR)).astype(np.float32))


def with_refiner(folder: Path, out: Path, refiner: GainRefiner) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        (out / name).write_bytes((folder / name).read_bytes())
    refiner.save(out)
    meta = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**meta, "refiner": {"config": refiner.config()}}))
    return out


def test_untrained_refiner_is_the_average_of_the_rows(enhancer_folder):
    enhancer = load_enhancer(enhancer_folder)
    assert enhancer.refiner is None
    wav = noisy()
    averaged = enhancer.enhance(wav)
    enhancer.refiner = GainRefiner()  # last layer zero: the rows' mean gain, applied once
    refined = enhancer.enhance(wav)
    torch.testing.assert_close(refined, averaged, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(enhancer.enhance(wav, refine=False), averaged)
    log_mel, targets = enhancer.refiner_inputs(wav)
    assert log_mel.shape == (80, 30) and targets.shape == (2, 80, 30)
    # each row's targets are in the unscaled input's terms: the +-3 dB rows straddle one another
    assert not torch.equal(targets[0], targets[1])


def test_refiner_in_the_model_folder_is_used_and_checked(enhancer_folder, tmp_path):
    torch.manual_seed(1)
    refiner = GainRefiner()
    torch.nn.init.normal_(refiner.net[-1].weight, std=0.05)
    folder = with_refiner(enhancer_folder, tmp_path / "enhance-refined", refiner)
    enhancer = load_enhancer(folder)
    assert enhancer.refiner is not None
    wav = noisy()
    refined, averaged = enhancer.enhance(wav), enhancer.enhance(wav, refine=False)
    assert refined.shape == averaged.shape == (1, wav.shape[-1])
    assert not torch.allclose(refined, averaged, atol=1e-4)
    assert 0 < refined.square().sum() <= 1.01 * wav.square().sum()  # still a filter of the input: gains <= 1
    sf.write(tmp_path / "in.wav", wav.numpy(), SR)
    for flags, want in (([], refined), (["--no-refiner"], averaged)):
        out = tmp_path / f"out{len(flags)}.wav"
        assert (
            lm_cli.run_enhance(
                _args(lm_cli.add_enhance_arguments, [tmp_path / "in.wav", out, "--model", folder, *flags])
            )
            == 0
        )
        np.testing.assert_allclose(sf.read(out, dtype="float32")[0], want[0].numpy(), atol=1e-4)
    with pytest.raises(LMInputError, match="no gain refiner"):
        load_enhancer(enhancer_folder).enhance(wav, refine=True)
    (folder / "refiner.safetensors").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match=r"cannot read weights .*refiner\.safetensors: truncated"):
        load_enhancer(folder)
    GainRefiner(hidden=8).save(folder)
    with pytest.raises(CheckpointError, match="do not match"):
        load_enhancer(folder)


@pytest.mark.slow
def test_refiner_recipe_trains_resumes_and_exports(enhancer_folder, tmp_path):
    rows = []
    for i in range(8):
        clean = harmonic_tone(1.0, f0=110 + 15 * i)
        mixed = clean + 0.1 * np.random.default_rng(i).standard_normal(SR).astype(np.float32)
        for kind, wav in (("clean", clean), ("noisy", mixed)):
            sf.write(tmp_path / f"p{i}_{kind}.flac", wav, SR)
        rows.append(
            Utterance(
                f"p{i}",
                str(tmp_path / f"p{i}_noisy.flac"),
                1.0,
                split="train",
                extra={"clean_path": str(tmp_path / f"p{i}_clean.flac"), "snr_db": "5"},
            )
        )
    write_manifest(tmp_path / "pairs.csv", rows)
    out = tmp_path / "run"

    def run(epochs):
        cmd = [
            sys.executable,
            str(REPO / "recipes/lm/enhance/train_refiner.py"),
            str(REPO / "recipes/lm/enhance/hparams/refiner.yaml"),
            "--enhancer",
            str(enhancer_folder),
            "--manifests",
            f"[{tmp_path / 'pairs.csv'}]",
            "--output_folder",
            str(out),
            "--n_dev",
            "2",
            "--steps_per_epoch",
            "15",
            "--batch_size",
            "4",
            "--crop_frames",
            "40",
            "--number_of_epochs",
            str(epochs),
            "--warmup_steps",
            "5",
            "--lr",
            "0.003",
            "--threads",
            "1",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]

    run(2)
    assert len(list((out / "inputs").glob("*.safetensors"))) == 8
    run(3)  # resumes: one more epoch, not three
    log = (out / "train_log.txt").read_text().splitlines()
    assert [int(re.search(r"epoch: (\d+)", line).group(1)) for line in log] == [1, 2, 3]
    dev = [float(re.search(r"valid loss: ([\d.e+-]+)", line).group(1)) for line in log]
    untrained = GainRefiner()  # the rows' average gain, where training starts
    losses = []
    for name in ("p0", "p1"):  # the n_dev held-out pairs
        x = load_file(str(out / "inputs" / f"{name}.safetensors"))
        wanted = (x["clean"] - x["noisy"]).clamp(np.log(GAIN_FLOOR), 0)
        losses.append((untrained(x["noisy"][None], x["targets"][None])[0] - wanted).abs().mean().item())
    assert min(dev) < 0.5 * np.mean(losses)  # the clean gains learned from the noisy log-mel
    export = out / "export" / "enhance-dmel-16k"
    meta = json.loads((export / "config.json").read_text())["refiner"]
    assert meta["config"]["hidden"] == 128 and meta["training"]["train_pairs"] == 6
    assert meta["training"]["dev_loss"] == pytest.approx(min(dev), abs=0.006)  # the log rounds to 3 digits
    enhancer = load_enhancer(export)
    assert enhancer.refiner is not None and enhancer.enhance(rows[0].path).shape == (1, SR)
