"""Synthetic corpus: voices, deterministic plan, end-to-end synthesis with every engine, resume."""

import os
import warnings

import numpy as np
import pytest
import soundfile as sf
from conftest import missing

from speechtok.data import synth
from speechtok.data.manifest import read_manifest, write_manifest
from speechtok.data.synth import (
    DEFAULT_DEV_VOICES,
    DEFAULT_VOICES,
    EngineMissing,
    Sentence,
    SynthError,
    Voice,
    build_synth_corpus,
    check_engines,
    load_sentences,
    parse_voice,
    plan_blocks,
    split_sentences,
)
from speechtok.tts.text import phonemize

E2E_VOICES = ["espeak:en-us+f2:s=170,p=60", "flite:kal16", "festival:voice_kal_diphone", "espeak:en+m3:s=160,p=45"]
SENTENCES = [
    Sentence("s1", "The cat sat on the mat."),
    Sentence("s2", "Bring me the red box, please."),
    Sentence("s3", "We walked home along the river."),
    Sentence("s4", "Is it going to rain today?"),
    Sentence("s5", "Nobody answered the door."),
    Sentence("s6", "She sang a quiet song."),
]


def require_engines(voices):
    """Skip when a TTS engine is missing on a user's machine; fail in CI (SPEECHTOK_REQUIRE_SHARED=1)."""
    try:
        check_engines([parse_voice(v) for v in voices])
    except EngineMissing as exc:
        missing(str(exc))


def test_default_voices_are_many_distinct_and_round_trip():
    ids = [v.id for v in DEFAULT_VOICES]
    assert len(set(ids)) == len(ids) >= 20
    assert {v.engine for v in DEFAULT_VOICES} == {"espeak", "flite", "festival"}
    assert set(DEFAULT_DEV_VOICES) < set(ids)
    assert {v.engine for v in DEFAULT_VOICES if v.id in DEFAULT_DEV_VOICES} == {"espeak", "flite", "festival"}
    for v in DEFAULT_VOICES:
        assert parse_voice(v.spec) == v
    assert parse_voice("espeak:en-us+f3:s=170,p=60").id == "espeak-en-us-f3-p60-s170"
    assert parse_voice("festival:voice_kal_diphone").id == "festival-kal_diphone"


@pytest.mark.parametrize("spec", ["espeak", "sapi:david", "espeak:en-us:speed=3", "flite:slt:f0=high"])
def test_bad_voice_specs_are_rejected(spec):
    with pytest.raises(ValueError):
        parse_voice(spec)


def test_missing_engine_names_binary_and_setup(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineMissing, match=r"'espeak-ng' not found.*\./setup\.sh"):
        check_engines([Voice("flite", "slt")])


def test_plan_is_deterministic_balanced_and_splits_are_disjoint():
    sents = [Sentence(f"x{i:03d}", f"sentence number {i} here") for i in range(40)]
    train, dev = split_sentences(sents, 0.25, seed=3)
    assert len(dev) == 10 and not {s.id for s in train} & {s.id for s in dev}
    assert split_sentences(sents, 0.25, seed=3) == (train, dev)
    voices = DEFAULT_VOICES[:5]

    def plan(seed):
        return [(b.voice.id, tuple(s.id for s in b.sentences)) for b in plan_blocks(train, voices, "train", seed, 4)]

    p = plan(7)
    assert p == plan(7) and p != plan(8)
    assert len(p) == 5 * 8  # every sentence block read once by every voice, then the plan ends
    first_pass = p[:8]
    assert {v for v, _ in first_pass} == {v.id for v in voices}  # round robin reaches every voice
    assert len(set(p)) == len(p)  # a (voice, sentences) pair never repeats


def test_load_sentences_plain_prose(shared_data):
    sents = load_sentences(shared_data / "text")
    assert len(sents) > 12000
    assert len({s.id for s in sents}) == len(sents)
    assert any(s.id.startswith("arctic_") for s in sents) and any(s.id.startswith("LJ") for s in sents)
    assert not any(c.isdigit() for s in sents for c in s.text)


