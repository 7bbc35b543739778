"""Long recordings cut between words into pieces of a few seconds, each with its own transcript.

LibriSpeech here has one long utterance per speaker and the crowd interviews one clip each, so a
TTS prompt "another utterance by the same speaker" has nothing to draw from. Cut at Whisper's word
boundaries (`WhisperJudge.words`), one recording gives several pieces of the same voice: prompts
for each other in training, and prompt/target pairs of unseen voices for evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from speechtok.data.audio import load_audio
from speechtok.data.manifest import Utterance


def word_pieces(
    words: list[tuple[str, float, float]], duration: float, min_seconds: float, max_seconds: float
) -> list[tuple[float, float, str]]:
    """(start s, end s, text) pieces covering `words` in order: where the rest no longer fits in
    `max_seconds`, a piece ends after the word, among those that make it at least `min_seconds`
    long and keep it within `max_seconds`, that the longest pause follows (between sentences rather
    than at a comma, however Whisper's timestamps fall). Cuts fall in the middle of the pause
    between words; a last piece shorter than `min_seconds` joins the one before (or is dropped if
    that makes it longer than 1.5 x `max_seconds`)."""
    groups, i, n = [], 0, len(words)
    while i < n:
        start, j = words[i][1], i + 1
        while j < n and words[j][2] - start <= max_seconds:
            j += 1
        if j == n:  # the rest fits in one piece
            groups.append(words[i:])
            break
        long_enough = [k for k in range(i, j) if words[k][2] - start >= min_seconds] or [j - 1]
        k = max(long_enough, key=lambda k: words[k + 1][1] - words[k][2])
        groups.append(words[i : k + 1])
        i = k + 1
    if len(groups) > 1 and groups[-1][-1][2] - groups[-1][0][1] < min_seconds:
        tail = groups.pop()
        if tail[-1][2] - groups[-1][0][1] <= 1.5 * max_seconds:
            groups[-1] = groups[-1] + tail
    pieces = []
    for k, g in enumerate(groups):
        before = groups[k - 1][-1][2] if k else max(0.0, g[0][1] - 0.3)
        after = groups[k + 1][0][1] if k + 1 < len(groups) else min(duration, g[-1][2] + 0.3)
        start = (before + g[0][1]) / 2 if k else before
        end = (g[-1][2] + after) / 2 if k + 1 < len(groups) else after
        pieces.append((round(start, 3), round(end, 3), " ".join(w for w, _, _ in g)))
    return [p for p in pieces if min_seconds <= p[1] - p[0] <= 1.5 * max_seconds]


def cut_pieces(
    utts: list[Utterance],
    out: Path,
    asr,
    min_seconds: float,
    max_seconds: float,
    sample_rate: int = 16000,
    progress: bool = True,
) -> list[Utterance]:
    """Pieces of every utterance at least 2 x `min_seconds` long, as FLAC under `out/<split>/` and
    Utterances (same speaker and split, Whisper's text, `source_id` the recording). Whisper's
    words are cached in `out/words.json`, so a second run only cuts what is missing."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    cache = out / "words.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    pieces = []
    for n, u in enumerate(
        tqdm([u for u in utts if u.duration >= 2 * min_seconds], desc="pieces", disable=not progress)
    ):
        wav = None
        if u.ID not in known:
            wav = load_audio(u.path, sample_rate)[0].numpy()
            known[u.ID] = asr.words(wav, sample_rate)
            if n % 20 == 19:
                cache.write_text(json.dumps(known))
        for k, (start, end, text) in enumerate(word_pieces(known[u.ID], u.duration, min_seconds, max_seconds)):
            path = out / u.split / f"{u.ID}_p{k}.flac"
            if not path.exists():
                wav = load_audio(u.path, sample_rate)[0].numpy() if wav is None else wav
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, wav[int(start * sample_rate) : int(end * sample_rate)].astype(np.float32), sample_rate)
            pieces.append(
                Utterance(
                    f"{u.ID}_p{k}",
                    str(path),
                    round(end - start, 4),
                    u.speaker or u.ID,
                    text,
                    split=u.split,
                    extra={"source_id": u.ID, "text_source": "whisper-tiny.en"},
                )
            )
    cache.write_text(json.dumps(known))
    return pieces
