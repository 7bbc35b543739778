"""What the task runners share: find and load a token LM with its codec (`load_runner_parts`), read
its sampling and render defaults, turn audio into codes and back, and score mean levels
(`Runner`). The runners are `speechtok.tts.Synthesizer` and `speechtok.enhance.Enhancer`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from speechtok.codecs import PRETRAINED_DIR, DMelCodec, load_codec
from speechtok.data.audio import check_waveform, load_audio
from speechtok.errors import cannot
from speechtok.lm.checkpoint import CheckpointError, is_lm_folder, load_lm, read_lm_config, split_render
from speechtok.lm.sampling import SamplingConfig
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
        raise CheckpointError(
            f"unknown model '{name_or_path}': not a bundled name and not a model folder. "
            f"Bundled {task} models: {', '.join(available_models(task, folder)) or 'none'}"
        )
    names = available_models(task, folder)
    if not names:
        raise CheckpointError(
            f"no {task} model is bundled in {folder}; train one with recipes/lm/train.py "
            f"(recipes/lm/{task}/hparams) or pass a model folder"
        )
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


def load_runner_parts(task: str, name_or_path, codec, device, folder):
    """(lm, config, codec on `device`, folder) of a `task` model: a bundled name, a folder, or
    (None) the bundled model for `codec`."""
    path, codec = _resolve(task, name_or_path, codec, Path(folder))
    meta = read_lm_config(path)
    if meta["task"] != task:
        raise CheckpointError(cannot(f"load {task} model from", path, f"it is a {meta['task']} model"))
    if codec is None:
        codec = load_codec(meta["codec"]["name"], device=device)
    elif isinstance(codec, (str, Path)):
        codec = load_codec(codec, device=device)
    lm, meta = load_lm(path, codec, device=device)
    return lm, meta, codec.to(device).eval(), path


class Runner:
    """A loaded token LM with its codec and its config's defaults: `sampling` (a `SamplingConfig`:
    how tokens are drawn, passed to `TokenLM.generate`; no repetition check unless the model sets
    one) and `render` (how they become audio; here mean levels and their
    frame dropout, the rest is the task's). Base of `Synthesizer` and `Enhancer`."""

    def __init__(self, lm, codec, meta: dict, path: Path | None = None) -> None:
        self.lm, self.codec, self.meta, self.path = lm, codec, meta, path
        sampling, self.render_defaults = split_render(meta.get("sampling"), meta.get("render"))
        self.sampling = SamplingConfig.from_dict({"rep_window": 0, **sampling})
        self.mean_levels = bool(self.render_defaults.get("mean_levels", False))
        self.level_passes, self.level_blank = 1, 0.0
        self.set_level_dropout(self.render_defaults.get("level_passes"), self.render_defaults.get("level_blank"))

    def set_level_dropout(self, passes: int | None = None, blank: float | None = None) -> None:
        """Mean levels as the average over `passes` passes that each blank a `blank` share of the
        frames (`TokenLM.expected_codes`); None keeps the current value."""
        passes = self.level_passes if passes is None else int(passes)
        blank = self.level_blank if blank is None else float(blank)
        if passes < 1 or not 0.0 <= blank < 1.0:
            raise LMInputError(f"level dropout needs passes >= 1 and a blank share in [0, 1), got {passes} and {blank}")
        self.level_passes, self.level_blank = passes, blank

    def _levels(
        self, src, codes, src_len, code_len, prompt_len=None, durations=None, seed=None, speaker=None
    ) -> torch.Tensor:
        """The LM's expected levels of `codes`, with the model's test-time frame dropout, seeded."""
        dev = self.device
        return self.lm.expected_codes(
            src.to(dev),
            codes.to(dev),
            src_len.to(dev),
            code_len.to(dev),
            None if prompt_len is None else prompt_len.to(dev),
            durations,
            speaker,
            blank_share=self.level_blank,
            passes=self.level_passes,
            generator=torch.Generator().manual_seed(0 if seed is None else seed),
        )

    def _use_levels(self, mean_levels: bool | None) -> bool:
        """Whether to decode mean levels (the caller's choice, else the model's default)."""
        mean_levels = self.mean_levels if mean_levels is None else mean_levels
        if mean_levels and not isinstance(self.codec, DMelCodec):
            raise LMInputError(
                f"mean_levels: codec '{self.codec.name}' has no ordinal levels to average "
                "(only dMel codecs do); decode the codes themselves (mean_levels=False)"
            )
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
            raise LMInputError(
                f"{what}: audio is at {sr} Hz but codec '{self.codec.name}' needs {self.sample_rate} "
                "Hz; resample it (speechtok.data.audio.resample) or pass the file path"
            )
        wav = audio.float()
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() != 2 or wav.shape[0] != 1:
            raise LMInputError(f"{what}: expected mono audio [T] or [1, T], got {tuple(audio.shape)}")
        return check_waveform(wav, what)

    def _codes_from_file(self, path: Path, what: str) -> torch.Tensor:
        tf = load_tokens(path)
        if tf.codec_hash != codec_hash(self.codec):
            problem = (
                f"made by codec '{tf.codec}' (hash {tf.codec_hash}), whose codes differ from those of "
                f"'{self.codec.name}' that this model uses; encode the audio again with --codec "
                f"{self.codec.name}, or pass the audio file"
            )
            raise TokenFileError(cannot(f"use {what} token file", path, problem))
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

    def _decode(
        self, codes: torch.Tensor, lengths: torch.Tensor, prompt: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Waveforms [1, n*hop] of codes [B, K, F] cut to `lengths`; `prompt` [1, 1, T]: the voice a
        codec that `takes_prompt` decodes with."""
        out, voice = [], None if prompt is None else prompt.to(self.codec.device)
        for c, n in zip(codes, lengths.tolist()):  # n >= 1: generation runs with min_len >= 1
            wav = self.codec.decode(c[None, :, :n].to(self.codec.device), prompt=voice)[0].float().cpu()
            out.append(wav[:, : n * self.codec.hop_length])
        return out

    def _generate(self, src, src_len, prompt, prompt_len, seed, overrides: dict, **kw):
        """`TokenLM.generate` with the model's sampling defaults, `overrides` (None: the default)
        replacing them; a row too long for the model is an `LMInputError`."""
        try:
            sampling = self.sampling.replace(**overrides)
        except (TypeError, ValueError) as exc:
            raise LMInputError(str(exc)) from exc
        dev = self.device
        try:
            return self.lm.generate(
                src.to(dev),
                src_len.to(dev),
                None if prompt is None else prompt.to(dev),
                None if prompt_len is None else prompt_len.to(dev),
                sampling,
                seed=seed,
                **kw,
            )
        except ValueError as exc:
            if "too long" in str(exc):
                raise LMInputError(f"input too long for this model ({exc}); split it into shorter pieces") from exc
            raise


__all__ = ["Audio", "LMInputError", "Runner", "available_models", "load_runner_parts"]
