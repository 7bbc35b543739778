"""Use trained token LMs: text-to-speech (`Synthesizer`) and speech enhancement (`Enhancer`).

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
Enhancement encodes the noisy waveform, generates clean codes of the same length (long
inputs in chunks that fit the model) and decodes them, or applies them to the noisy input as
per-band gains (`render="mixture"`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import librosa
import torch
import torch.nn.functional as F

from speechtok.codecs import PRETRAINED_DIR, load_codec
from speechtok.data.audio import AudioError, check_waveform, load_audio
from speechtok.lm.checkpoint import CheckpointError, is_lm_folder, load_lm, read_lm_config
from speechtok.lm.refiner import GainRefiner
from speechtok.lm.text import TextError, TextFrontend, split_text
from speechtok.tokens import TokenFileError, codec_hash, load_tokens

Audio = str | Path | torch.Tensor


class LMInputError(ValueError):
    """Bad input to TTS or enhancement (prompt, audio, length); the message says what to change."""


def available_models(task: str | None = None, folder: str | Path = PRETRAINED_DIR) -> list[str]:
    """Names of the bundled LMs (e.g. 'tts-dmel-16k'), optionally of one task."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = []
    for p in sorted(folder.iterdir()):
        if is_lm_folder(p):
            try:
                if task is None or read_lm_config(p)["task"] == task:
                    names.append(p.name)
            except CheckpointError:
                continue
    return names


def _resolve(task: str, name_or_path, codec, folder: Path) -> tuple[Path, object]:
    """The model folder and the codec to decode with (a name, a Codec, or None: the model's own)."""
    if name_or_path is not None:
        path = Path(name_or_path)
        if is_lm_folder(path):
            return path, codec
        if is_lm_folder(folder / str(name_or_path)):
            return folder / str(name_or_path), codec
        raise CheckpointError(f"unknown model '{name_or_path}': not a bundled name and not a model folder. "
                              f"Bundled {task} models: {', '.join(available_models(task, folder)) or 'none'}")
    names = available_models(task, folder)
    if not names:
        raise CheckpointError(f"no {task} model is bundled in {folder}; train one with recipes/lm/train.py "
                              f"(recipes/lm/{task}/hparams) or pass a model folder")
    if codec is None:
        return folder / names[0], None
    codec = load_codec(codec) if isinstance(codec, (str, Path)) else codec
    own = folder / f"{task}-{codec.name}"
    if is_lm_folder(own):
        return own, codec
    for n in names:  # a model trained on a codec with the same codes (e.g. another decoder)
        if read_lm_config(folder / n)["codec"]["hash"] == codec_hash(codec):
            return folder / n, codec
    raise CheckpointError(f"no bundled {task} model for codec '{codec.name}'; bundled: {', '.join(names)}")


def _load(task: str, name_or_path, codec, device, folder):
    path, codec = _resolve(task, name_or_path, codec, Path(folder))
    meta = read_lm_config(path)
    if meta["task"] != task:
        raise CheckpointError(f"{path}: is a {meta['task']} model, not {task}")
    if codec is None:
        codec = load_codec(meta["codec"]["name"], device=device)
    elif isinstance(codec, (str, Path)):
        codec = load_codec(codec, device=device)
    lm, meta = load_lm(path, codec, device=device)
    return lm, meta, codec.to(device).eval(), path


