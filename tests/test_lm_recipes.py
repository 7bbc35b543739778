"""The LM recipes train a tiny model on the CPU: loss falls, runs resume, tokens are cached, exports load."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechtok.compress import TokenPrior, compress_tokens, decompress_tokens
from speechtok.data.manifest import Utterance, read_manifest, write_manifest
from speechtok.enhance import load_enhancer
from speechtok.lm.checkpoint import CheckpointError, save_lm
from speechtok.tokens import load_tokens
from speechtok.tts import load_tts
from speechtok.tts.speaker import SpeakerEncoder

pytestmark = pytest.mark.slow  # every test here trains a model or drives a browser

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "--model": "{dim: 32, n_layers: 1, n_heads: 2, max_len: 512}",
    "--warmup_steps": "1",
    "--lr": "0.003",
    "--num_workers": "0",
    "--n_dev": "4",
    "--n_export_samples": "1",
}
SENTENCES = ["the cat sat", "a dog ran far", "we speak now", "tones are not words", "one more line", "hello there"]


def harmonic(seconds, f0, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))).astype(np.float32)


def run(hparams, out, extra, tiny=TINY):
    """Train with the `tiny` settings; `extra` (flag, value pairs) wins over them."""
    opts = {**tiny, **dict(zip(extra[::2], extra[1::2]))}
    cmd = [
        sys.executable,
        str(REPO / "recipes/lm/train.py"),
        str(REPO / hparams),
        "--output_folder",
        str(out),
        *(a for kv in opts.items() for a in kv),
        "--noprogressbar",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=REPO, timeout=600, env=env)


def dev_losses(out):
    log = (out / "train_log.txt").read_text().splitlines()
    assert [int(re.search(r"epoch: (\d+)", line).group(1)) for line in log] == list(range(1, len(log) + 1))
    return [float(re.search(r"valid loss: ([\d.e+-]+)", line).group(1)) for line in log]


def tts_corpus(tmp_path) -> list[str]:
    """Eight tone 'utterances' with text (two training voices, one held out) and the recipe flags that read them."""
    utts = []
    for i, text in enumerate(SENTENCES + ["held out voice", "another new one"]):
        spk = ("spk0", "spk1", "new")[min(i % 2 + 2 * (i >= 6), 2)]
        f0 = {"spk0": 120, "spk1": 200, "new": 160}[spk]
        path = tmp_path / "audio" / f"u{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, harmonic(0.6 + 0.1 * len(text.split()), f0), 16000)
        utts.append(
            Utterance(f"u{i}", str(path), 1.0, speaker=spk, text=text, split="dev" if i in (4, 6, 7) else "train")
        )
    write_manifest(tmp_path / "train.csv", [u for u in utts if u.split == "train"])
    write_manifest(tmp_path / "dev.csv", [u for u in utts if u.split == "dev"])
    return [
        "--manifest_folder",
        str(tmp_path),
        "--train_manifests",
        "[train.csv]",
        "--dev_manifests",
        "[dev.csv]",
        "--token_cache",
        str(tmp_path / "tokens"),
        "--text",
        "{kind: chars, language: en-us}",
        "--default_voice",
        "spk0",
        "--max_frames",
        "200",
        "--prompt_frames",
        "20",
        "--max_batch_frames",
        "300",
        "--steps_per_epoch",
        "20",
        "--aligner",
        "{steps: 30, batch_size: 4, lr: 0.003, dim: 16}",
    ]


def test_tts_recipe_trains_resumes_caches_tokens_and_exports(tmp_path):
    out, cache, args = tmp_path / "exp", tmp_path / "tokens", tts_corpus(tmp_path)
    first = run("recipes/lm/tts/hparams/cpu.yaml", out, [*args, "--number_of_epochs", "1"])
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    tokens = sorted(cache.rglob("*.npz"))
    assert len(tokens) == 8
    aligned = cache / "dmel-16k" / "durations-chars-en-us.json"  # one duration per symbol, summing to the frames
    durs = json.loads(aligned.read_text())
    assert sorted(durs) == [f"u{i}" for i in range(8)] and all(min(d) >= 1 for d in durs.values())
    stamps = [p.stat().st_mtime_ns for p in [*tokens, aligned]]
    second = run("recipes/lm/tts/hparams/cpu.yaml", out, [*args, "--number_of_epochs", "2"])  # resumes epoch 1
    assert second.returncode == 0, second.stderr[-3000:]
    assert [p.stat().st_mtime_ns for p in [*tokens, aligned]] == stamps  # tokenised and aligned once, reused
    losses = dev_losses(out)
    assert len(losses) == 2 and losses[1] < losses[0] < 3.0  # ln(18) = 2.89 at chance
    log = (out / "train_log.txt").read_text()
    assert "loss_new" in log and "loss_seen" in log and "duration_mse" in log  # held-out voice reported apart
    synth = load_tts(out / "export" / "tts-dmel-16k")
    assert synth.default_prompt["text"] in SENTENCES
    assert synth.tts("the cat", seed=0, max_seconds=0.5).shape[-1] > 0
    assert list((out / "samples").glob("*.wav"))


def test_tts_recipe_with_a_speaker_encoder_learns_and_ships_the_voice(tmp_path):
    """With `speaker_encoder`, the LM trains on the prompt's voice embedding (a projection that starts
    at zero) and the exported folder carries the encoder, which the Synthesizer runs on its prompt."""
    SpeakerEncoder(dim=8, channels=16).save(tmp_path / "spk")
    out = tmp_path / "exp"
    args = [*tts_corpus(tmp_path), "--speaker_encoder", str(tmp_path / "spk"), "--number_of_epochs", "1"]
    proc = run("recipes/lm/tts/hparams/cpu.yaml", out, args)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    folder = out / "export" / "tts-dmel-16k"
    assert json.loads((folder / "config.json").read_text())["speaker_encoder"] == "speaker"
    synth = load_tts(folder)
    assert synth.lm.cfg.speaker_dim == 8 and synth.lm.voice.weight.abs().sum() > 0  # it learned from the voice
    low, high = (torch.from_numpy(harmonic(1.0, f0))[None] for f0 in (110, 220))
    v_low, v_high = (synth._voice(synth.codec.encode(w[None])[0], 1) for w in (low, high))
    assert v_low.shape == (1, 8) and not torch.allclose(v_low, v_high)
    assert synth.tts("the cat", low, prompt_sr=16000, seed=0, max_seconds=0.5).shape[-1] > 0
    assert synth.tts("the cat", seed=0, max_seconds=0.5).shape[-1] > 0  # the default voice's embedding
    with pytest.raises(CheckpointError, match="takes a 8-d speaker embedding .*makes 0-d"):
        save_lm(tmp_path / "no_voice", synth.lm, "tts", synth.codec, text=synth.frontend.config())


def noisy_pairs(tmp_path) -> list[str]:
    """Six noisy/clean tone pairs (4 train, 2 dev) and the recipe flags that read them."""
    rng = np.random.default_rng(0)
    utts = []
    for i in range(6):
        clean = harmonic(1.0, 100 + 30 * (i % 3))  # dev pairs: seen tones, new noise
        noisy = clean + 0.1 * rng.standard_normal(clean.shape).astype(np.float32)
        for kind, wav in (("clean", clean), ("noisy", noisy)):
            (tmp_path / kind).mkdir(exist_ok=True)
            sf.write(tmp_path / kind / f"p{i}.flac", wav, 16000)
        utts.append(
            Utterance(
                f"p{i}",
                str(tmp_path / "noisy" / f"p{i}.flac"),
                1.0,
                split="dev" if i > 3 else "train",
                extra={"clean_path": str(tmp_path / "clean" / f"p{i}.flac")},
            )
        )
    return ["--mix", "null", *split_data(tmp_path, utts, 4, crop_frames=25, steps_per_epoch=20)]


def split_data(tmp_path, utts, n_train, crop_frames, steps_per_epoch) -> list[str]:
    """train.csv (the first n_train rows) and dev.csv in tmp_path, and the recipe flags that read
    them: 2 epochs of batches of 4 crops."""
    write_manifest(tmp_path / "train.csv", utts[:n_train])
    write_manifest(tmp_path / "dev.csv", utts[n_train:])
    flags = {
        "manifest_folder": tmp_path,
        "train_manifests": "[train.csv]",
        "dev_manifests": "[dev.csv]",
        "token_cache": tmp_path / "tokens",
        "crop_frames": crop_frames,
        "batch_size": 4,
        "steps_per_epoch": steps_per_epoch,
        "number_of_epochs": 2,
    }
    return [a for k, v in flags.items() for a in (f"--{k}", str(v))]


def test_enhance_recipe_trains_on_pairs_and_exports(tmp_path):
    args = noisy_pairs(tmp_path)
    out = tmp_path / "exp"
    proc = run("recipes/lm/enhance/hparams/cpu.yaml", out, [*args, "--aligned_source", "False"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = dev_losses(out)
    assert losses[1] < losses[0]
    export = out / "export" / "enhance-dmel-16k"
    # every epoch renders the dev pairs; the export is the epoch with the best PESQ-wb, and says so
    log = (out / "train_log.txt").read_text().splitlines()
    pesq = [float(re.search(r"valid pesq_wb: ([\d.e+-]+)", line).group(1)) for line in log]
    assert len(pesq) == 2 and "valid stoi" in log[0]
    training = json.loads((export / "config.json").read_text())["training"]
    assert training["pesq_wb"] == pytest.approx(max(pesq), abs=0.006)
    assert training["step"] == 20 * (1 + pesq.index(max(pesq)))
    enhancer = load_enhancer(export)
    wav = torch.from_numpy(harmonic(0.7, 150))
    assert enhancer.enhance(wav).shape == (1, wav.shape[-1])
    # fine-tuning starts from the exported weights, the aligned-source table (which the config
    # adds and the export lacks) at zero, one block more as the identity: one tiny step keeps
    # its dev loss, far from chance
    tuned = tmp_path / "tuned"
    deeper = TINY["--model"].replace("n_layers: 1", "n_layers: 2")
    proc = run(
        "recipes/lm/enhance/hparams/cpu.yaml",
        tuned,
        [
            *args[:-4],
            "--steps_per_epoch",
            "1",
            "--number_of_epochs",
            "1",
            "--lr",
            "1e-6",
            "--init_from",
            str(export),
            "--model",
            deeper,
        ],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "new in this run: src_frame_emb.weight" in proc.stdout and "grown from 1 to 2 blocks" in proc.stdout
    assert abs(dev_losses(tuned)[0] - min(losses)) < 0.02 < losses[0] - min(losses)
    tuned_enhancer = load_enhancer(tuned / "export" / "enhance-dmel-16k")
    assert tuned_enhancer.lm.cfg.aligned_source and tuned_enhancer.lm.cfg.transformer.n_layers == 2
    assert tuned_enhancer.enhance(wav).shape == (1, wav.shape[-1])
    # export_only before any end-of-epoch checkpoint: a clear error, no folder
    empty = tmp_path / "empty"
    proc = run("recipes/lm/enhance/hparams/cpu.yaml", empty, [*args, "--export_only", "True"])
    assert proc.returncode != 0 and "no end-of-epoch checkpoint" in proc.stderr, proc.stderr[-2000:]
    assert not (empty / "export").exists()


def test_tts_eval_set_prompts_each_row_with_another_utterance_of_its_speaker(tmp_path):
    rows = [
        Utterance(f"{spk}{i}", f"/a/{spk}{i}.wav", 1.0 + i, speaker=spk, text=f"line {i}", split="dev")
        for spk, n in (("a", 5), ("b", 2), ("solo", 1))
        for i in range(n)
    ]
    write_manifest(tmp_path / "dev.csv", rows)
    out = tmp_path / "eval.csv"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "recipes/lm/tts_eval_set.py"),
            str(tmp_path / "dev.csv"),
            "--per-speaker",
            "3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    picked = read_manifest(out)
    assert [u.speaker for u in picked].count("a") == 3 and [u.speaker for u in picked].count("b") == 2
    assert "solo" not in {u.speaker for u in picked}  # nobody else to prompt with
    for u in picked:
        prompt = u.extra["prompt_id"]
        assert prompt != u.ID and prompt[:-1] == u.speaker and u.extra["prompt_path"] == f"/a/{prompt}.wav"
    assert all(u.extra["prompt_id"] in ("a1", "a2", "a3") for u in picked if u.speaker == "a")  # 2-4 s preferred


@pytest.mark.parametrize("codec,pattern", [("rvq-16k", "delay"), ("single-16k-50", "single")])
def test_enhance_recipe_runs_on_the_learned_codecs(tmp_path, codec, pattern):
    """The same recipe over the bundled RVQ (8 codebooks, delay pattern) and single-codebook codecs."""
    out = tmp_path / "exp"
    proc = run(
        "recipes/lm/enhance/hparams/cpu.yaml",
        out,
        [
            *noisy_pairs(tmp_path),
            "--codec",
            codec,
            "--pattern",
            pattern,
            "--sampling",
            "{temperature: 0.0}",
            "--render",
            "{mode: codec, mean_levels: False}",
        ],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = dev_losses(out)
    assert losses[1] < losses[0]
    assert len(list((tmp_path / "tokens" / codec).rglob("*.npz"))) == 12  # 6 noisy + 6 clean files
    enhancer = load_enhancer(out / "export" / f"enhance-{codec}")
    assert enhancer.codec.name == codec and enhancer.lm.cfg.pattern == pattern
    wav = torch.from_numpy(harmonic(0.7, 150))
    assert enhancer.enhance(wav).shape == (1, wav.shape[-1])


def test_score_draws_pools_the_0_to_10_db_pairs_of_four_draws(tmp_path):
    rng = np.random.default_rng(0)
    manifests = tmp_path / "manifests"
    for d, name in enumerate(("noisy", "noisy_check", "noisy_check3", "noisy_check4")):
        rows = []
        for i, snr in enumerate((5.0, 15.0, 2.0)[: 2 + d % 2]):  # 1 or 2 pairs at 0-10 dB a draw
            clean = harmonic(1.0, 110 + 20 * i)
            noisy = clean + 0.05 * rng.standard_normal(clean.shape).astype(np.float32)
            for kind, wav in (("clean", clean), ("noisy", noisy)):
                sf.write(tmp_path / f"{name}{i}_{kind}.flac", wav, 16000)
            rows.append(
                Utterance(
                    f"{name}{i}",
                    str(tmp_path / f"{name}{i}_noisy.flac"),
                    1.0,
                    split="dev",
                    extra={"clean_path": str(tmp_path / f"{name}{i}_clean.flac"), "snr_db": str(snr)},
                )
            )
        write_manifest(manifests / f"{name}_dev.csv", rows)
    out = tmp_path / "draws"

    def score():
        proc = subprocess.run(
            [
                sys.executable,
                str(REPO / "recipes/lm/enhance/score_draws.py"),
                "--manifests",
                str(manifests),
                "--out",
                str(out),
                "--models",
                "enhance-dmel-16k",
                str(REPO / "speechtok/pretrained/enhance-dmel-16k"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    proc = score()
    assert (
        "| dev pairs | 1 |" in proc.stdout and "| seed 777 | 2 |" in proc.stdout and "| all four | 6 |" in proc.stdout
    )
    draws = json.loads((out / "scores.json").read_text())["draws"]
    each = [
        draws[d]["0-enhance-dmel-16k"]["enhanced"] for d in ("noisy", "noisy_check", "noisy_check3", "noisy_check4")
    ]
    pooled = draws["all four"]["0-enhance-dmel-16k"]["enhanced"]
    assert pooled["n"] == 6 and pooled["stoi"] == pytest.approx(sum(m["stoi"] * m["n"] for m in each) / 6)
    assert draws["all four"]["1-enhance-dmel-16k"] == draws["all four"]["0-enhance-dmel-16k"]
    # only the 0-10 dB pairs were enhanced, and once: the same model by its path found its files
    assert len(list(out.rglob("*.wav"))) == 6
    # a pair drawn again under the same ID is enhanced afresh; the others are only scored
    redrawn = tmp_path / "noisy_check0_noisy.flac"
    sf.write(
        redrawn, sf.read(redrawn, dtype="float32")[0] + 0.01 * rng.standard_normal(16000).astype(np.float32), 16000
    )
    score()
    assert len(list(out.rglob("noisy_check0-*.wav"))) == 2 and len(list(out.rglob("*.wav"))) == 7


def test_prior_recipe_learns_codes_and_exports_a_prior_that_compresses(tmp_path):
    """The `prior` task: source-free crops of a codec's codes; the export is a TokenPrior whose
    .stz files of held-out tones are lossless and smaller than raw."""
    utts = []
    for i in range(8):
        path = tmp_path / "audio" / f"t{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, harmonic(1.0, 110 + 20 * i), 16000)
        utts.append(Utterance(f"t{i}", str(path), 1.0, split="dev" if i >= 6 else "train"))
    out = tmp_path / "exp"
    args = [
        *split_data(tmp_path, utts, 6, crop_frames=40, steps_per_epoch=15),
        "--model",
        "{dim: 32, n_layers: 1, n_heads: 2, max_len: 64}",
    ]
    no_samples = {k: v for k, v in TINY.items() if k != "--n_export_samples"}  # a prior writes no audio
    proc = run("recipes/lm/prior/hparams/cpu.yaml", out, args, no_samples)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = dev_losses(out)
    assert losses[1] < losses[0] < np.log(16)  # below a uniform code
    prior = TokenPrior.load(out / "export" / "prior-dmel-16k")
    tf = load_tokens(next((tmp_path / "tokens").rglob("t7.npz")))
    data = compress_tokens(tf, prior)
    assert len(data) * 8 < 0.8 * tf.bitrate * tf.duration
    assert np.array_equal(decompress_tokens(data, prior).codes, tf.codes)
