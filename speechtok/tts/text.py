"""Text front-end for TTS: text -> IPA phoneme symbols (espeak-ng) -> ids.

Phonemes come from the espeak-ng binary (en-us IPA with stress marks). espeak-ng drops
punctuation, so the text is split at punctuation first, each stretch between marks is
phonemized (all stretches of all texts in one espeak-ng call, one per output line) and the
marks are put back. The result is a string of symbols: phoneme words separated by spaces,
punctuation groups as space-separated words of their own, e.g. "həlˈoʊ , wˈɜːld !".

Without espeak-ng the front-end falls back to lower-cased characters (with a warning), in
the same symbol vocabulary, so a phoneme model still runs (badly) and a character model
can be trained. Ids index `symbols`, which a checkpoint stores, so a model keeps its
vocabulary even if the default one grows.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
import warnings
from collections.abc import Callable, Sequence

ESPEAK = "espeak-ng"
PUNCTUATION = ',.;:!?…—"()¡¿'
_IPA = "æçðøŋœɐɑɒɓɔɕɖɗɘəɚɛɜɝɞɟɠɡɢɣɤɥɦɧɨɪɫɬɭɮɯɰɱɲɳɴɵɶɸɹɺɻɽɾʀʁʂʃʄʈʉʊʋʌʍʎʏʐʑʒʔʕʘʙʛʜʝʟʡʢʤʧʰʲʷˈˌːˑ˞ˠˤ̩̪̯̃̊͡βθχᵻ"
# space (word boundary), punctuation, letters/digits (char fallback; many are also IPA), IPA
DEFAULT_SYMBOLS = list(dict.fromkeys(" " + PUNCTUATION + "'-" + "abcdefghijklmnopqrstuvwxyz0123456789" + _IPA))

_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "«": '"', "»": '"', "‘": "'", "’": "'", "–": "—", "―": "—"})
_DASHES = re.compile(r"\s+-+\s+|-{2,}")
_ELLIPSIS = re.compile(r"\.{3,}")
_SPLIT = re.compile(f"([{re.escape(PUNCTUATION)}]+)")
_LANG_SWITCH = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)?\)")
# where long text may be cut, coarsest first: after a sentence end (closing quotes or brackets kept
# with it), after a clause mark, between words; each followed by the space it replaces
_BREAKS = (
    ("sentence", re.compile(r"(?<=[.!?…])\s+|(?<=[.!?…][\"')])\s+")),
    ("clause", re.compile(r"(?<=[,;:—])\s+")),
    ("word", re.compile(r"\s+")),
)


class TextError(ValueError):
    """Text that cannot be spoken (empty, nothing speakable, nothing in the vocabulary)."""


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


def normalize(text: str) -> str:
    """NFC, straight quotes, one kind of dash and ellipsis, single spaces."""
    text = unicodedata.normalize("NFC", str(text)).translate(_QUOTES)
    text = _ELLIPSIS.sub("…", _DASHES.sub(" — ", text))
    return " ".join(text.split())


def _pieces(text: str) -> list[tuple[bool, str]]:
    """(is_punctuation, piece) in order; empty stretches dropped."""
    out = []
    for i, piece in enumerate(_SPLIT.split(normalize(text))):
        piece = piece.strip()
        if piece:
            out.append((i % 2 == 1, piece))
    return out


def _espeak(chunks: Sequence[str], language: str) -> list[str]:
    """One IPA line per chunk. Paragraph breaks separate the chunks, and each chunk holds no
    clause punctuation, so espeak-ng writes exactly one line each; if it ever does not (a chunk
    it reads as nothing), fall back to one call per chunk."""
    if not chunks:
        return []

    def run(text: str) -> list[str]:
        r = subprocess.run(
            [ESPEAK, "-q", "--ipa", "-v", language, "--stdin"], input=text, check=False, capture_output=True, text=True
        )
        if r.returncode != 0:
            raise TextError(f"espeak-ng failed (voice {language!r}): {r.stderr.strip()[-300:]}")
        return [" ".join(_LANG_SWITCH.sub("", line).split()) for line in r.stdout.splitlines() if line.strip()]

    lines = run("\n\n".join(chunks) + "\n")
    if len(lines) == len(chunks):
        return lines
    return [" ".join(run(c + "\n")) for c in chunks]


def phonemize_many(texts: Sequence[str], language: str = "en-us") -> list[str]:
    """Phoneme strings for many texts with one espeak-ng call; '' for a text with nothing to say."""
    split = [_pieces(t) for t in texts]
    ipa = iter(_espeak([p for pieces in split for is_punct, p in pieces if not is_punct], language))
    out = []
    for pieces in split:
        words = [p if is_punct else next(ipa) for is_punct, p in pieces]
        has_speech = any(w for (is_punct, _), w in zip(pieces, words) if not is_punct)
        out.append(" ".join(w for w in words if w) if has_speech else "")
    return out


def phonemize(text: str, language: str = "en-us") -> str:
    return phonemize_many([text], language)[0]


def characters(text: str) -> str:
    """The character fallback: lower-cased words, punctuation groups spaced like phonemes."""
    pieces = _pieces(text.lower())
    if not any(not is_punct and any(c.isalnum() for c in p) for is_punct, p in pieces):
        return ""
    return " ".join(p for _, p in pieces)


def split_text(text: str, fits: Callable[[str], bool]) -> list[tuple[str, str | None]]:
    """Cut `text` (normalized) into pieces that each `fits` (e.g. the model's positions), in order,
    as (piece, boundary after it: "sentence", "clause", "word"; None after the last). Text that
    fits stays whole; otherwise it is cut at sentence ends, a sentence still too long at clause
    marks (, ; : —), a clause still too long between words; neighbours that fit together are
    packed into one piece. The pieces joined by spaces give the normalized text back."""
    text = normalize(text)
    if not text:
        return []
    known: dict[str, bool] = {}

    def ok(piece: str) -> bool:
        if piece not in known:
            known[piece] = bool(fits(piece))
        return known[piece]

    def cut(piece: str, level: int) -> list[tuple[str, str | None]]:
        if ok(piece):
            return [(piece, None)]
        if level == len(_BREAKS):
            raise TextError(
                f"{piece!r} is too long for the model even alone (beside its voice prompt); use a shorter prompt"
            )
        kind, pattern = _BREAKS[level]
        parts: list[str] = []
        for part in pattern.split(piece):  # a part with nothing to say ("…", "%") goes with the one before
            if parts and not any(c.isalnum() for c in part):
                parts[-1] = f"{parts[-1]} {part}"
            else:
                parts.append(part)
        if len(parts) > 1 and not any(c.isalnum() for c in parts[0]):
            parts[:2] = [f"{parts[0]} {parts[1]}"]
        groups: list[str] = []
        for part in parts:
            if groups and ok(groups[-1]) and ok(f"{groups[-1]} {part}"):
                groups[-1] = f"{groups[-1]} {part}"
            else:
                groups.append(part)
        out = []
        for group in groups:
            out += cut(group, level + 1)
            out[-1] = (out[-1][0], kind)
        out[-1] = (out[-1][0], None)
        return out

    return cut(text, 0)


class TextFrontend:
    """Text -> symbol string -> ids, for kind 'phonemes' (espeak-ng) or 'chars'."""

    def __init__(
        self, kind: str = "phonemes", language: str = "en-us", symbols: Sequence[str] | None = None, warn: bool = True
    ) -> None:
        if kind not in ("phonemes", "chars"):
            raise ValueError(f"unknown front-end kind {kind!r}; use 'phonemes' or 'chars'")
        self.kind, self.language = kind, language
        self.symbols = list(DEFAULT_SYMBOLS if symbols is None else symbols)
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("symbol vocabulary has duplicates")
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self._warned: set[str] = set()
        self.warn = warn

    @classmethod
    def for_training(cls, kind: str = "phonemes", language: str = "en-us") -> TextFrontend:
        """A new front-end; without espeak-ng a phoneme front-end becomes a character one."""
        if kind == "phonemes" and not espeak_available():
            warnings.warn(
                f"{ESPEAK} not found: training on characters instead of phonemes "
                "(apt-get install espeak-ng for phonemes)",
                stacklevel=2,
            )
            kind = "chars"
        return cls(kind, language)

    def config(self) -> dict:
        return {"kind": self.kind, "language": self.language, "symbols": self.symbols}

    @classmethod
    def from_config(cls, cfg: dict) -> TextFrontend:
        return cls(cfg["kind"], cfg.get("language", "en-us"), cfg["symbols"])

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def _warn_once(self, key: str, message: str) -> None:
        if self.warn and key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=3)

    def to_symbols_many(self, texts: Sequence[str]) -> list[str]:
        """Symbol strings; raises TextError naming the first empty or unspeakable text."""
        for t in texts:
            if not str(t).strip():
                raise TextError("text is empty: nothing to say")
        if self.kind == "phonemes" and espeak_available():
            out = phonemize_many(texts, self.language)
        else:
            if self.kind == "phonemes":
                self._warn_once(
                    "espeak",
                    f"{ESPEAK} not found: using characters instead of phonemes, "
                    "speech will be poor (apt-get install espeak-ng)",
                )
            out = [characters(t) for t in texts]
        for t, s in zip(texts, out):
            if not s:
                raise TextError(f"text {t!r} has no speakable characters (only punctuation or symbols)")
        return out

    def to_symbols(self, text: str) -> str:
        return self.to_symbols_many([text])[0]

    def ids(self, symbols: str) -> list[int]:
        """Ids of a symbol string; symbols outside the vocabulary are dropped with a warning."""
        unknown = sorted({c for c in symbols if c not in self.index})
        if unknown:
            self._warn_once(
                "unk:" + "".join(unknown),
                f"text symbols not in the model's vocabulary, skipped: {' '.join(map(repr, unknown))}",
            )
        ids = [self.index[c] for c in symbols if c in self.index]
        if not any(self.symbols[i] not in " " + PUNCTUATION for i in ids):
            raise TextError(f"no speakable symbol of {symbols!r} is in the model's vocabulary")
        return ids

    def encode(self, text: str) -> list[int]:
        return self.ids(self.to_symbols(text))

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.symbols[i] for i in ids)


__all__ = [
    "DEFAULT_SYMBOLS",
    "PUNCTUATION",
    "TextError",
    "TextFrontend",
    "characters",
    "espeak_available",
    "normalize",
    "phonemize",
    "phonemize_many",
    "split_text",
]
