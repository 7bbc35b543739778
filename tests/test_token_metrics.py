"""Token metrics: known answers for usage/perplexity, purity/PNMI, edit distance, phone labels,
and `speechtok eval --token-metrics` end to end on two real utterances with dmel-16k-gl."""

import argparse
import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch

from speechtok.data.audio import save_audio
from speechtok.data.manifest import Utterance, write_manifest
from speechtok.eval import harness as H
from speechtok.eval import token_metrics as T


# --- usage / perplexity ---------------------------------------------------------------------
def test_usage_perplexity_uniform_vs_one_hot():
    uniform = T.usage_perplexity(np.arange(8) % 4, 4)
    assert uniform["used_fraction"].tolist() == [1.0]
    assert uniform["perplexity"][0] == pytest.approx(4.0)
    one_hot = T.usage_perplexity(np.full(8, 2), 4)
    assert one_hot["used_fraction"].tolist() == [0.25]
    assert one_hot["perplexity"][0] == pytest.approx(1.0)
    # per codebook, pooled over utterances [K, F_i]
    both = T.usage_perplexity([np.array([[0, 1], [3, 3]]), np.array([[2, 3, 0], [3, 3, 3]])], 4)
    assert both["used_fraction"].tolist() == [1.0, 0.25]
    assert both["perplexity"][1] == pytest.approx(1.0)


# --- purity / PNMI ----------------------------------------------------------------------------
def test_pnmi_is_one_for_a_bijection_and_zero_for_constant_codes():
    labels = list("aabbbcccca")
    codes = [{"a": 7, "b": 3, "c": 5}[y] for y in labels]
    r = T.purity_pnmi(codes, labels)
    assert r == pytest.approx({"phone_purity": 1.0, "cluster_purity": 1.0, "pnmi": 1.0})
    r = T.purity_pnmi([0] * len(labels), labels)
    assert r["pnmi"] == pytest.approx(0.0)
    assert r["phone_purity"] == pytest.approx(4 / 10)  # the most common phone, 'c'
    assert r["cluster_purity"] == pytest.approx(1.0)  # each phone's frames all in the one code


