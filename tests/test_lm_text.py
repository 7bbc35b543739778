"""Text front-end: espeak-ng phonemes with punctuation and word boundaries, fallback, errors."""

import pytest

from speechtok.lm import text as T
from speechtok.lm.text import TextError, TextFrontend

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
