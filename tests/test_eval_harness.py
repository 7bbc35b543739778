"""The evaluation harness end to end on short synthetic files (Griffin-Lim decoding is slow)."""

import argparse
import json
import sys

import numpy as np
import pytest
import torch

from speechtok.codecs import Codec, load_codec
from speechtok.data.audio import save_audio
from speechtok.data.manifest import Utterance, write_manifest
from speechtok.eval import harness as H

SR = 16000


class ToyResidualCodec(Codec):
    """Sample-wise residual scalar quantiser: each extra codebook refines the last one's error,
    so quality must rise with the number of codebooks (any first K decode, like an RVQ codec's)."""

    family = "toy-rq"
    variable_bitrate = True

    def __init__(self, max_codebooks: int = 3) -> None:
        super().__init__()
        self.sample_rate, self.hop_length, self.codebook_size = SR, 1, 16
        self.context_frames = 0
        self.scales = [(2 / 15 / 2) ** i for i in range(max_codebooks)]

    @property
    def max_codebooks(self) -> int:
        return len(self.scales)

    def _encode_frames(self, wav):
        res, codes = wav[:, 0].double(), []
        for s in self.scales:
            c = torch.round(res / s * 7.5 + 7.5).clamp(0, 15)
            res = res - (c - 7.5) / 7.5 * s
            codes.append(c.long())
        return torch.stack(codes, 1)

    def _decode(self, codes):
        out = sum((codes[:, i].double() - 7.5) / 7.5 * s for i, s in enumerate(self.scales[: codes.shape[1]]))
        return out.float().unsqueeze(1)

    def config(self):
        return {"max_codebooks": self.max_codebooks}


