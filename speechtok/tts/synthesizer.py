"""Text to speech with a token LM (`Synthesizer`).

TTS lays a row out as [phonemes] [sep] [prompt audio] and lets the LM continue the audio:
- with a reference clip *and its transcript*, VALL-E continuation: the source is
  transcript + text and the clip's codes are the start of the audio;
- with a clip alone, a speaker prompt: the source is the text and the first ~3 s of the clip
  (silence trimmed) stand before the target audio, as the recipe trains it;
- with neither, the checkpoint's default voice (a stored clip with its transcript).
A model trained with durations speaks each phoneme for as long as its duration predictor says
(in continuation the transcript's durations are stretched over the clip), so the length of the
speech is known before the first frame. Text whose row would not fit the model's positions is
cut at sentences, then clauses, then words, and its pieces are spoken in one batch and joined
by short pauses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import librosa
import torch
import torch.nn.functional as F

from speechtok.codecs import PRETRAINED_DIR
from speechtok.errors import cannot
from speechtok.lm.checkpoint import CheckpointError
from speechtok.lm.runner import Audio, LMInputError, Runner, load_runner_parts
from speechtok.tts.speaker import VOICE_FRAMES, SpeakerEncoder
from speechtok.tts.text import TextFrontend, split_text


class Synthesizer(Runner):
    """Text to speech with a TTS checkpoint (see the module docstring for the prompt modes)."""

    prompt_seconds = 3.0
    speech_floor_db = -50.0  # a prompt with no 25 ms frame louder than this (RMS, dBFS) is silent
    # seconds of silence where long text was cut, by where: after a sentence, a clause, a word
    pauses: ClassVar[dict[str, float]] = {"sentence": 0.25, "clause": 0.12, "word": 0.04}
    fit_margin = 8  # positions kept free when cutting long text: durations batched may round a frame apart

    def __init__(self, lm, codec, meta: dict, path: Path | None = None) -> None:
        super().__init__(lm, codec, meta, path)
        if meta.get("text") is None:
            raise CheckpointError(cannot("load TTS model from", path, "it has no text vocabulary"))
        self.frontend = TextFrontend.from_config(meta["text"])
        self.default_prompt = meta.get("default_prompt")
        self.speaker_encoder = None
        if lm.cfg.speaker_dim:  # the voice comes from the prompt through the model's own encoder
            if meta.get("speaker_encoder") is None or path is None:
                problem = "it takes a voice but has no speaker encoder"
                raise CheckpointError(cannot("load TTS model from", path, problem))
            self.speaker_encoder = SpeakerEncoder.load(Path(path) / meta["speaker_encoder"]).to(self.device)

    def _voice(self, prompt: torch.Tensor | None, rows: int) -> torch.Tensor | None:
        """The speaker embedding [rows, dim] of the prompt codes [K, P] for a model that takes one."""
        if self.speaker_encoder is None:
            return None
        if prompt is None:
            raise LMInputError("this model speaks in the voice of a prompt; give one (it has no default voice)")
        levels = prompt[None, :, :VOICE_FRAMES].to(self.device)
        return self.speaker_encoder(self.codec.dequantize(levels)).expand(rows, -1)

    def _prompt(self, prompt_wav, prompt_sr, prompt_text) -> tuple[torch.Tensor | None, str, torch.Tensor | None]:
        """Prompt codes [K, P] (or None), the symbols to put before the text ('' if none), and the
        voice a codec that `takes_prompt` decodes with: a waveform [1, 1, T] (None for other codecs)."""
        if prompt_wav is None:
            if prompt_text is not None:
                raise LMInputError("prompt_text given without prompt audio")
            dp = self.default_prompt
            if dp is None:
                return None, "", self._voice_audio(None, "this model has no default voice; give a prompt")
            audio = dp.get("audio")
            voice = self._voice_audio(None if audio is None else audio[None], "the model's default voice has no audio")
            return dp["codes"], dp["symbols"], voice
        if prompt_text is not None:  # continuation: the whole clip, its transcript before the text
            codes, _, wav = self._read(prompt_wav, prompt_sr, "prompt")
            return codes, self.frontend.to_symbols(prompt_text), self._voice_audio(wav, self._no_sound)
        if isinstance(prompt_wav, (str, Path)) and Path(prompt_wav).suffix == ".npz":
            codes, _ = self._encode(prompt_wav, prompt_sr, "prompt")
            wav = None
        else:
            wav = self._audio(prompt_wav, prompt_sr, "prompt")
            n = self.sample_rate // 40  # 25 ms frames
            frames = F.pad(wav[0], (0, -wav.shape[-1] % n)).view(-1, n)
            power = float(frames.square().mean(1).max())
            if power == 0 or 10 * math.log10(power) < self.speech_floor_db:
                level = (
                    "all zeros"
                    if power == 0
                    else f"its loudest 25 ms is at {10 * math.log10(power):.0f} dBFS, "
                    f"below the {self.speech_floor_db:.0f} dBFS of quiet speech"
                )
                raise LMInputError(
                    f"prompt: the clip is silent ({level}); give about 3 s of speech in the voice to use"
                )
            trimmed, _ = librosa.effects.trim(wav[0].numpy(), top_db=40)
            if len(trimmed) < 0.5 * self.sample_rate:
                raise LMInputError(
                    f"prompt: only {len(trimmed) / self.sample_rate:.2f} s of sound after trimming "
                    "silence; give a clip of about 3 s of speech"
                )
            wav = torch.from_numpy(trimmed[: int(self.prompt_seconds * self.sample_rate)])[None]
            codes, _ = self._encode(wav, None, "prompt")
        voice = self._voice_audio(wav, self._no_sound)
        return codes[:, : round(self.prompt_seconds * self.codec.frame_rate)], "", voice

    @property
    def _no_sound(self) -> str:
        return (
            f"prompt: codec '{self.codec.name}' renders the voice from the prompt's sound, and a token "
            "file (.npz) has none; give the prompt as audio"
        )

    def _voice_audio(self, wav: torch.Tensor | None, missing: str) -> torch.Tensor | None:
        """The waveform [1, 1, T] a codec that `takes_prompt` decodes with (`missing`: the error
        without one); None for other codecs, which decode the codes alone."""
        if not self.codec.takes_prompt:
            return None
        if wav is None:
            raise LMInputError(missing)
        return wav.reshape(1, 1, -1)

    @torch.inference_mode()
    def tts_batch(
        self,
        texts: Sequence[str],
        prompt_wav: Audio | None = None,
        *,
        prompt_sr: int | None = None,
        prompt_text: str | None = None,
        seed: int | None = None,
        max_seconds: float | None = None,
        mean_levels: bool | None = None,
        **overrides,
    ) -> list[torch.Tensor]:
        """Waveforms [1, T] at `sample_rate`, one per text, all in the same voice (one batch).
        A text too long for the model's positions is cut at sentence ends, then clause marks, then
        words (`text.split_text`); its pieces are generated in the same batch, with the same prompt
        and seed, and joined by short pauses (`pauses`). `max_seconds` caps each piece.
        `overrides` replace the model's sampling defaults (temperature, top_k, top_p, end_threshold, ...);
        `mean_levels` decodes the model's expected level of each generated frame (see `Enhancer`)."""
        if isinstance(texts, str):
            raise TypeError("tts_batch takes a list of texts; use tts() for one")
        if not texts:
            return []
        mean_levels = self._use_levels(mean_levels)
        prompt, before, voice_wav = self._prompt(prompt_wav, prompt_sr, prompt_text)
        max_len = None if max_seconds is None else max(1, round(max_seconds * self.codec.frame_rate))
        pieces = self._pieces(list(texts), prompt, before, max_len)
        src, src_len, P, prompt_len, timeline = self._rows([t for ps in pieces for t, _ in ps], prompt, before)
        if self.lm.cfg.durations and "durations" not in timeline:
            timeline["durations"] = self.lm.predict_durations(src.to(self.device), src_len.to(self.device))
        voice = self._voice(prompt, len(src_len))
        codes, lengths = self._generate(
            src, src_len, P, prompt_len, seed, overrides, max_len=max_len, min_len=1, speaker=voice, **timeline
        )
        if not mean_levels:
            return self._join(self._decode(codes.cpu(), lengths.cpu(), voice_wav), pieces)
        levels = self._expected_levels(src, src_len, P, codes, lengths, timeline, seed, voice)
        return self._join(
            [
                self.codec.decode_levels(lv[None, :, :n].to(self.codec.device))[0].float().cpu()
                for lv, n in zip(levels, lengths.tolist())
            ],
            pieces,
        )

    def _row_length(self, src, src_len, prompt, timeline: dict, max_len: int | None) -> torch.Tensor:
        """Positions [B] each row takes in the LM (source, prompt, target frames) as generate() counts
        them; beyond the model's max_len it refuses a durations model's row, or cuts another's short."""
        p, cfg = self.lm.pattern, self.lm.cfg
        n_prompt = 0 if prompt is None else prompt.shape[-1]
        if cfg.durations:
            dur = timeline.get("durations")
            if dur is None:
                dur = self.lm.predict_durations(src.to(self.device), src_len.to(self.device))
            frames = dur.sum(1).cpu() - (n_prompt if timeline.get("continue_prompt") else 0)
        else:  # the budget generate() gives a row: its frames per source symbol
            frames = (src_len.double() * cfg.max_len_ratio).ceil().long()
        if max_len is not None:
            frames = frames.clamp(max=max_len)
        return src_len + max(p.tail, 1) + (n_prompt + frames) * p.steps_per_frame

    def _pieces(self, texts: list[str], prompt, before: str, max_len: int | None) -> list[list[tuple[str, str | None]]]:
        """Each text as [(piece, boundary after it)]: itself when its row fits the model's positions
        (all checked as one batch), else cut by `text.split_text` by the positions each piece needs."""
        limit = self.lm.cfg.transformer.max_len - self.fit_margin

        def need(batch: list[str]) -> list[int]:
            src, src_len, P, _, timeline = self._rows(batch, prompt, before)
            return self._row_length(src, src_len, P, timeline, max_len).tolist()

        return [
            [(t, None)] if n <= limit else split_text(t, lambda piece: need([piece])[0] <= limit)
            for t, n in zip(texts, need(texts))
        ]

    def _join(self, wavs: list[torch.Tensor], pieces: list[list[tuple[str, str | None]]]) -> list[torch.Tensor]:
        """One waveform per text: its pieces' waveforms in order, a pause (whole frames) at each cut and
        5 ms fades at the cut edges so they do not click."""
        out, it, fade = [], iter(wavs), torch.linspace(0.0, 1.0, self.sample_rate // 200)
        for text_pieces in pieces:
            parts = [next(it) for _ in text_pieces]
            if len(parts) == 1:
                out.append(parts[0])
                continue
            joined = []
            for i, (wav, (_, boundary)) in enumerate(zip(parts, text_pieces)):
                wav, n = wav.clone(), min(len(fade), wav.shape[-1])
                if i:
                    wav[..., :n] *= fade[:n]
                if boundary is not None:
                    wav[..., wav.shape[-1] - n :] *= fade[:n].flip(0)
                    gap = round(self.pauses[boundary] * self.codec.frame_rate) * self.codec.hop_length
                    joined += [wav, wav.new_zeros(wav.shape[0], gap)]
                else:
                    joined.append(wav)
            out.append(torch.cat(joined, -1))
        return out

    def _expected_levels(self, src, src_len, prompt, codes, lengths, timeline, seed=None, voice=None) -> torch.Tensor:
        """The model's mean level [B, K, T] of each generated frame, scored as training laid the row
        out: after a speaker prompt, or (continuing a clip) with the clip as the start of the target."""
        dev, B = self.device, len(src_len)
        n_prompt = 0 if prompt is None else prompt.shape[-1]
        full = codes if prompt is None else torch.cat([prompt.to(codes), codes], -1)
        total = lengths + n_prompt
        continued = timeline.get("continue_prompt", False)
        durations = timeline.get("durations")
        if durations is not None:  # those of the frames made (max_seconds may have cut them short)
            ends = durations.cumsum(1).clamp(max=(total if continued else lengths)[:, None].to(durations))
            durations = torch.diff(ends, prepend=torch.zeros_like(ends[:, :1]))
        prompt_len = torch.full((B,), 0 if continued else n_prompt)
        levels = self._levels(src, full, src_len, total, prompt_len, durations, seed, voice)
        idx = (n_prompt + torch.arange(codes.shape[-1], device=dev)).clamp(max=levels.shape[-1] - 1)
        return levels[..., idx].cpu()

    def inputs(
        self,
        texts: Sequence[str],
        prompt_wav: Audio | None = None,
        prompt_sr: int | None = None,
        prompt_text: str | None = None,
    ) -> tuple:
        """The LM's inputs for `texts` in one voice: source ids [B, L], their lengths [B], prompt
        codes [B, K, P] and lengths [B] (both None without a prompt), and generate()'s timeline
        keywords (rate, continue_prompt) for a continued clip."""
        return self._rows(texts, *self._prompt(prompt_wav, prompt_sr, prompt_text)[:2])

    def _rows(self, texts: Sequence[str], prompt: torch.Tensor | None, before: str) -> tuple:
        """`inputs` for prompt codes [K, P] (or None) and the symbols before the text."""
        symbols = self.frontend.to_symbols_many(list(texts))
        ids = [self.frontend.ids((before + " " + s) if before else s) for s in symbols]
        src_len = torch.tensor([len(i) for i in ids])
        src = torch.zeros(len(ids), int(src_len.max()), dtype=torch.long)
        for row, i in zip(src, ids):
            row[: len(i)] = torch.tensor(i)
        P = prompt_len = None
        if prompt is not None:
            P = prompt[None].expand(len(ids), -1, -1)
            prompt_len = torch.full((len(ids),), prompt.shape[-1])
        timeline = {}
        if before and prompt is not None and self.lm.cfg.durations:
            # continuation: the clip's transcript lasts exactly the clip, the text as long as predicted
            timeline = {
                "durations": self._continued_durations(
                    src, src_len, len(self.frontend.ids(before + " ")), prompt.shape[-1]
                ),
                "continue_prompt": True,
            }
        elif before and prompt is not None and self.lm.cfg.aligned_positions:
            # continuation: the clip starts the target's timeline, and its transcript gives the speaking rate
            rate = self.lm.pattern.frame_step(prompt.shape[-1]) / (len(self.frontend.ids(before)) + 1)
            timeline = {"rate": rate, "continue_prompt": True}
        return src, src_len, P, prompt_len, timeline

    def _continued_durations(self, src, src_len, n_before: int, n_frames: int) -> torch.Tensor:
        """Predicted durations [B, L] with the first n_before (the prompt's transcript) rescaled to
        fill the prompt's n_frames, so the text starts where the clip ends; the text keeps the
        predicted pace, scaled by the clip's (how fast this speaker talks, within 1.5x either way:
        the clip's pauses count too)."""
        if n_before > n_frames:
            raise LMInputError(
                f"prompt: {n_frames} frames cannot hold the {n_before} symbols of its transcript; "
                "give the clip's own transcript, or a longer clip"
            )
        dev = self.device
        d = self.lm.predict_durations(src.to(dev), src_len.to(dev)).float()
        pace = n_frames / d[:, :n_before].sum(1, keepdim=True).clamp(min=1)
        cum = (d[:, :n_before].cumsum(1) * pace).round().clamp(max=n_frames)  # ends within the clip
        head = torch.diff(cum, prepend=torch.zeros_like(cum[:, :1]))
        if bool((head < 1).any()):  # rounding left a symbol no frame: spread them evenly
            head = torch.full_like(head, n_frames // n_before)
            head[:, -1] += n_frames - head.sum(1)
        tail = (d[:, n_before:] * pace.clamp(1 / 1.5, 1.5)).round().clamp(min=1)
        tail = tail * (torch.arange(n_before, d.shape[1], device=dev)[None] < src_len.to(dev)[:, None])
        return torch.cat([head, tail], 1).long()

    def tts(
        self,
        text: str,
        prompt_wav: Audio | None = None,
        *,
        prompt_sr: int | None = None,
        prompt_text: str | None = None,
        seed: int | None = None,
        **kw,
    ) -> torch.Tensor:
        """Speak `text`; returns a waveform [1, T] at `sample_rate`."""
        return self.tts_batch([text], prompt_wav, prompt_sr=prompt_sr, prompt_text=prompt_text, seed=seed, **kw)[0]


def load_tts(
    name_or_path: str | Path | None = None,
    codec=None,
    device: str | torch.device = "cpu",
    folder: str | Path = PRETRAINED_DIR,
) -> Synthesizer:
    """A Synthesizer from a bundled name ('tts-dmel-16k'), a folder, or (None) the model for `codec`
    (any bundled one when codec is None too). `codec` (name or Codec) overrides the decoder."""
    lm, meta, codec, path = load_runner_parts("tts", name_or_path, codec, device, folder)
    return Synthesizer(lm, codec, meta, path)


__all__ = ["Synthesizer", "load_tts"]
