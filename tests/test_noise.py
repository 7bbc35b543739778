"""Noisy/clean pair generation: exact SNR, spectral slopes, RT60, determinism, workers, resume."""

import numpy as np
import pytest
import scipy.signal
import torch
from torch.utils.data import DataLoader

from speechtok.data.audio import load_audio, save_audio
from speechtok.data.manifest import Utterance, read_manifest, write_manifest
from speechtok.data.noise import (
    NoisyMixer,
    change_speed,
    colored_noise,
    make_noisy_corpus,
    mix_at_snr,
    read_noise_list,
    shaped_noise,
    synth_rir,
)

SR = 16000


def snr(clean_part: torch.Tensor, noise_part: torch.Tensor) -> float:
    return 10 * np.log10(clean_part.double().pow(2).sum().item() / noise_part.double().pow(2).sum().item())


def fake_speech(seconds: float, f0: float, seed: int) -> torch.Tensor:
    """Harmonic tone with a syllable-rate envelope and pauses: enough structure to mix."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    wav = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 8))
    env = np.clip(np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)), 0, None)
    return torch.from_numpy((0.3 * wav * env).astype(np.float32)).unsqueeze(0)


@pytest.fixture
def pool(tmp_path):
    """Six clean utterances (4 train, 2 dev, 3 speakers), two noise files, their manifests."""
    clean = []
    for i in range(6):
        path = save_audio(tmp_path / "clean" / f"u{i}.flac", fake_speech(0.6 + 0.1 * i, 100 + 30 * i, i), SR)
        clean.append(
            Utterance(
                ID=f"u{i}",
                path=str(path),
                duration=0.6 + 0.1 * i,
                speaker=f"s{i % 3}",
                text=f"text {i}",
                split="dev" if i >= 4 else "train",
            )
        )
    noise = []
    for name, split in (("hum", "train"), ("hiss", "dev")):
        gen = np.random.default_rng(len(name))
        wav = torch.from_numpy((0.1 * gen.standard_normal(int(0.4 * SR))).astype(np.float32)).unsqueeze(0)
        path = save_audio(tmp_path / "noise" / f"{name}.flac", wav, SR)
        noise.append(Utterance(ID=name, path=str(path), duration=0.4, split=split))
    return {
        "clean": clean,
        "noise": noise,
        "clean_csv": write_manifest(tmp_path / "clean.csv", clean),
        "noise_csv": write_manifest(tmp_path / "noise.csv", noise),
    }


@pytest.mark.parametrize("target", [-5.0, 0.0, 10.0, 20.0])
def test_mix_at_snr_is_exact(target):
    clean = fake_speech(1.0, 120, 0)
    noise = colored_noise(clean.shape[-1], 1.0, np.random.default_rng(1)) * 0.05
    noisy, scaled = mix_at_snr(clean, noise, target)
    assert abs(snr(noisy - scaled, scaled) - target) < 0.1
    assert noisy.abs().max() <= 0.99 + 1e-6


def test_mix_at_snr_rescales_instead_of_clipping():
    clean = fake_speech(1.0, 120, 0)
    clean = clean / clean.abs().max() * 0.95
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal(clean.shape[-1]).astype(np.float32))[None]
    noisy, scaled = mix_at_snr(clean, noise, -5.0)
    assert noisy.abs().max() == pytest.approx(0.99, abs=1e-5)
    assert abs(snr(noisy - scaled, scaled) + 5.0) < 0.1
    with pytest.raises(ValueError, match="silent"):
        mix_at_snr(clean, torch.zeros_like(clean), 0.0)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
def test_colored_noise_slope(alpha):
    x = colored_noise(2**17, alpha, np.random.default_rng(3))
    assert x.pow(2).mean().item() == pytest.approx(1.0, rel=1e-4)
    f, p = scipy.signal.welch(x[0].numpy(), fs=SR, nperseg=4096)
    band = (f >= 30) & (f <= 4000)
    slope = np.polyfit(np.log10(f[band]), np.log10(p[band]), 1)[0]
    assert abs(slope + alpha) < 0.15, slope


@pytest.mark.parametrize("rt60", [0.25, 0.5, 0.8])
def test_rir_rt60_by_schroeder_integration(rt60):
    h = synth_rir(rt60, SR, np.random.default_rng(7), drr_db=0.0)[0].double().numpy()
    assert h[0] == 1.0  # direct path kept at lag 0
    edc = 10 * np.log10(np.cumsum(h[::-1] ** 2)[::-1] / np.sum(h**2))
    sel = (edc <= -5) & (edc >= -25)
    slope = np.polyfit(np.arange(len(h))[sel] / SR, edc[sel], 1)[0]  # dB per second
    assert -60.0 / slope == pytest.approx(rt60, rel=0.1)


def test_mixer_items_exact_snr_and_deterministic(pool):
    kw = dict(noise=pool["noise"], snr_range=(-5, 20), reverb_prob=0.0)
    mixer = NoisyMixer(pool["clean"], seed=0, **kw)
    kinds = set()
    for i in range(len(mixer)):
        item = mixer[i]
        assert item["noisy"].dtype == torch.float32 and item["noisy"].shape == item["clean"].shape
        assert item["noisy"].shape[0] == 1
        assert abs(snr(item["clean"], item["noisy"] - item["clean"]) - item["snr_db"]) < 0.1
        if item["noise_kind"] == "real":  # split-matched noise: dev pairs get held-out noise
            assert item["noise_id"] == ("hiss" if item["split"] == "dev" else "hum")
        kinds.add(item["noise_kind"])
        again = mixer[i]
        assert torch.equal(item["noisy"], again["noisy"]) and item["snr_db"] == again["snr_db"]
    other = NoisyMixer(pool["clean"], seed=1, **kw)
    assert not any(torch.equal(mixer[i]["noisy"], other[i]["noisy"]) for i in range(len(mixer)))


def test_mixer_each_kind_and_reverb(pool):
    for kind in ("white", "pink", "brown", "babble", "real", "shaped"):
        mixer = NoisyMixer(pool["clean"], pool["noise"], noise_kinds={kind: 1.0}, reverb_prob=1.0, snr_range=(15, 20))
        item = mixer[0]
        assert item["noise_kind"] == kind and item["reverb"] and 0.2 <= item["rt60"] <= 0.8
        if kind == "babble":
            talkers = item["noise_id"].split("+")
            assert 3 <= len(talkers) <= 4 and item["clean_id"] not in talkers
        assert torch.isfinite(item["noisy"]).all() and item["noisy"].abs().max() <= 0.99 + 1e-6
        # target is dry, so the residual holds the reverberant tail as well as the noise
        assert snr(item["clean"], item["noisy"] - item["clean"]) < item["snr_db"] - 1.0
    dry = NoisyMixer(pool["clean"], noise_kinds={"white": 1.0}, reverb_prob=0.0)[0]
    wet = NoisyMixer(pool["clean"], noise_kinds={"white": 1.0}, reverb_prob=1.0)[0]
    assert torch.allclose(dry["clean"] / dry["clean"].abs().max(), wet["clean"] / wet["clean"].abs().max(), atol=1e-5)
    with pytest.raises(ValueError, match="no noise files"):
        NoisyMixer(pool["clean"], noise_kinds={"real": 1.0})


def test_change_speed_scales_tempo_and_pitch():
    t = np.arange(SR) / SR
    tone = torch.from_numpy(np.sin(2 * np.pi * 440.0 * t).astype(np.float32)).unsqueeze(0)
    fast = change_speed(tone, 1.1, SR)[0].numpy()
    assert fast.size == pytest.approx(SR / 1.1, abs=2)
    spec = np.abs(np.fft.rfft(fast * np.hanning(fast.size)))
    assert np.fft.rfftfreq(fast.size, 1 / SR)[spec.argmax()] == pytest.approx(484.0, abs=2.0)
    assert change_speed(tone, 1.0, SR) is tone


def test_shaped_noise_varies_its_slope_and_level():
    slopes, swings = [], []
    for seed in range(6):
        x = shaped_noise(4 * SR, SR, np.random.default_rng(seed))
        assert x.shape == (1, 4 * SR) and float(x.pow(2).mean()) == pytest.approx(1.0, rel=1e-4)
        f, p = scipy.signal.welch(x[0].numpy(), SR, nperseg=2048)
        sel = (f > 100) & (f < 4000)
        slopes.append(np.polyfit(np.log10(f[sel]), 10 * np.log10(p[sel]), 1)[0])
        frames = x[0, : 4 * SR].reshape(40, -1).pow(2).mean(-1)
        swings.append(float(frames.max() / frames.min()))
    assert np.ptp(slopes) > 5.0, slopes  # dB per decade: not one fixed colour
    assert max(swings) > 4.0, swings  # amplitude modulation: not stationary


def test_mixer_speed_perturbation(pool):
    kw = dict(noise=pool["noise"], noise_kinds={"real": 1.0}, snr_range=(5, 5))
    plain = NoisyMixer(pool["clean"], **kw)
    fast = NoisyMixer(pool["clean"], speed_range=(0.9, 1.1), noise_speed_range=(0.7, 1.4), **kw)
    for i in range(len(plain)):
        a, b = plain[i], fast[i]
        assert a["speed"] == 1.0 and a["noise_speed"] == 1.0
        assert 0.9 <= b["speed"] <= 1.1 and 0.7 <= b["noise_speed"] <= 1.4
        assert b["clean"].shape[-1] == pytest.approx(a["clean"].shape[-1] / b["speed"], abs=0.006 * SR)
        assert abs(snr(b["clean"], b["noisy"] - b["clean"]) - 5.0) < 0.1
        assert torch.equal(b["noisy"], fast[i]["noisy"])  # still a pure function of (seed, index)
    white = NoisyMixer(pool["clean"], noise_kinds={"white": 1.0}, noise_speed_range=(0.7, 1.4))
    assert white[0]["noise_speed"] == 1.0  # only recordings are resampled
    with pytest.raises(ValueError, match="speed range"):
        NoisyMixer(pool["clean"], speed_range=(1.2, 0.8))


def test_mixer_items_do_not_depend_on_the_thread_count(tmp_path):
    """Long reductions (the RMS of a babble talker) split across threads; items must not.

    Talker l15's RMS comes out 1 ulp apart at one and two threads (found by search).
    """
    clean = [
        Utterance(
            ID=f"l{i}",
            path=str(save_audio(tmp_path / f"l{i}.flac", fake_speech(3.0 + 0.4 * i, 90 + 20 * i, i), SR)),
            duration=3.0 + 0.4 * i,
            speaker=f"s{i}",
            split="train",
        )
        for i in range(12, 18)
    ]
    mixer = NoisyMixer(clean, noise_kinds={"babble": 1.0}, reverb_prob=0.5, speed_range=(0.9, 1.1), num_items=6)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [mixer[i]["noisy"] for i in range(6)]
        torch.set_num_threads(2)
        two = [mixer[i]["noisy"] for i in range(6)]
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def test_mixer_in_dataloader_with_workers(pool):
    mixer = NoisyMixer(pool["clean"], pool["noise"], reverb_prob=0.5, segment_seconds=0.5, seed=3, num_items=8)
    plain = [mixer[i] for i in range(len(mixer))]
    loader = DataLoader(mixer, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert len(batches) == 4
    for b, batch in enumerate(batches):
        assert batch["noisy"].shape == (2, 1, SR // 2)
        for k in range(2):
            ref = plain[2 * b + k]
            assert torch.equal(batch["noisy"][k], ref["noisy"]) and torch.equal(batch["clean"][k], ref["clean"])
            assert batch["id"][k] == ref["id"] and batch["noise_kind"][k] == ref["noise_kind"]


def test_make_noisy_corpus_deterministic_and_resumable(pool, tmp_path):
    hours = 6.0 / 3600  # 6 s of clean audio: the 5.1-s pool cycles once
    out_a = make_noisy_corpus(pool["clean_csv"], pool["noise_csv"], tmp_path / "a", hours, seed=5, workers=2)
    utts = read_manifest(out_a)
    assert sum(u.duration for u in utts) >= 6.0 - 1e-3 and len(utts) > len(pool["clean"])
    for u in utts:
        noisy, clean = load_audio(u.path), load_audio(u.extra["clean_path"])
        assert noisy.shape == clean.shape and u.duration == pytest.approx(noisy.shape[-1] / SR, abs=1e-3)
        assert u.extra["noise_kind"] in {"white", "pink", "brown", "babble", "real"} and u.extra["speed"] == "1.000"
        assert u.text.startswith("text ") and u.speaker.startswith("s")
        if u.extra["reverb"] == "0":  # 16-bit files: the stored pair still has the listed SNR
            assert abs(snr(clean, noisy - clean) - float(u.extra["snr_db"])) < 0.1
    files = sorted((tmp_path / "a").glob("*/*.flac"))
    assert len(files) == 2 * len(utts)

    out_b = make_noisy_corpus(pool["clean_csv"], pool["noise_csv"], tmp_path / "b", hours, seed=5, workers=0)
    assert out_a.read_bytes().replace(b"/a/", b"/b/") == out_b.read_bytes()
    for f in files:
        assert f.read_bytes() == (tmp_path / "b" / f.parent.name / f.name).read_bytes()
    out_c = make_noisy_corpus(pool["clean_csv"], pool["noise_csv"], tmp_path / "c", hours, seed=6, workers=0)
    assert [u.extra["snr_db"] for u in read_manifest(out_c)] != [u.extra["snr_db"] for u in utts]

    # resume: delete one pair, re-run; only that pair is rewritten
    victim = utts[0]
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    (tmp_path / "a" / "noisy" / f"{victim.ID}.flac").unlink()
    make_noisy_corpus(pool["clean_csv"], pool["noise_csv"], tmp_path / "a", hours, seed=5, workers=0)
    for f in files:
        if f.stem == victim.ID:
            assert f.exists() and f.read_bytes() == (tmp_path / "b" / f.parent.name / f.name).read_bytes()
        else:
            assert f.stat().st_mtime_ns == mtimes[f], f

    # more hours extend the corpus: the pairs written so far keep their IDs and bytes
    longer = read_manifest(
        make_noisy_corpus(pool["clean_csv"], pool["noise_csv"], tmp_path / "a", 2 * hours, seed=5, workers=0)
    )
    same = {u.ID: u.extra for u in longer}
    assert len(longer) > len(utts) and all(same.get(u.ID) == u.extra for u in utts)
    assert all(f.stat().st_mtime_ns == mtimes[f] for f in files if f.stem != victim.ID)


def test_real_shared_noise_split_matched(shared_data, pool):
    noise = read_noise_list(shared_data / "noise" / "metadata.tsv")
    assert {n.ID for n in noise if n.split == "dev"} == {"running_tap"}
    mixer = NoisyMixer(pool["clean"], noise, noise_kinds={"real": 1.0}, seed=0)
    for i in range(len(mixer)):
        item = mixer[i]
        assert (item["noise_id"] == "running_tap") == (item["split"] == "dev")
        assert abs(snr(item["clean"], item["noisy"] - item["clean"]) - item["snr_db"]) < 0.1
