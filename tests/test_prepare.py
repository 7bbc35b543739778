"""recipes/data/prepare.py end to end with tiny settings, a resumed run with a stage off, an augmented corpus."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from conftest import missing

from speechtok.data.manifest import read_manifest
from speechtok.data.synth import DEFAULT_VOICES, EngineMissing, check_engines

REPO = Path(__file__).resolve().parents[1]


def run_prepare(shared_data, out, *extra):
    cmd = [
        sys.executable,
        str(REPO / "recipes/data/prepare.py"),
        str(REPO / "recipes/data/hparams/prepare.yaml"),
        "--hours",
        "0.002",
        "--synth_block_size",
        "1",
        "--workers",
        "1",
        "--noprogressbar",
        "--shared_data",
        str(shared_data),
        "--output_folder",
        str(out),
        *extra,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout, json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_prepare_tiny_then_resume(shared_data, tmp_path):
    try:
        check_engines(DEFAULT_VOICES)
    except EngineMissing as exc:
        missing(str(exc))
    out = tmp_path / "data"
    stdout, summary = run_prepare(shared_data, out)
    m = summary["manifests"]
    assert m["cathy_dev"]["files"] == 131 and m["librispeech_dev"]["speakers"] == 25
    assert m["real_speech_train"]["files"] == m["cathy_train"]["files"] + m["librispeech_train"]["files"]
    assert m["noise_dev"]["files"] == 1
    assert 0.0018 <= m["synth_train"]["hours"] + m["synth_dev"]["hours"] < 0.01
    voices = summary["synth"]["voices"]
    assert voices["train"] and voices["dev"] and not set(voices["train"]) & set(voices["dev"])
    assert m["noisy_train"]["files"] > 0 and m["noisy_dev"]["files"] > 0
    assert "synth voices" in stdout and "wall time" in stdout

    manifests = out / "manifests"
    synth = read_manifest(manifests / "synth_train.csv")
    assert all(u.text and u.phonemes and sf.info(u.path).samplerate == 16000 for u in synth)
    for u in read_manifest(manifests / "noisy_dev.csv"):
        assert u.split == "dev" and Path(u.extra["clean_path"]).is_file() and -5 <= float(u.extra["snr_db"]) <= 20

    # Second run: real-speech stage off (its manifests are reused), synthetic audio resumed.
    _, again = run_prepare(shared_data, out, "--real_speech_stage", "False")
    assert "cathy_train" not in again["manifests"] and "real_speech" not in again["wall_s"]
    assert again["synth"]["synthesized_now"] == 0 and again["synth"]["voices"] == voices
    assert again["manifests"]["noisy_train"] == m["noisy_train"]

    # Third run: an augmented corpus (other seed, speed perturbation, shaped noise) beside the first.
    before = (manifests / "noisy_train.csv").read_bytes()
    _, aug = run_prepare(
        shared_data,
        out,
        "--real_speech_stage",
        "False",
        "--synth_stage",
        "False",
        "--noisy_name",
        "noisy_aug",
        "--seed",
        "7",
        "--noisy_dev_hours",
        "0",
        "--speed_range",
        "[0.9, 1.1]",
        "--noise_kinds",
        "{shaped: 1, white: 0, pink: 0, brown: 0, babble: 0}",
    )
    assert aug["manifests"]["noisy_aug_train"]["files"] > 0 and aug["manifests"]["noisy_aug_dev"]["files"] == 0
    pairs = read_manifest(manifests / "noisy_aug_train.csv")
    assert {u.extra["noise_kind"] for u in pairs} <= {"shaped", "real"}  # the override merged into the defaults
    assert all(0.9 <= float(u.extra["speed"]) <= 1.1 and "/noisy_aug/train/" in u.path for u in pairs)
    assert len({u.extra["speed"] for u in pairs}) > 1
    assert (manifests / "noisy_train.csv").read_bytes() == before