def test_corpus_phonemes_are_the_tts_front_end_s():
    """One phonemizer: the corpus's phonemes column is what the TTS front-end makes of the text
    (`speechtok.tts.text.phonemize`): its words, with the punctuation kept as symbols of its own."""
    require_engines([])
    ph = phonemize("Hello world, good morning.")
    assert ph.split()[2] == "," and ph.split()[-1] == "." and len(ph.split()) == 6 and "ˈ" in ph and "w" in ph
    assert not hasattr(synth, "phonemize")


def test_build_every_engine_resume_and_manifest(tmp_path):
    require_engines(E2E_VOICES)
    dev_voice = parse_voice(E2E_VOICES[-1]).id
    out = tmp_path / "synth"
    kw = dict(
        voices=E2E_VOICES,
        dev_voices=[E2E_VOICES[-1]],
        dev_fraction=0.3,
        sentences=SENTENCES,
        seed=0,
        block_size=2,
        progress=False,
    )
    # Targets exceed what 6 sentences can give, so every (voice, sentence) pair of each split is made.
    with pytest.warns(UserWarning, match="exhausted"):
        first = build_synth_corpus(out, hours=0.05, workers=2, **kw)
    train, dev = first.split("train"), first.split("dev")
    assert len(train) == 3 * 4 and len(dev) == 1 * 2 and first.synthesized == 14
    assert {u.speaker for u in dev} == {dev_voice}
    assert {u.speaker for u in train} == {parse_voice(v).id for v in E2E_VOICES[:3]}
    assert not {u.text for u in train} & {u.text for u in dev}
    assert {u.extra["engine"] for u in train} == {"espeak", "flite", "festival"}
    by_text = {}
    for u in first.utterances:
        info = sf.info(u.path)
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        assert u.duration > 0.5 and abs(info.duration - u.duration) < 1e-6
        assert u.text and u.phonemes and u.ID == f"{u.speaker}_{os.path.basename(u.path)[:-5]}"
        wav, _ = sf.read(u.path)
        assert abs(np.abs(wav).max() - 0.95) < 0.01  # peak-normalised
        by_text.setdefault(u.text, []).append(wav)
    for wavs in by_text.values():  # different voices reading the same sentence sound different
        for i in range(len(wavs)):
            for j in range(i + 1, len(wavs)):
                assert len(wavs[i]) != len(wavs[j]) or not np.allclose(wavs[i], wavs[j], atol=1e-3)

    manifest = write_manifest(tmp_path / "synth.csv", first.utterances)
    assert [u.ID for u in read_manifest(manifest)] == sorted(u.ID for u in first.utterances)

    # Resume: nothing is re-synthesised, and the serial path gives the same corpus.
    mtimes = {u.path: os.stat(u.path).st_mtime_ns for u in first.utterances}
    stale = out / "audio" / dev_voice / "s9.partial.flac"
    stale.write_bytes(b"half a file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = build_synth_corpus(out, hours=0.05, workers=1, **kw)
    assert again.synthesized == 0 and not stale.exists()
    assert [(u.ID, u.duration) for u in again.utterances] == [(u.ID, u.duration) for u in first.utterances]
    assert {u.path: os.stat(u.path).st_mtime_ns for u in again.utterances} == mtimes

    # An unreadable output is redone, the others are kept.
    broken = first.utterances[0].path
    with open(broken, "wb") as f:
        f.write(b"not audio")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        third = build_synth_corpus(out, hours=0.05, workers=1, **kw)
    assert third.synthesized == 1 and sf.info(broken).frames > 0


def test_engine_failure_names_the_voice(tmp_path):
    require_engines(["espeak:en-us"])
    with pytest.raises(EngineMissing, match="variant.*'f99'"):
        check_engines([parse_voice("espeak:en-us+f99")])
    with pytest.raises(SynthError, match="espeak-bogus: espeak-ng failed"):
        build_synth_corpus(
            tmp_path,
            hours=0.001,
            voices=["espeak:bogus"],
            dev_voices=[],
            sentences=SENTENCES,
            workers=1,
            progress=False,
        )


def test_all_default_voices_installed():
    require_engines([v.spec for v in DEFAULT_VOICES])  # fails in CI if setup.sh missed a voice package
