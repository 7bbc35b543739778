"""recipes/data/prepare.py end to end with tiny settings, task by task, resumed, and an augmented corpus."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from conftest import missing

from speechtok.data.manifest import read_manifest
from speechtok.data.prepare import load_splits
from speechtok.data.synth import DEFAULT_VOICES, EngineMissing, check_engines

REPO = Path(__file__).resolve().parents[1]


def run_prepare(shared_data, out, task, *extra):
    tiny = {
        "manifests": [],
        "synth": ["--hours", "0.002", "--synth_block_size", "1"],
        "noisy": ["--hours", "0.002", "--simulated_rooms", "{train: 2, dev: 1}"],
        "noisy_unseen": ["--hours", "0.002", "--simulated_rooms", "1"],
    }
    reads_shared = task in ("manifests", "synth")
    where = ["--output_folder", str(out)] + (["--shared_data", str(shared_data)] if reads_shared else [])
    cmd = [
        sys.executable,
        str(REPO / "recipes/data/prepare.py"),
        str(REPO / f"recipes/data/hparams/{task}.yaml"),
        *tiny[task],
        "--workers",
        "1",
        "--noprogressbar",
        *where,
        *extra,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout, json.loads((out / f"summary_{task}.json").read_text())


def test_noisy_pairs_need_their_clean_manifests_first(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no 'synth' manifests yet; prepare them first \(.*synth\.yaml\)"):
        load_splits(tmp_path, "synth")
    with pytest.raises(FileNotFoundError, match=r"hparams/manifests\.yaml"):
        load_splits(tmp_path, "real_speech")


@pytest.mark.slow
def test_prepare_tiny_then_resume(shared_data, tmp_path):
    try:
        check_engines(DEFAULT_VOICES)
    except EngineMissing as exc:
        missing(str(exc))
    out = tmp_path / "data"
    m = run_prepare(shared_data, out, "manifests")[1]["manifests"]
    assert m["cathy_dev"]["files"] == 131 and m["librispeech_dev"]["speakers"] == 25
    assert m["real_speech_train"]["files"] == m["cathy_train"]["files"] + m["librispeech_train"]["files"]
    assert m["noise_dev"]["files"] == 1 and not any(k.startswith(("synth", "noisy")) for k in m)
    stdout, summary = run_prepare(shared_data, out, "synth")
    m = summary["manifests"]
    assert 0.0018 <= m["synth_train"]["hours"] + m["synth_dev"]["hours"] < 0.01 and "cathy_train" not in m
    voices = summary["synth"]["voices"]
    assert voices["train"] and voices["dev"] and not set(voices["train"]) & set(voices["dev"])
    assert "synth voices" in stdout and "wall time" in stdout
    m = run_prepare(shared_data, out, "noisy")[1]["manifests"]
    assert m["noisy_train"]["files"] > 0 and m["noisy_dev"]["files"] > 0 and "synth_train" not in m

    manifests = out / "manifests"
    synth = read_manifest(manifests / "synth_train.csv")
    assert all(u.text and u.phonemes and sf.info(u.path).samplerate == 16000 for u in synth)
    for u in read_manifest(manifests / "noisy_dev.csv"):
        assert u.split == "dev" and Path(u.extra["clean_path"]).is_file() and -5 <= float(u.extra["snr_db"]) <= 20

    # Choosing enhancers: unseen voices in unseen noise, in the dev rooms only.
    unseen_pairs = run_prepare(shared_data, out, "noisy_unseen")[1]["manifests"]["noisy_unseen_dev"]
    pairs = read_manifest(manifests / "noisy_unseen_dev.csv")
    assert unseen_pairs["files"] == len(pairs) > 0
    unseen = {u.ID for n in ("librispeech_dev", "crowd_dev") for u in read_manifest(manifests / f"{n}.csv")}
    ambient_dev = {u.ID for u in read_manifest(manifests / "noise_ambient_dev.csv")}
    dev_rooms = {u.ID for u in read_manifest(manifests / "rir_dev.csv")} | {"sim_dev_0000"}
    for u in pairs:
        assert (
            u.extra["clean_id"] in unseen and u.extra["noise_id"] in ambient_dev and 0 <= float(u.extra["snr_db"]) <= 10
        )
        assert u.extra["reverb"] == "0" or u.extra["rir_id"] in dev_rooms

    # Second runs: synthetic audio resumed, the same pairs again.
    again = run_prepare(shared_data, out, "synth")[1]
    assert again["synth"]["synthesized_now"] == 0 and again["synth"]["voices"] == voices
    assert run_prepare(shared_data, out, "noisy")[1]["manifests"]["noisy_train"] == m["noisy_train"]

    # Third run: an augmented corpus (other seed, speed perturbation, shaped noise) beside the first.
    before = (manifests / "noisy_train.csv").read_bytes()
    _, aug = run_prepare(
        shared_data,
        out,
        "noisy",
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
