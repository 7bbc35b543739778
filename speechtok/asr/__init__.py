"""Speech recognition through a codec's tokens: a small CTC head over the codes (`speechtok transcribe`)."""

from speechtok.asr.ctc import ALPHABET, ASRError, TokenCTC, Transcriber, has_digits, load_transcriber, text_for_ctc

__all__ = ["ALPHABET", "ASRError", "TokenCTC", "Transcriber", "has_digits", "load_transcriber", "text_for_ctc"]