def _tone(seconds: float, f0: float, chirp: float) -> torch.Tensor:
    """Harmonic tone with a pitch glide and a 2 Hz on/off envelope (pauses, like speech)."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * (f0 * t + 0.5 * chirp * t**2)
    x = sum(np.sin(k * phase) / k for k in range(1, 16)) * np.clip(np.sin(2 * np.pi * 2 * t), 0.05, None)
    return torch.from_numpy(0.3 * x / np.abs(x).max()).float()[None]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    audio = root / "audio"
    specs = {"a_tone": (1.0, 150, 40), "b_chirp": (1.2, 220, -80), "c_dev": (1.0, 180, 100)}
    utts = []
    for i, (name, spec) in enumerate(specs.items()):
        path = save_audio(audio / f"{name}.wav", _tone(*spec), SR)
        utts.append(Utterance(ID=name, path=str(path), duration=spec[0], split="dev" if i else "train"))
    return {"dir": audio, "manifest": write_manifest(root / "m.csv", utts)}


def _args(*argv):
    return H.add_eval_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_run_eval_dmel_writes_json_markdown_png(data, tmp_path, capsys):
    out = tmp_path / "out"
    rc = H.run_eval(
        _args(
            "--codec",
            "dmel-16k-gl",
            "--data",
            str(data["manifest"]),
            "--split",
            "dev",
            "--limit",
            "2",
            "--decoder",
            "griffinlim",
            "--out",
            str(out),
        )
    )
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["split"] == "dev" and len(res["runs"]) == 1
    run = res["runs"][0]
    assert (run["codec"], run["decoder"], run["n_codebooks"], run["bitrate"]) == (
        "dmel-16k-gl",
        "griffinlim",
        80,
        16000.0,
    )
    rows = run["utterances"]
    assert [r["id"] for r in rows] == ["b_chirp", "c_dev"]
    keys = {"pesq_wb", "stoi", "estoi", "si_sdr", "mel_distance", "encode_rtf", "decode_rtf", "duration"}
    assert keys <= set(rows[0])
    assert keys - {"duration"} | {"usage_perplexity", "usage_fraction"} <= set(run["mean"])
    for k in ("pesq_wb", "stoi", "si_sdr", "mel_distance"):
        assert run["mean"][k] == pytest.approx(np.mean([r[k] for r in rows]))
    # Griffin-Lim on the dMel levels of a harmonic tone: intelligible (STOI ~0.9), PESQ-wb ~1.7
    assert run["mean"]["pesq_wb"] > 1.4 and run["mean"]["stoi"] > 0.8
    assert run["mean"]["mel_distance"] < 2.0
    assert run["mean"]["encode_rtf"] > 0 and run["mean"]["decode_rtf"] > 0
    assert rows[1]["duration"] == pytest.approx(1.0)
    assert len(run["codebook_usage"]["perplexity"]) == 80
    # a tone with pauses takes several of a band's 16 levels (~7 by perplexity), far from all of them
    assert 3 < run["mean"]["usage_perplexity"] < 12 and 0.3 < run["mean"]["usage_fraction"] < 0.9
    md = (out / "results.md").read_text()
    assert md.splitlines()[0].startswith("| codec | decoder | codebooks | bitrate (kbps) | PESQ-wb | STOI | ESTOI")
    assert "| dmel-16k-gl | griffinlim | 80 | 16.00 |" in md
    png = (out / "metrics_vs_bitrate.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "| dmel-16k-gl |" in capsys.readouterr().out


def test_quality_rises_with_codebooks_and_plot_has_all_settings(data, tmp_path):
    codec = ToyResidualCodec()
    items = H.load_items(data["dir"])
    runs = [H.evaluate_codec(codec, items, n_codebooks=k) for k in (1, 2, 3)]
    assert codec.n_codebooks == 3  # a per-call setting: the codec keeps none
    assert [r["bitrate"] for r in runs] == [64000.0, 128000.0, 192000.0]
    sdr = [r["mean"]["si_sdr"] for r in runs]
    assert sdr[0] + 15 < sdr[1] and sdr[1] + 15 < sdr[2]  # each 16-level stage adds ~ 24 dB
    pesq = [r["mean"]["pesq_wb"] for r in runs]
    mel = [r["mean"]["mel_distance"] for r in runs]
    assert pesq[0] < pesq[1] < pesq[2] and mel[0] > mel[1] > mel[2]
    paths = H.write_results(tmp_path, runs)
    md = paths["md"].read_text().splitlines()
    assert len(md) == 2 + 3 and "| toy-rq | native | 2 | 128.00 |" in md[3]


def test_load_items_manifest_dir_split_limit(data):
    assert [u.ID for u in H.load_items(data["dir"])] == ["a_tone", "b_chirp", "c_dev"]
    assert [u.ID for u in H.load_items(data["manifest"], split="dev", limit=1)] == ["b_chirp"]
    with pytest.raises(H.EvalError, match="no utterances in split 'test'"):
        H.load_items(data["manifest"], split="test")
    with pytest.raises(H.EvalError, match="needs a manifest"):
        H.load_items(data["dir"], split="dev")


def test_fixed_codebooks_and_missing_vocoder_error_clearly(data):
    codec = load_codec("dmel-16k-gl")
    with pytest.raises(H.EvalError, match="fixed 80 codebooks"):
        H.evaluate_codec(codec, H.load_items(data["dir"], limit=1), n_codebooks=4)
    with pytest.raises(H.EvalError, match="no trained vocoder"):
        H.set_decoder(codec, "vocoder")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--codec", "nope"], "unknown codec 'nope'"),
        (["--codec", "dmel-16k-gl", "--decoder", "vocoder"], "no trained vocoder"),
        (["--codec", "dmel-16k-gl", "--extras", "pesq2"], "unknown extra metric 'pesq2'"),
        (["--codec", "dmel-16k-gl", "--limit", "0"], "--limit must be >= 1"),
    ],
)
def test_cli_errors_are_reported(data, tmp_path, capsys, argv, message):
    assert H.run_eval(_args(*argv, "--data", str(data["dir"]), "--out", str(tmp_path))) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_missing_extra_package_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "speechmos", None)  # import now raises ImportError
    H._extra_scorer.cache_clear()
    with pytest.raises(H.EvalError, match="pip install speechmos onnxruntime"):
        H.parse_extras("dnsmos")
    H._extra_scorer.cache_clear()


@pytest.mark.slow
def test_extras_dnsmos_and_visqol(data):
    pytest.importorskip("speechmos")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("visqol")
    pytest.importorskip("ai_edge_litert")
    items = H.load_items(data["dir"], limit=1)
    run = H.evaluate_codec(ToyResidualCodec(), items, n_codebooks=1, extras=("dnsmos", "visqol"))
    better = H.evaluate_codec(ToyResidualCodec(), items, n_codebooks=3, extras=("dnsmos", "visqol"))
    for r in (run, better):
        assert {"dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808", "visqol"} <= set(r["utterances"][0])
    # one 16-level stage leaves loud quantisation noise: DNSMOS hears it as background, ViSQOL too
    assert better["mean"]["dnsmos_bak"] > run["mean"]["dnsmos_bak"] + 1
    assert better["mean"]["dnsmos_ovrl"] > run["mean"]["dnsmos_ovrl"]
    assert better["mean"]["visqol"] > run["mean"]["visqol"]
    assert "ViSQOL" in H.markdown_table([run, better]).splitlines()[0]