class _Runner:
    def __init__(self, lm, codec, meta: dict, path: Path | None = None) -> None:
        self.lm, self.codec, self.meta, self.path = lm, codec, meta, path
        self.sampling = {"temperature": 1.0, "top_k": None, "top_p": None, "rep_window": 0, **meta.get("sampling", {})}
        self.mean_levels = bool(self.sampling.pop("mean_levels", False))
        self.set_level_dropout(self.sampling.pop("level_passes", 1), self.sampling.pop("level_blank", 0.0))

    def set_level_dropout(self, passes: int | None = None, blank: float | None = None) -> None:
        """Mean levels as the average over `passes` passes that each blank a `blank` share of the
        frames (`TokenLM.expected_codes`); None keeps the current value."""
        passes = getattr(self, "level_passes", 1) if passes is None else int(passes)
        blank = getattr(self, "level_blank", 0.0) if blank is None else float(blank)
        if passes < 1 or not 0.0 <= blank < 1.0:
            raise LMInputError(f"level dropout needs passes >= 1 and a blank share in [0, 1), "
                               f"got {passes} and {blank}")
        self.level_passes, self.level_blank = passes, blank

    def _levels(self, src, codes, src_len, code_len, prompt_len=None, durations=None, seed=None) -> torch.Tensor:
        """The LM's expected levels of `codes`, with the model's test-time frame dropout, seeded."""
        dev = self.device
        return self.lm.expected_codes(src.to(dev), codes.to(dev), src_len.to(dev), code_len.to(dev),
                                      None if prompt_len is None else prompt_len.to(dev), durations,
                                      blank_share=self.level_blank, passes=self.level_passes,
                                      generator=torch.Generator().manual_seed(0 if seed is None else seed))

    def _use_levels(self, mean_levels: bool | None) -> bool:
        """Whether to decode mean levels (the caller's choice, else the model's default)."""
        mean_levels = self.mean_levels if mean_levels is None else mean_levels
        if mean_levels and not hasattr(self.codec, "decode_levels"):
            raise LMInputError(f"mean_levels: codec '{self.codec.name}' has no ordinal levels to average "
                               "(only dMel codecs do); decode the codes themselves (mean_levels=False)")
        return mean_levels

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def _audio(self, audio: Audio, sr: int | None, what: str) -> torch.Tensor:
        """Mono waveform [1, T] at the codec's rate: files are resampled, tensors must already be there."""
        if isinstance(audio, (str, Path)):
            return load_audio(audio, self.sample_rate)
        if not torch.is_tensor(audio):
            raise LMInputError(f"{what}: expected a file path or a waveform tensor, got {type(audio).__name__}")
        if sr is not None and int(sr) != self.sample_rate:
            raise LMInputError(f"{what}: audio is at {sr} Hz but codec '{self.codec.name}' needs {self.sample_rate} "
                               "Hz; resample it (speechtok.data.audio.resample) or pass the file path")
        wav = audio.float()
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() != 2 or wav.shape[0] != 1:
            raise LMInputError(f"{what}: expected mono audio [T] or [1, T], got {tuple(audio.shape)}")
        return check_waveform(wav, what)

    def _codes_from_file(self, path: Path, what: str) -> torch.Tensor:
        tf = load_tokens(path)
        if tf.codec_hash != codec_hash(self.codec):
            raise TokenFileError(f"{path}: {what} tokens were made by codec '{tf.codec}' (hash {tf.codec_hash}), "
                                 f"whose codes differ from those of '{self.codec.name}' that this model uses; "
                                 f"encode the audio again with --codec {self.codec.name}, or pass the audio file")
        return torch.from_numpy(tf.codes.astype("int64"))

    def _read(self, audio: Audio, sr: int | None, what: str) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        """Codes [K, F], length in samples and waveform [1, T] (None for a token file, .npz)."""
        if isinstance(audio, (str, Path)) and Path(audio).suffix == ".npz":
            codes = self._codes_from_file(Path(audio), what)
            return codes, codes.shape[-1] * self.codec.hop_length, None
        wav = self._audio(audio, sr, what)
        return self.codec.encode(wav[None].to(self.codec.device))[0].long().cpu(), wav.shape[-1], wav

    def _encode(self, audio: Audio, sr: int | None, what: str) -> tuple[torch.Tensor, int]:
        """Codes [K, F] and length in samples of a waveform, path or token file (.npz)."""
        return self._read(audio, sr, what)[:2]

    def _decode(self, codes: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for c, n in zip(codes, lengths.tolist()):  # n >= 1: generation runs with min_len >= 1
            wav = self.codec.decode(c[None, :, :n].to(self.codec.device))[0].float().cpu()
            out.append(wav[:, : n * self.codec.hop_length])
        return out

    def _generate(self, src, src_len, prompt, prompt_len, seed, overrides, **kw):
        opts = {**self.sampling, **{k: v for k, v in overrides.items() if v is not None}}
        dev = self.device
        try:
            return self.lm.generate(src.to(dev), src_len.to(dev), None if prompt is None else prompt.to(dev),
                                    None if prompt_len is None else prompt_len.to(dev), seed=seed, **opts, **kw)
        except ValueError as exc:
            if "too long" in str(exc):
                raise LMInputError(f"input too long for this model ({exc}); split it into shorter pieces") from exc
            raise


class Synthesizer(_Runner):
    """Text to speech with a TTS checkpoint (see the module docstring for the prompt modes)."""

    prompt_seconds = 3.0
    speech_floor_db = -50.0  # a prompt with no 25 ms frame louder than this (RMS, dBFS) is silent
    # seconds of silence where long text was cut, by where: after a sentence, a clause, a word
    pauses: ClassVar[dict[str, float]] = {"sentence": 0.25, "clause": 0.12, "word": 0.04}
    fit_margin = 8  # positions kept free when cutting long text: durations batched may round a frame apart

    def __init__(self, lm, codec, meta: dict, path: Path | None = None) -> None:
        super().__init__(lm, codec, meta, path)
        if meta.get("text") is None:
            raise CheckpointError(f"{path}: TTS checkpoint has no text vocabulary")
        self.frontend = TextFrontend.from_config(meta["text"])
        self.default_prompt = meta.get("default_prompt")

    def _prompt(self, prompt_wav, prompt_sr, prompt_text) -> tuple[torch.Tensor | None, str]:
        """Prompt codes [K, P] (or None) and the symbols to put before the text ('' if none)."""
        if prompt_wav is None:
            if prompt_text is not None:
                raise LMInputError("prompt_text given without prompt audio")
            dp = self.default_prompt
            return (None, "") if dp is None else (dp["codes"], dp["symbols"])
        if prompt_text is not None:  # continuation: the whole clip, its transcript before the text
            codes, _ = self._encode(prompt_wav, prompt_sr, "prompt")
            return codes, self.frontend.to_symbols(prompt_text)
        if isinstance(prompt_wav, (str, Path)) and Path(prompt_wav).suffix == ".npz":
            codes, _ = self._encode(prompt_wav, prompt_sr, "prompt")
        else:
            wav = self._audio(prompt_wav, prompt_sr, "prompt")
            n = self.sample_rate // 40  # 25 ms frames
            frames = F.pad(wav[0], (0, -wav.shape[-1] % n)).view(-1, n)
            power = float(frames.square().mean(1).max())
            if power == 0 or 10 * math.log10(power) < self.speech_floor_db:
                level = ("all zeros" if power == 0 else f"its loudest 25 ms is at {10 * math.log10(power):.0f} dBFS, "
                         f"below the {self.speech_floor_db:.0f} dBFS of quiet speech")
                raise LMInputError(f"prompt: the clip is silent ({level}); give about 3 s of speech in the voice "
                                   "to use")
            trimmed, _ = librosa.effects.trim(wav[0].numpy(), top_db=40)
            if len(trimmed) < 0.5 * self.sample_rate:
                raise LMInputError(f"prompt: only {len(trimmed) / self.sample_rate:.2f} s of sound after trimming "
                                   "silence; give a clip of about 3 s of speech")
            wav = torch.from_numpy(trimmed[: int(self.prompt_seconds * self.sample_rate)])[None]
            codes, _ = self._encode(wav, None, "prompt")
        return codes[:, : round(self.prompt_seconds * self.codec.frame_rate)], ""

    @torch.inference_mode()
    def tts_batch(self, texts: Sequence[str], prompt_wav: Audio | None = None, *, prompt_sr: int | None = None,
                  prompt_text: str | None = None, seed: int | None = None, max_seconds: float | None = None,
                  mean_levels: bool | None = None, **overrides) -> list[torch.Tensor]:
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
        prompt, before = self._prompt(prompt_wav, prompt_sr, prompt_text)
        max_len = None if max_seconds is None else max(1, round(max_seconds * self.codec.frame_rate))
        pieces = self._pieces(list(texts), prompt, before, max_len)
        src, src_len, P, prompt_len, timeline = self._rows([t for ps in pieces for t, _ in ps], prompt, before)
        if self.lm.cfg.durations and "durations" not in timeline:
            timeline["durations"] = self.lm.predict_durations(src.to(self.device), src_len.to(self.device))
        codes, lengths = self._generate(src, src_len, P, prompt_len, seed, overrides, max_len=max_len, min_len=1,
                                        **timeline)
        if not mean_levels:
            return self._join(self._decode(codes.cpu(), lengths.cpu()), pieces)
        levels = self._expected_levels(src, src_len, P, codes, lengths, timeline, seed)
        return self._join([self.codec.decode_levels(lv[None, :, :n].to(self.codec.device))[0].float().cpu()
                           for lv, n in zip(levels, lengths.tolist())], pieces)

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

        return [[(t, None)] if n <= limit else split_text(t, lambda piece: need([piece])[0] <= limit)
                for t, n in zip(texts, need(texts))]

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
                    wav[..., wav.shape[-1] - n:] *= fade[:n].flip(0)
                    gap = round(self.pauses[boundary] * self.codec.frame_rate) * self.codec.hop_length
                    joined += [wav, wav.new_zeros(wav.shape[0], gap)]
                else:
                    joined.append(wav)
            out.append(torch.cat(joined, -1))
        return out

    def _expected_levels(self, src, src_len, prompt, codes, lengths, timeline, seed=None) -> torch.Tensor:
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
        levels = self._levels(src, full, src_len, total, prompt_len, durations, seed)
        idx = (n_prompt + torch.arange(codes.shape[-1], device=dev)).clamp(max=levels.shape[-1] - 1)
        return levels[..., idx].cpu()

    def inputs(self, texts: Sequence[str], prompt_wav: Audio | None = None, prompt_sr: int | None = None,
               prompt_text: str | None = None) -> tuple:
        """The LM's inputs for `texts` in one voice: source ids [B, L], their lengths [B], prompt
        codes [B, K, P] and lengths [B] (both None without a prompt), and generate()'s timeline
        keywords (rate, continue_prompt) for a continued clip."""
        return self._rows(texts, *self._prompt(prompt_wav, prompt_sr, prompt_text))

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
            timeline = {"durations": self._continued_durations(src, src_len, len(self.frontend.ids(before + " ")),
                                                               prompt.shape[-1]), "continue_prompt": True}
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
            raise LMInputError(f"prompt: {n_frames} frames cannot hold the {n_before} symbols of its transcript; "
                               "give the clip's own transcript, or a longer clip")
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

    def tts(self, text: str, prompt_wav: Audio | None = None, *, prompt_sr: int | None = None,
            prompt_text: str | None = None, seed: int | None = None, **kw) -> torch.Tensor:
        """Speak `text`; returns a waveform [1, T] at `sample_rate`."""
        return self.tts_batch([text], prompt_wav, prompt_sr=prompt_sr, prompt_text=prompt_text, seed=seed, **kw)[0]


class Enhancer(_Runner):
    """Noisy speech in, clean speech out, token to token.

    With `mean_levels` (the model's `sampling.mean_levels`, for codecs whose codes are ordinal
    levels and that offer `decode_levels`, i.e. dMel) the generated codes are decoded not as they
    are but as the model's expected level per channel, scored in one more parallel pass: a finer
    estimate than the 16-level codes (for the stage-4 enhancer on the 0-10 dB dev pairs: STOI
    +0.013, PESQ-wb +0.02; recipes/lm/README.md). `sampling.level_passes` / `level_blank` average
    that pass over several with frame dropout (`TokenLM.expected_codes`; stage 7, 0-10 dB: 4
    passes at 0.5 gave PESQ-wb +0.018, STOI +0.006). `sampling.input_gains_db` enhances each
    waveform also at other gains, a fraction of a level apart, and averages the outputs, each
    scaled back: the source codes quantise the input coarsely (dMel: 0.9 nat, 7.8 dB a level),
    and each gain rounds it differently, so the average sees it more finely than one set of codes
    does (test-time augmentation; the rows run as one batch). Token-file inputs are enhanced once.

    `render` (the model's `sampling.render`) says how the clean tokens become audio: "codec"
    decodes them; "mixture" (codecs with `filter_mixture`, i.e. dMel) applies them as per-band
    gains to the noisy input itself, which keeps its phase and fine structure (stage-6 enhancer,
    0-10 dB: PESQ-wb 1.35 -> 1.54, STOI 0.807 -> 0.860). A token-file input has no waveform:
    it is decoded by the codec, with a warning unless "mixture" was asked for explicitly (an
    error then).

    A model folder may also hold a `GainRefiner` (`speechtok.lm.refiner`): with "mixture" and mean
    levels, it turns the rows' levels at all input gains, beside the fine noisy log-mel, into the
    band gains at once, instead of averaging each row's filtered waveform (`refine=False` does
    that). Shipped stage 9, four draws of 0-10 dB pairs: PESQ-wb +0.402 -> +0.430 over the noisy
    input (recipes/lm/README.md)."""

    RENDERS = ("codec", "mixture")

    def __init__(self, lm, codec, meta: dict, path: Path | None = None) -> None:
        super().__init__(lm, codec, meta, path)
        self.render = self.sampling.pop("render", "codec")
        self.input_gains_db = [0.0]
        self.set_input_gains(self.sampling.pop("input_gains_db", None))
        refiner = meta.get("refiner")
        self.refiner = None if refiner is None else GainRefiner.load(path, refiner["config"]).to(codec.device)

    def _use_refiner(self, refine: bool | None) -> bool:
        """Whether to filter through the gain refiner (the caller's choice, else whenever there is one)."""
        if refine and self.refiner is None:
            raise LMInputError(f"{self.path}: this model has no gain refiner "
                               "(recipes/lm/enhance/train_refiner.py trains one)")
        return self.refiner is not None if refine is None else refine

    def set_input_gains(self, gains_db: Sequence[float] | None) -> None:
        """Enhance each waveform at these gains (dB) and average the outputs, each scaled back
        (see the class docstring); [0.0] is the input as it is, None keeps the current gains."""
        if gains_db is None:
            return
        gains = [float(g) for g in gains_db]
        if not gains or not all(math.isfinite(g) and abs(g) <= 40 for g in gains):
            raise LMInputError(f"input gains must be a non-empty list of finite dB values within +-40, got {gains_db}")
        self.input_gains_db = gains

    def _use_render(self, render: str | None) -> str:
        """The caller's rendering, else the model's default; checked against the codec."""
        render = self.render if render is None else render
        if render not in self.RENDERS:
            raise LMInputError(f"render must be one of {', '.join(self.RENDERS)}, got {render!r}")
        if render == "mixture" and not hasattr(self.codec, "filter_mixture"):
            raise LMInputError(f"render='mixture': codec '{self.codec.name}' cannot apply its tokens to a "
                               "waveform (only dMel codecs can); use render='codec'")
        return render

    @property
    def chunk_frames(self) -> int:
        """Source frames per chunk: what fits the model's positions, and no longer than the crops it
        was trained on (`training.crop_frames`): the aligned source frame then sits at a distance
        the model has seen."""
        p = self.lm.pattern
        fits = (self.lm.cfg.transformer.max_len - max(p.tail, 1)) // (1 + p.steps_per_frame) - 1
        return min(fits, int(self.meta.get("training", {}).get("crop_frames") or fits))

    @torch.inference_mode()
    def enhance_batch(self, wavs: Sequence[Audio], sr: int | None = None, seed: int | None = None,
                      mean_levels: bool | None = None, render: str | None = None, refine: bool | None = None,
                      **overrides) -> list[torch.Tensor]:
        """Enhanced waveforms [1, T] (same length as each input, at `sample_rate`); `mean_levels`,
        `render` and `refine` override the model's defaults (see the class docstring)."""
        mean_levels, chosen = self._use_levels(mean_levels), self._use_render(render)
        refine = self._use_refiner(refine) and chosen == "mixture" and mean_levels
        items = [self._read(w, sr, f"input {i}" if not isinstance(w, (str, Path)) else str(w))
                 for i, w in enumerate(wavs)]
        for w, (_, _, mixture) in zip(wavs, items):
            if chosen == "mixture" and mixture is None:
                if render == "mixture":
                    raise LMInputError(f"{w}: render='mixture' needs the noisy waveform, and a token file "
                                       "has none; pass the audio file, or use render='codec'")
                warnings.warn(f"{w}: a token file has no waveform to filter; decoding its clean tokens "
                              "with the codec instead", stacklevel=2)
        results = []
        for item, runs in zip(items, self._generate_rows(items, seed, overrides, mean_levels)):
            if refine and item[2] is not None:
                results.append(self._refined(item, [self._targets(out, scale) for _, scale, out in runs]))
            else:  # each row rendered, scaled back, averaged
                wavs_back = [self._render(out, row, chosen, mean_levels) / scale for row, scale, out in runs]
                results.append(sum(wavs_back) / len(wavs_back))
        return results

    @torch.inference_mode()
    def refiner_inputs(self, wav: Audio, sr: int | None = None,
                       seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """What a `GainRefiner` reads for one noisy waveform: its log-mel [M, F] and the clean log-mel
        targets [R, M, F] of its rows at the R input gains, each in the unscaled input's terms
        (`recipes/lm/enhance/train_refiner.py` collects them)."""
        self._use_levels(True)
        item = self._read(wav, sr, str(wav) if isinstance(wav, (str, Path)) else "input")
        if item[2] is None:
            raise LMInputError(f"{wav}: the refiner reads the noisy waveform, and a token file has none")
        (runs,) = self._generate_rows([item], seed, {}, mean_levels=True)
        targets = torch.stack([self._targets(out, scale) for _, scale, out in runs])
        return self._noisy_log_mel(item[2], targets.shape[-1])[0], targets

    def _generate_rows(self, items: list, seed, overrides: dict, mean_levels: bool) -> list[list]:
        """Each input at each of the input gains as a row (token files once), all generated as one
        batch; per input its rows as (row, scale, codes or mean levels [K, F])."""
        rows, scales, origin = [], [], []
        for j, (codes, n, mix) in enumerate(items):
            for db in self.input_gains_db if mix is not None else [0.0]:
                scale = 10.0 ** (db / 20)
                louder = None if mix is None else mix * scale
                scaled = codes if scale == 1.0 else self.codec.encode(louder[None].to(self.codec.device))[0]
                rows.append((scaled.long().cpu(), n, louder))
                scales.append(scale)
                origin.append(j)
        src, src_len, owner = self._chunks([codes for codes, _, _ in rows])
        out, lengths = self._generate(src, src_len, None, None, seed, overrides, min_len=int(src_len.min()))
        out = out[..., : int(src_len.max())].cpu()
        out = F.pad(out, (0, int(src_len.max()) - out.shape[-1]))
        for i, (n, got) in enumerate(zip(src_len.tolist(), lengths.cpu().clamp(max=src_len).tolist())):
            if got < n:  # the row ended early: hold its last frame to keep the input's length
                out[i, :, got:n] = out[i, :, got - 1 : got] if got else 0
        if mean_levels:
            out = self._levels(src, out, src_len, src_len, seed=seed).cpu()
        per_input = [[] for _ in items]
        for r, (row, scale, j) in enumerate(zip(rows, scales, origin)):  # a row's chunks stitched back
            full = torch.cat([out[i, :, : src_len[i]] for i in range(len(owner)) if owner[i] == r], -1)
            per_input[j].append((row, scale, full))
        return per_input

    def _targets(self, levels: torch.Tensor, scale: float) -> torch.Tensor:
        """Mean levels [M, F] of a row as clean log-mel in the unscaled input's terms."""
        return self.codec.dequantize(levels.float().clamp(0, self.codec.codebook_size - 1)) - math.log(scale)

    def _noisy_log_mel(self, mixture: torch.Tensor, frames: int) -> torch.Tensor:
        """Log-mel [1, M, frames] of a waveform [1, T], framed as the codes are."""
        x = F.pad(mixture[None], (0, frames * self.codec.hop_length - mixture.shape[-1]))
        return self.codec.log_mel(x.to(self.codec.device)).cpu()

    def _refined(self, item, targets: list[torch.Tensor]) -> torch.Tensor:
        """One input's waveform [1, T] filtered by the refiner's gains over all its rows."""
        _, n_samples, mixture = item
        stacked = torch.stack(targets)[None]
        log_gain = self.refiner(self._noisy_log_mel(mixture, stacked.shape[-1]), stacked)
        wav = self.codec.apply_band_gains(mixture[None].to(self.codec.device), log_gain.exp().to(self.codec.device))
        return wav[0].float().cpu()[:, :n_samples]

    def _chunks(self, sources: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Every input cut into equal chunks that fit (no short tail chunk with little context), as
        one batch [N, K, F] with lengths [N] and each chunk's input index."""
        pieces, owner = [], []
        for j, codes in enumerate(sources):
            n = codes.shape[-1]
            size = -(-n // -(-n // self.chunk_frames))  # ceil(n / number of chunks)
            for s in range(0, n, size):
                pieces.append(codes[:, s : s + size])
                owner.append(j)
        src_len = torch.tensor([p.shape[-1] for p in pieces])
        src = torch.zeros(len(pieces), pieces[0].shape[0], int(src_len.max()), dtype=torch.long)
        for row, p in zip(src, pieces):
            row[:, : p.shape[-1]] = p
        return src, src_len, owner

    def _render(self, full: torch.Tensor, item, chosen: str, mean_levels: bool) -> torch.Tensor:
        """A row's waveform [1, T] (item: its codes, length, waveform) from its codes or levels [K, F]."""
        _, n_samples, mixture = item
        dev = self.codec.device
        if chosen == "mixture" and mixture is not None:
            wav = self.codec.filter_mixture(mixture[None].to(dev), full[None].to(dev))[0].float().cpu()
        elif mean_levels:
            wav = self.codec.decode_levels(full[None].to(dev))[0].float().cpu()
        else:
            wav = self._decode(full[None], torch.tensor([full.shape[-1]]))[0]
        return F.pad(wav, (0, max(n_samples - wav.shape[-1], 0)))[:, :n_samples]

    def enhance(self, wav: Audio, sr: int | None = None, seed: int | None = None, mean_levels: bool | None = None,
                render: str | None = None, refine: bool | None = None, **overrides) -> torch.Tensor:
        """Enhance one waveform [T]/[1, T] (at `sample_rate`, or say `sr` to be checked), path or token file."""
        return self.enhance_batch([wav], sr=sr, seed=seed, mean_levels=mean_levels, render=render, refine=refine,
                                  **overrides)[0]


def load_tts(name_or_path: str | Path | None = None, codec=None, device: str | torch.device = "cpu",
             folder: str | Path = PRETRAINED_DIR) -> Synthesizer:
    """A Synthesizer from a bundled name ('tts-dmel-16k'), a folder, or (None) the model for `codec`
    (any bundled one when codec is None too). `codec` (name or Codec) overrides the decoder."""
    lm, meta, codec, path = _load("tts", name_or_path, codec, device, folder)
    return Synthesizer(lm, codec, meta, path)


def load_enhancer(name_or_path: str | Path | None = None, codec=None, device: str | torch.device = "cpu",
                  folder: str | Path = PRETRAINED_DIR) -> Enhancer:
    lm, meta, codec, path = _load("enhance", name_or_path, codec, device, folder)
    return Enhancer(lm, codec, meta, path)


__all__ = ["AudioError", "CheckpointError", "Enhancer", "LMInputError", "Synthesizer", "TextError",
           "TokenFileError", "available_models", "load_enhancer", "load_tts"]
