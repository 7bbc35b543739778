"""Text front-end: espeak-ng phonemes with punctuation and word boundaries, fallback, errors."""

import itertools

import pytest

from speechtok.tts import text as T
from speechtok.tts.text import TextError, TextFrontend

espeak = pytest.mark.skipif(not T.espeak_available(), reason="espeak-ng not installed")


@espeak
def test_phonemes_keep_punctuation_and_word_boundaries():
    out = T.phonemize('Hello, world! "Quoted" -- dash... end?')
    words = out.split(" ")
    assert words[:4] == ["həlˈoʊ", ",", "wˈɜːld", "!"]
    assert words[-1] == "?" and "…" in words and "—" in words and words.count('"') == 2
    assert not any(c.isupper() for c in out)  # IPA, not letters of the input


@espeak
def test_batch_phonemization_matches_one_by_one():
    texts = ["The cat sat.", "!!!", "Twenty-one dogs; 5 cats.", "a"]
    batch = T.phonemize_many(texts)
    assert batch == [T.phonemize(t) for t in texts]
    assert batch[1] == ""  # nothing to say
    assert "fˈaɪv" in batch[2]  # numbers are spoken


@espeak
def test_encode_uses_the_vocabulary_and_round_trips():
    fe = TextFrontend()
    ids = fe.encode("Speech, please.")
    assert all(0 <= i < fe.vocab_size for i in ids)
    assert fe.decode(ids) == fe.to_symbols("Speech, please.")
    again = TextFrontend.from_config(fe.config())
    assert again.encode("Speech, please.") == ids


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_text_is_an_error(bad):
    with pytest.raises(TextError, match="empty"):
        TextFrontend().encode(bad)


@pytest.mark.parametrize("kind", ["phonemes", "chars"])
def test_text_without_speakable_characters_is_an_error(kind):
    if kind == "phonemes" and not T.espeak_available():
        pytest.skip("espeak-ng not installed")
    with pytest.raises(TextError, match="no speakable characters"):
        TextFrontend(kind).encode("?! ... ,;")


def test_character_fallback_warns_when_espeak_is_missing(monkeypatch):
    monkeypatch.setattr(T, "ESPEAK", "espeak-ng-that-does-not-exist")
    fe = TextFrontend("phonemes")
    with pytest.warns(UserWarning, match="characters instead of phonemes"):
        assert fe.to_symbols("Hello, World!") == "hello , world !"
    with pytest.warns(UserWarning, match="training on characters"):
        assert TextFrontend.for_training("phonemes").kind == "chars"


def test_unknown_symbols_are_dropped_with_a_warning():
    fe = TextFrontend("chars", symbols=list(" abc"))
    with pytest.warns(UserWarning, match="not in the model's vocabulary"):
        assert fe.encode("abz c") == [1, 2, 0, 3]
    with pytest.raises(TextError, match="vocabulary"):
        TextFrontend("chars", symbols=list(" ab"), warn=False).encode("zzz")


PARAGRAPH = (
    "The keeper climbed the stairs, lit the lamp, and watched the ships. In winter the waves rose "
    "higher than the rocks; still, the light never failed! Sailors spoke of him: a quiet man… "
    "\u201cHe kept the flame alive,\u201d they said. Then-a-long-word ends it."
)


def test_split_text_keeps_text_that_fits_whole():
    assert T.split_text("  Short  text, here. ", lambda piece: True) == [("Short text, here.", None)]
    assert T.split_text(" ", lambda piece: True) == []


@pytest.mark.parametrize("limit", [200, 60, 30, 16])
def test_split_text_pieces_fit_lose_nothing_and_keep_order(limit):
    pieces = T.split_text(PARAGRAPH, lambda piece: len(piece) <= limit)
    texts = [p for p, _ in pieces]
    assert len(pieces) > 1 and all(len(p) <= limit for p in texts)
    assert " ".join(texts) == T.normalize(PARAGRAPH)  # no text lost, none repeated, in order
    assert [b for _, b in pieces][-1] is None and None not in [b for _, b in pieces][:-1]
    for (text, boundary), (after, _) in itertools.pairwise(pieces):
        ends = {"sentence": '.!?…"', "clause": ",;:—"}
        if boundary in ends:
            assert text[-1] in ends[boundary], (text, boundary)
        if boundary == "word":  # cut inside a clause only when the clause alone is too long
            assert len(text) + 1 + len(after.split()[0]) > limit


def test_split_text_prefers_sentences_then_clauses():
    assert T.split_text(PARAGRAPH, lambda piece: len(piece) <= 60) == [
        ("The keeper climbed the stairs, lit the lamp,", "clause"),
        ("and watched the ships.", "sentence"),
        ("In winter the waves rose higher than the rocks; still,", "clause"),
        ("the light never failed!", "sentence"),
        ("Sailors spoke of him: a quiet man…", "sentence"),
        ('"He kept the flame alive," they said.', "sentence"),
        ("Then-a-long-word ends it.", None),
    ]
    by_clause = T.split_text("one two three, four five six, seven eight", lambda piece: len(piece) <= 30)
    assert by_clause == [("one two three, four five six,", "clause"), ("seven eight", None)]


def test_split_text_counts_what_the_caller_counts_and_refuses_an_uncuttable_word():
    fe = TextFrontend("chars")
    pieces = T.split_text(PARAGRAPH, lambda piece: len(fe.encode(piece)) <= 40)  # symbols, not characters
    assert all(len(fe.encode(p)) <= 40 for p, _ in pieces)
    assert [p for p, _ in T.split_text("Well … yes.", lambda piece: len(piece) <= 6)] == ["Well …", "yes."]
    with pytest.raises(TextError, match="too long for the model even alone"):
        T.split_text(PARAGRAPH, lambda piece: len(piece) <= 15)  # "Then-a-long-word" is 16
