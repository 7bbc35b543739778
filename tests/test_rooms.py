"""Room impulse responses: simulated shoebox rooms and measured files in one convention
(direct path at lag 0, peak 1), and reverberant pairs that use them by split."""

from pathlib import Path

import numpy as np
import pytest
import torch

from speechtok.data.audio import save_audio
from speechtok.data.manifest import Utterance, read_manifest
from speechtok.data.noise import NoisyMixer, reverberate
from speechtok.data.rooms import align_rir, load_rir, simulate_rir, write_simulated_rirs

pytest.importorskip("pyroomacoustics")


def decay_time(rir: torch.Tensor, sr: int = 16000) -> float:
    """T20-style estimate: time for the Schroeder energy to fall from -5 to -25 dB, times 3."""
    energy = np.cumsum(rir[0].double().numpy()[::-1] ** 2)[::-1]
    db = 10 * np.log10(energy / energy[0])
    return 3 * (np.argmax(db < -25) - np.argmax(db < -5)) / sr


def test_simulated_room_is_aligned_and_reverberant():
    rir, info = simulate_rir(np.random.default_rng(0), 16000)
    assert rir.shape[0] == 1 and rir[0, 0] == 1 and rir.abs().max() == 1
    assert 0.2 <= info["rt60"] <= 0.9 and info["distance"] > 0
    assert 0.5 * info["rt60"] < decay_time(rir) < 2.5 * info["rt60"]  # the tail decays about as drawn


def test_measured_file_is_aligned(tmp_path):
    rir = torch.zeros(1, 4000)
    rir[0, 300], rir[0, 301:] = -0.8, 0.05 * torch.randn(3699) * torch.exp(-torch.arange(3699) / 800.0)
    save_audio(tmp_path / "room.flac", rir, 16000)
    loaded = load_rir(tmp_path / "room.flac", 16000)
    assert loaded.shape[-1] == 3700 and loaded[0, 0] == 1  # leading silence dropped, sign and peak normalised
    save_audio(tmp_path / "silent.flac", torch.zeros(1, 100), 16000)
    with pytest.raises(ValueError, match=r"silent.flac.*silent or empty"):
        load_rir(tmp_path / "silent.flac", 16000)
    assert torch.equal(align_rir(loaded), loaded)


def test_pool_is_written_once_and_extended(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative folder, as the recipes pass it
    first = read_manifest(write_simulated_rirs("rooms", 2, "dev", seed=1))
    assert all(Path(u.path).is_file() for u in first)
    assert [u.ID for u in first] == ["sim_dev_0000", "sim_dev_0001"] and float(first[0].extra["rt60"]) > 0
    calls = []
    import speechtok.data.rooms as rooms

    real = rooms.simulate_rir
    monkeypatch.setattr(rooms, "simulate_rir", lambda rng, sr: calls.append(1) or real(rng, sr))
    more = read_manifest(write_simulated_rirs("rooms", 3, "dev", seed=1))
    assert len(more) == 3 and len(calls) == 1 and more[:2] == first  # only the new room is simulated


def test_reverberant_pairs_use_the_rirs_of_their_split(tmp_path):
    rng = np.random.default_rng(0)
    clean = []
    for i, split in enumerate(["train", "dev"]):
        path = tmp_path / f"speech{i}.flac"
        save_audio(path, torch.from_numpy(rng.normal(0, 0.1, 16000).astype(np.float32))[None], 16000)
        clean.append(Utterance(f"u{i}", str(path), 1.0, split=split))
    rirs = [u for split in ("train", "dev") for u in read_manifest(write_simulated_rirs(tmp_path / "r", 2, split, 0))]
    mixer = NoisyMixer(clean, snr_range=(60, 60), reverb_prob=1.0, noise_kinds=["white"], rirs=rirs, num_items=8)
    by_id = {u.ID: u for u in rirs}
    for item in (mixer[i] for i in range(8)):
        assert item["reverb"] and item["rir_id"].startswith(f"sim_{item['split']}_")
        wet = reverberate(item["clean"], load_rir(by_id[item["rir_id"]].path, 16000))
        assert (item["noisy"] - wet).abs().max() < 0.01  # that room's response (noise 60 dB down)
        assert (item["noisy"] - item["clean"]).abs().max() > 0.05  # while the target stays dry
    dry = NoisyMixer(clean, snr_range=(5, 5), reverb_prob=0.0, noise_kinds=["white"], rirs=rirs, num_items=2)
    assert all(dry[i]["rir_id"] == "" for i in range(2))