def test_purity_on_a_hand_made_example():
    # code 0 -> a, code 1 -> a, code 2 -> a and b
    r = T.purity_pnmi([0, 1, 2, 2], ["a", "a", "a", "b"])
    assert r["phone_purity"] == pytest.approx(3 / 4)
    assert r["cluster_purity"] == pytest.approx(2 / 4)
    # I(y; z) by hand: H(y) - H(y|z), H(y|z) = 1/2 * ln 2 (only code 2 is mixed, 50/50)
    h_y = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert r["pnmi"] == pytest.approx((h_y - 0.5 * math.log(2)) / h_y)
    # a 2-D codes array [F, K]: each row one symbol
    r = T.purity_pnmi(np.array([[0, 0], [0, 1], [0, 0], [0, 1]]), ["a", "b", "a", "b"])
    assert r["pnmi"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in length"):
        T.purity_pnmi([0, 1], ["a"])


# --- edit distance / invariance ----------------------------------------------------------------
def test_normalized_edit_distance_known_strings():
    assert T.normalized_edit_distance("kitten", "sitting") == pytest.approx(3 / 7)
    assert T.normalized_edit_distance([], []) == 0.0
    assert T.normalized_edit_distance([1, 2, 3], []) == 1.0
    assert T.normalized_edit_distance([1, 2, 3], [1, 2, 3]) == 0.0
    assert T.normalized_edit_distance([(1, 2), (3, 4)], [(1, 2), (3, 5)]) == pytest.approx(0.5)
    assert T.dedup([1, 1, 2, 2, 2, 1]) == [1, 2, 1]


def test_invariance_per_codebook_and_tuple():
    a = np.array([[1, 1, 2, 2], [5, 6, 7, 8]])
    b = np.array([[1, 1, 2, 2], [5, 6, 7, 9]])
    r = T.invariance(a, b)
    assert r["per_codebook"] == [0.0, pytest.approx(0.25)]
    assert r["tuple"] == pytest.approx(0.25)
    slow = np.repeat(a[:1], 2, axis=1)  # the same tokens, each held twice as long
    r = T.invariance(a[:1], slow)
    assert r["per_codebook"][0] == pytest.approx(0.5)
    assert r["per_codebook_dedup"][0] == 0.0


# --- phone labels -----------------------------------------------------------------------------
def test_phones_from_durations_merges_stress_modifiers_and_gaps():
    symbols = " hˈiː , wˈɛnt "
    durations = [3, 2, 1, 4, 2, 1, 2, 1, 2, 1, 3, 2, 1, 3]
    assert len(symbols) == len(durations)
    phones = T.phones_from_durations(symbols, durations, frame_rate=100)
    labels = [p[0] for p in phones]
    assert labels == ["sil", "h", "iː", "sil", "w", "ɛ", "n", "t", "sil"]
    assert phones[0] == ("sil", 0.0, pytest.approx(0.03))
    assert phones[2] == ("iː", pytest.approx(0.05), pytest.approx(0.12))  # ˈ (1 frame) + i (4) + ː (2)
    assert phones[3] == ("sil", pytest.approx(0.12), pytest.approx(0.16))  # ' ', ',', ' ' in one gap
    assert phones[-1][2] == pytest.approx(sum(durations) / 100)


def test_frame_labels_at_another_frame_rate():
    phones = [("sil", 0.0, 0.1), ("a", 0.1, 0.3), ("b", 0.3, 0.4)]
    assert T.frame_labels(phones, 5, frame_rate=10) == ["sil", "a", "a", "b", None]
    assert T.frame_labels(phones, 3, frame_rate=5) == ["a", "b", None]  # a centre on a boundary takes the next phone


def test_real_noise_is_seeded_and_at_the_asked_snr(tmp_path):
    rng = np.random.default_rng(0)
    path = save_audio(tmp_path / "n.wav", torch.from_numpy(0.1 * rng.standard_normal((1, 8000))).float(), 16000)
    clean = torch.from_numpy(0.3 * np.sin(np.arange(12000) / 7.0)[None]).float()
    a = T.add_real_noise(clean, [str(path)], 10.0, seed=3)
    assert torch.equal(a, T.add_real_noise(clean, [str(path)], 10.0, seed=3))
    noise = a - clean
    assert 10 * math.log10(float(clean.pow(2).sum() / noise.pow(2).sum())) == pytest.approx(10.0, abs=0.01)


# --- end to end -----------------------------------------------------------------------------
def _e2e(shared_data, tmp_path, n_utts: int, voices: str) -> dict:
    root = shared_data / "speech" / "cathy"
    with open(root / "metadata.tsv", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["split"] == "dev"][:n_utts]
    utts = [
        Utterance(ID=f"u{i}", path=str(root / r["path"]), duration=1.0, text=r["text"], split="dev")
        for i, r in enumerate(rows)
    ]
    manifest = write_manifest(tmp_path / "m.csv", utts)
    noise = save_audio(tmp_path / "noise.wav", 0.1 * torch.randn(1, 16000), 16000)
    noise_list = write_manifest(tmp_path / "noise.csv", [Utterance(ID="n", path=str(noise), duration=1.0)])
    argv = ["--token-metrics", "--codec", "dmel-16k-gl", "--data", str(manifest), "--out", str(tmp_path / "out")]
    argv += ["--noise", str(noise_list), "--voices", voices, "--align-steps", "3", "--cache", str(tmp_path / "c")]
    args = H.add_eval_arguments(argparse.ArgumentParser()).parse_args(argv)
    assert H.run_eval(args) == 0
    assert list((tmp_path / "c").glob("phones-*.json"))  # the alignment is cached
    return json.loads((tmp_path / "out" / "token_metrics.json").read_text())["runs"][0]


def test_eval_token_metrics_end_to_end(shared_data, tmp_path, capsys):
    run = _e2e(shared_data, tmp_path, 1, "")
    assert "| dmel-16k-gl | 80 |" in capsys.readouterr().out
    assert run["n_codebooks"] == 80 and len(run["usage"]) == 80 and run["n_utterances"] == 1
    assert 0 < run["phones"]["per_codebook"][0]["pnmi"] < 1
    assert run["invariance"]["noise"]["n_pairs"] == 1 and run["invariance"]["speed"]["n_pairs"] == 2
    noise = run["invariance"]["noise"]  # noise changes codes; a frame's tuple changes when any of its codes does
    assert 0 < noise["per_codebook"][0] <= noise["tuple"]
    assert run["invariance"]["speaker"]["n_pairs"] == 0


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("flite"), reason="flite not installed (setup.sh installs it)")
def test_eval_token_metrics_speaker_invariance_with_synthetic_voices(shared_data, tmp_path):
    run = _e2e(shared_data, tmp_path, 2, "flite:rms,flite:slt")
    assert run["invariance"]["speaker"]["n_pairs"] == 2
    speaker = run["invariance"]["speaker"]
    assert 0 < speaker["per_codebook"][0] <= speaker["tuple"]


def test_bad_voices_are_an_error(tmp_path, capsys):
    args = H.add_eval_arguments(argparse.ArgumentParser()).parse_args(
        ["--token-metrics", "--codec", "dmel-16k-gl", "--data", str(tmp_path), "--out", str(tmp_path)]
        + ["--voices", "flite:kal"]
    )
    save_audio(tmp_path / "a.wav", 0.1 * torch.randn(1, 1600), 16000)
    assert H.run_eval(args) == 2
    assert "--voices needs two voices" in capsys.readouterr().err
