"""The LM training data pipeline on tiny data: the token cache, TTS items (symbols, durations,
prompts, batches) and enhancement pairs."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from speechtok.cli import main as cli_main
from speechtok.codecs import load_codec
from speechtok.data.manifest import Utterance, write_manifest
from speechtok.enhance.data import MixedPairBatches, PairBatches, crop_rows, enhance_items, mixed_pairs
from speechtok.lm.data import audio_groups, collate, encode_folders, fixed_batches, load_codes, token_names, token_paths
from speechtok.tokens import TokenFileError, codec_hash, load_tokens
from speechtok.tts.data import (
    TTSBatches,
    aligner_path,
    by_speaker,
    default_prompt,
    dev_batches,
    durations_path,
    manifest_texts,
    symbols_cache,
    tts_items,
    with_durations,
    with_prompt,
)
from speechtok.tts.text import TextFrontend

SR = 16000
TEXTS = ["the cat sat", "a dog ran", "we speak now", "one more line"]


@pytest.fixture(scope="module")
def codec():
    return load_codec("dmel-16k-gl")  # parameter-free: the same codes as dmel-16k


def tone(seconds, f0):
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


@pytest.fixture()
def corpus(tmp_path):
    """A TTS manifest (4 utterances, 2 speakers, one in a subfolder) and an enhancement one (2 pairs)."""
    utts, pairs = [], []
    for i, text in enumerate(TEXTS):
        path = tmp_path / "audio" / ("sub" if i == 3 else "") / f"u{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(0.4 + 0.1 * i, 120 + 80 * (i % 2)), SR)
        utts.append(Utterance(f"u{i}", str(path), 0.4 + 0.1 * i, speaker=f"spk{i % 2}", text=text))
    for i in range(2):
        clean, noisy = tmp_path / "pairs" / "clean" / f"c{i}.wav", tmp_path / "pairs" / "noisy" / f"n{i}.wav"
        clean.parent.mkdir(parents=True, exist_ok=True)
        noisy.parent.mkdir(parents=True, exist_ok=True)
        wav = tone(0.5 + 0.2 * i, 150)
        sf.write(clean, wav, SR)
        sf.write(noisy, wav + 0.05 * np.random.default_rng(i).standard_normal(wav.shape).astype(np.float32), SR)
        pairs.append(Utterance(f"p{i}", str(noisy), 0.5, speaker="s", extra={"clean_path": str(clean)}))
    write_manifest(tmp_path / "tts.csv", utts)
    write_manifest(tmp_path / "pairs.csv", pairs)
    return tmp_path


def test_encode_folders_writes_the_token_files_speechtok_encode_writes_and_resumes(corpus, codec):
    manifests, cache = [corpus / "tts.csv"], corpus / "tokens"
    groups = audio_groups("tts", manifests)
    assert encode_folders(groups, codec, cache) == []
    paths = token_paths(groups, codec.name, cache)
    assert len(paths) == 4 and paths[str(corpus / "audio/sub/u3.wav")].name == "u3.npz"
    tf = load_tokens(paths[str(corpus / "audio/u0.wav")])
    assert tf.codec_hash == codec_hash(codec) and tf.n_samples == int(0.4 * SR) and tf.orig_sample_rate == SR
    # the same files as `speechtok encode` makes of the folder (which batches them)
    assert (
        cli_main(["encode", str(corpus / "audio"), str(corpus / "cli"), "--codec", codec.name, "--workers", "0"]) == 0
    )
    dest = paths[str(corpus / "audio/u0.wav")].parent  # the token folder of corpus/audio
    for q in paths.values():
        ref = load_tokens(corpus / "cli" / q.relative_to(dest))
        mine = load_tokens(q)
        np.testing.assert_array_equal(mine.codes, ref.codes)
        assert (mine.meta(), mine.n_samples) == (ref.meta(), ref.n_samples)
    before = {p: q.stat().st_mtime_ns for p, q in paths.items()}
    assert encode_folders(groups, codec, cache) == []  # done before: nothing rewritten
    assert {p: q.stat().st_mtime_ns for p, q in paths.items()} == before
    # a file that cannot be read is reported, the others are kept
    (corpus / "audio" / "bad.wav").write_bytes(b"not audio")
    failed = encode_folders([[*groups[0], str(corpus / "audio" / "bad.wav")]], codec, cache)
    assert [p for p, _ in failed] == [str(corpus / "audio" / "bad.wav")]
    codes = load_codes(paths[str(corpus / "audio/u0.wav")], codec_hash(codec))
    assert codes.dtype == torch.int16 and codes.shape == tf.codes.shape
    with pytest.raises(TokenFileError, match="another codec"):
        load_codes(paths[str(corpus / "audio/u0.wav")], "0" * 16)


def test_token_names_keep_the_extension_only_when_names_clash(tmp_path):
    names = token_names([tmp_path / "a.wav", tmp_path / "a.flac", tmp_path / "d" / "b.wav"], tmp_path)
    assert names == {
        str(tmp_path / "a.wav"): "a.wav",
        str(tmp_path / "a.flac"): "a.flac",
        str(tmp_path / "d" / "b.wav"): "d/b",
    }


def test_tts_items_symbols_durations_prompts_and_batches(corpus, codec):
    manifests, cache = [corpus / "tts.csv"], corpus / "tokens"
    encode_folders(audio_groups("tts", manifests), codec, cache)
    frontend = TextFrontend.for_training("chars", "en-us")
    syms = symbols_cache(manifest_texts(manifests), frontend, cache)
    assert set(syms) == set(TEXTS) and (cache / "symbols-chars-en-us.json").exists()
    items = tts_items(manifests, codec, frontend, cache)
    assert [r["id"] for r in items] == ["u0", "u1", "u2", "u3"]
    assert items[0]["src"].tolist() == [frontend.index[c] for c in syms[TEXTS[0]] if c in frontend.index]
    assert items[1]["speaker"] == "spk1" and items[0]["codes"].shape[0] == codec.n_codebooks

    path = durations_path(cache, codec.name, "chars", "en-us")
    aligner = {"steps": 3, "batch_size": 2, "lr": 0.003, "dim": 8}
    timed = with_durations(items, path, codec.codebook_size, frontend.vocab_size, aligner, seed=0)
    assert all(
        int(r["durations"].sum()) == r["codes"].shape[-1] and len(r["durations"]) == len(r["src"]) for r in timed
    )
    known = json.loads(path.read_text())
    assert set(known) == {r["id"] for r in timed}
    again = with_durations(items, path, codec.codebook_size, frontend.vocab_size, {"steps": -1}, seed=0)
    assert all(torch.equal(a["durations"], b["durations"]) for a, b in zip(timed, again))  # read, not realigned
    assert aligner_path(path).exists()
    known.pop("u3")  # an utterance added later is aligned by the kept aligner, not a retrained one
    path.write_text(json.dumps(known))
    added = with_durations(items, path, codec.codebook_size, frontend.vocab_size, {"steps": -1}, seed=0)
    assert torch.equal(added[3]["durations"], timed[3]["durations"])
    path.write_text(json.dumps(known))  # u3 missing again, and the sizes differ: refused
    with pytest.raises(ValueError, match="cannot use the kept aligner .*: it is for"):
        with_durations(items, path, codec.codebook_size + 1, frontend.vocab_size, {"steps": -1}, seed=0)

    speakers = by_speaker(timed)
    assert dict(speakers) == {"spk0": [0, 2], "spk1": [1, 3]}
    row = with_prompt(timed, speakers, 0, np.random.default_rng(0), 5, True)
    assert row["prompt_len"] == 5 and row["codes"].shape[-1] == 5 + timed[0]["codes"].shape[-1]
    assert torch.equal(row["codes"][:, 5:], timed[0]["codes"]) and torch.equal(row["durations"], timed[0]["durations"])
    assert with_prompt(timed, speakers, 0, np.random.default_rng(0), 5, False)["prompt_len"] == 0

    batches = TTSBatches(timed, 3, max_batch_frames=200, max_batch_size=2, prompt_prob=0.5, prompt_frames=5, seed=1)
    b = batches[0]
    assert len(batches) == 3 and b["src"].shape[0] == b["codes"].shape[0] <= 2
    assert (b["code_len"] - b["prompt_len"] == b["durations"].sum(1)).all()
    assert all(torch.equal(batches[i]["codes"], batches[i]["codes"]) for i in range(3))  # a function of (seed, i)
    batches.set_epoch(1)
    batches.set_epoch(0)  # back to epoch 0: the same batch again (resumed runs draw what they would have)
    assert all(torch.equal(x, batches[0][k]) for k, x in b.items() if torch.is_tensor(x))

    dev = dev_batches(timed, {"spk0"}, n_dev=4, prompt_frames=5, max_batch_frames=10_000, seed=0)
    assert sorted(x["group"] for x in dev) == ["new", "seen"] and sum(len(x["src_len"]) for x in dev) == 4
    assert all((x["prompt_len"] > 0).all() for x in dev)  # dev rows always have a speaker prompt

    prompt = default_prompt(timed, "spk1", codec.frame_rate, seconds=(0.0, 100.0))
    assert prompt["id"] == "u1" and prompt["codes"].dtype == torch.long and prompt["text"] == TEXTS[1]
    assert default_prompt(timed, "nobody", codec.frame_rate) is None


def test_enhance_items_pairs_crops_and_batches(corpus, codec):
    manifests, cache = [corpus / "pairs.csv"], corpus / "tokens"
    groups = audio_groups("enhance", manifests)
    assert len(groups) == 2  # the noisy files and their clean references
    encode_folders(groups, codec, cache)
    items = enhance_items(manifests, codec, cache)
    assert [r["id"] for r in items] == ["p0", "p1"] and all(r["noisy"].shape == r["codes"].shape for r in items)
    batches = PairBatches(items, 2, batch_size=3, crop_frames=10, seed=0)
    b = batches[1]
    assert b["src"].shape == (3, codec.n_codebooks, 10) == b["codes"].shape and (b["prompt_len"] == 0).all()
    rows = crop_rows(items, 20)
    assert all(r["src"].shape[-1] == 20 for r in rows)
    packed = fixed_batches(rows, "dev", max_batch_frames=20)
    assert [len(x["src_len"]) for x in packed] == [1, 1] and packed[0]["group"] == "dev"
    bad = corpus / "bad.csv"
    write_manifest(bad, [Utterance("x", str(corpus / "pairs/noisy/n0.wav"), 0.5)])
    with pytest.raises(ValueError, match="clean_path"):
        enhance_items([bad], codec, cache)


def test_collate_pads_ids_and_codec_sources():
    rows = [
        {"src": torch.tensor([1, 2, 3]), "codes": torch.ones(2, 4, dtype=torch.int16), "prompt_len": 1},
        {"src": torch.tensor([4]), "codes": torch.ones(2, 6, dtype=torch.int16)},
    ]
    b = collate(rows, "g")
    assert b["src"].tolist() == [[1, 2, 3], [4, 0, 0]] and b["codes"].shape == (2, 2, 6)
    assert b["src_len"].tolist() == [3, 1] and b["code_len"].tolist() == [4, 6] and b["prompt_len"].tolist() == [1, 0]
    pairs = collate(
        [{"src": torch.ones(2, 5), "codes": torch.ones(2, 5)}, {"src": torch.ones(2, 3), "codes": torch.ones(2, 3)}]
    )
    assert pairs["src"].shape == (2, 2, 5) and pairs["src"].dtype == torch.long and pairs["src_len"].tolist() == [5, 3]


def test_mixed_pair_batches_are_fresh_deterministic_and_tokenised(codec, tmp_path):
    """On-the-fly pairs: the same (seed, epoch, i) gives the same batch, another epoch other pairs;
    the sources are weighted as asked; src is the noisy crop's codes, codes the clean crop's."""
    t = np.arange(SR * 2) / SR
    sources = []
    for s, f0 in enumerate((110.0, 220.0)):
        utts = []
        for i in range(3):
            wav = (0.3 * np.sin(2 * np.pi * (f0 + 7 * i) * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
            sf.write(tmp_path / f"s{s}_{i}.flac", wav, SR)
            utts.append(
                Utterance(f"s{s}_{i}", str(tmp_path / f"s{s}_{i}.flac"), 2.0, speaker=f"spk{s}{i % 2}", split="train")
            )
        sources.append(utts)
    sf.write(tmp_path / "noise.flac", np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1, SR)
    noise = [Utterance("n", str(tmp_path / "noise.flac"), 1.0, split="train")]
    mixer, weights = mixed_pairs(
        sources, [1.0, 0.0], noise, [], codec, 25, snr_range=(0, 5), noise_kinds={"real": 1}, seed=3
    )
    assert weights[3:].sum() == 0 and abs(weights.sum() - 1) < 1e-9
    batches = MixedPairBatches(mixer, weights, codec, n_batches=2, batch_size=3, seed=1)
    b = batches[1]
    assert b["src"].shape == (3, codec.n_codebooks, 25) == b["codes"].shape
    assert torch.equal(batches[1]["src"], b["src"]) and not torch.equal(b["src"], b["codes"])
    batches.set_epoch(1)
    assert not torch.equal(batches[1]["src"], b["src"])
    # the pair behind row 0, rendered again, tokenises to that row
    batches.set_epoch(0)
    noisy, clean = batches.pair(0, batches.rng(0))
    assert torch.equal(
        codec.encode(torch.stack([noisy, clean])), torch.stack([batches[0]["src"][0], batches[0]["codes"][0]])
    )
    with pytest.raises(ValueError, match="weights"):
        MixedPairBatches(mixer, weights[:2], codec, 2, 3, 1)


def test_voices_follow_the_prompt_and_collate():
    """Each item gets its encoder embedding; a row takes the voice of its prompt's utterance (or of
    another of the speaker's, or its own when alone), and collate stacks them."""
    from speechtok.tts.data import with_voices
    from speechtok.tts.speaker import SpeakerEncoder

    codec = load_codec("dmel-16k")
    torch.manual_seed(0)
    items = [
        {"id": f"u{i}", "speaker": spk, "src": torch.tensor([1, 2]), "codes": torch.randint(0, 16, (80, 30 + 5 * i))}
        for i, spk in enumerate(["a", "a", "b"])
    ]
    voiced = with_voices(items, SpeakerEncoder(dim=8, channels=16), codec, max_frames=32)
    assert all(r["voice"].shape == (8,) for r in voiced) and not torch.allclose(voiced[0]["voice"], voiced[1]["voice"])
    speakers = by_speaker(voiced)
    rng = np.random.default_rng(0)
    assert torch.equal(with_prompt(voiced, speakers, 0, rng, 10, True)["voice"], voiced[1]["voice"])  # the prompt's
    assert torch.equal(with_prompt(voiced, speakers, 0, rng, 10, False)["voice"], voiced[1]["voice"])  # another's
    alone = with_prompt(voiced, speakers, 2, rng, 10, True)
    assert alone["prompt_len"] == 0 and torch.equal(alone["voice"], voiced[2]["voice"])
    assert collate([alone, with_prompt(voiced, speakers, 1, rng, 10, True)])["voice"].shape == (2, 8)
