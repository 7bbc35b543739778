"""A trained token LM on disk: a folder with `config.json` and fp16 `model.safetensors`.

config.json holds the task (tts | enhance | prior), the codec it was trained on (name and the hash of
its token config, which leaves out decoder-only settings, so a codec that makes the same
codes with a better decoder, e.g. dmel-16k vs dmel-16k-gl, still matches), the pattern, the model config, the text
vocabulary (TTS), sampling defaults (`sampling`: how tokens are drawn), render defaults (`render`: how tokens become
audio: `mode`, `mean_levels`, `level_passes`, `level_blank`, `input_gains_db`, `gain_floor`) and an
optional default voice (a short prompt whose codes sit in model.safetensors under
`default_prompt.codes`, and for a codec that decodes with a voice prompt its waveform under
`default_prompt.audio`). The `family`/`format_version`/`config` keys follow the codec
folders' layout, so both kinds of folder can live side by side in `speechtok/pretrained/`.
Loading never unpickles. Folders written before the `render` block kept its settings in `sampling`
(`render` as the mode); `read_lm_config` moves them (`split_render`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from speechtok.codecs import base as folders
from speechtok.codecs.base import declared_family, read_json_config
from speechtok.errors import cannot
from speechtok.lm.model import LMConfig, TokenLM
from speechtok.tokens import codec_hash, codec_identity

FAMILY = "token-lm"
FORMAT_VERSION = 1
TASKS = ("tts", "enhance", "prior")  # prior: source-free, for entropy coding (speechtok.compress)
PROMPT_KEY = "default_prompt.codes"
PROMPT_AUDIO_KEY = "default_prompt.audio"  # the default voice's waveform [T] (codecs that `takes_prompt`)
SPEAKER_FOLDER = "speaker"  # a TTS model's speaker encoder, inside its folder
# render settings an older config kept in its `sampling` block: old key -> key in `render`
LEGACY_RENDER_KEYS = {
    "render": "mode",
    "mean_levels": "mean_levels",
    "level_passes": "level_passes",
    "level_blank": "level_blank",
    "input_gains_db": "input_gains_db",
}


class CheckpointError(ValueError):
    """A missing, malformed or mismatched LM checkpoint; the message names the folder."""


def split_render(sampling: dict | None, render: dict | None = None) -> tuple[dict, dict]:
    """(sampling, render): the render settings an older layout (or a `--sampling` override) keeps in
    `sampling` moved into `render`, where they win over its own. Returns new dicts."""
    sampling, render = dict(sampling or {}), dict(render or {})
    for old, new in LEGACY_RENDER_KEYS.items():
        if old in sampling:
            render[new] = sampling.pop(old)
    return sampling, render


def codec_info(codec) -> dict[str, Any]:
    return {
        "name": str(codec.name),
        "hash": codec_hash(codec),
        "identity": codec_identity(codec),  # what the hash covers: token files restored from .stz carry it
        "family": codec.family,
        "sample_rate": int(codec.sample_rate),
        "frame_rate": float(codec.frame_rate),
        "n_codebooks": int(codec.n_codebooks),
        "codebook_size": int(codec.codebook_size),
    }


def save_lm(
    directory: str | Path,
    lm: TokenLM,
    task: str,
    codec,
    *,
    text: dict | None = None,
    default_prompt: dict | None = None,
    sampling: dict | None = None,
    render: dict | None = None,
    training: dict | None = None,
    speaker_encoder=None,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write `lm` as a folder. `default_prompt` = {"codes": LongTensor [K, P], "text", "symbols", ...},
    with "audio" (its waveform [T] at the codec's rate) where the codec decodes with a voice prompt;
    a model with `speaker_dim` keeps its `speaker_encoder` (`speechtok.tts.speaker`) in SPEAKER_FOLDER."""
    if task not in TASKS:
        raise CheckpointError(cannot("save token LM to", directory, f"task must be one of {TASKS}, got {task!r}"))
    if (task == "tts") != (text is not None):
        problem = "a tts model needs its text vocabulary (and only tts has one)"
        raise CheckpointError(cannot("save token LM to", directory, problem))
    sampling, render = split_render(sampling, render)
    cfg = lm.cfg
    if (cfg.n_codebooks, cfg.codebook_size) != (codec.n_codebooks, codec.codebook_size):
        problem = (
            f"model is for {cfg.n_codebooks} x {cfg.codebook_size} codes, codec "
            f"'{codec.name}' makes {codec.n_codebooks} x {codec.codebook_size}"
        )
        raise CheckpointError(cannot("save token LM to", directory, problem))
    given = 0 if speaker_encoder is None else speaker_encoder.dim
    if cfg.speaker_dim != given:
        problem = f"model takes a {cfg.speaker_dim}-d speaker embedding (0: none), the encoder given makes {given}-d"
        raise CheckpointError(cannot("save token LM to", directory, problem))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous() for k, v in lm.state_dict().items()
    }
    prompt_meta = None
    if default_prompt is not None:
        codes = torch.as_tensor(default_prompt["codes"])
        if codes.dim() != 2 or codes.shape[0] != codec.n_codebooks:
            problem = f"default prompt codes must be [K={codec.n_codebooks}, P], got {tuple(codes.shape)}"
            raise CheckpointError(cannot("save token LM to", directory, problem))
        state[PROMPT_KEY] = codes.to(torch.int32).contiguous()
        if codec.takes_prompt:
            audio = default_prompt.get("audio")
            if audio is None or torch.as_tensor(audio).dim() != 1:
                problem = f"codec '{codec.name}' decodes with a voice prompt: the default prompt needs its waveform [T]"
                raise CheckpointError(cannot("save token LM to", directory, problem))
            state[PROMPT_AUDIO_KEY] = torch.as_tensor(audio).to(dtype).contiguous()
        prompt_meta = {k: v for k, v in default_prompt.items() if k not in ("codes", "audio")}
    meta = {
        "family": FAMILY,
        "format_version": FORMAT_VERSION,
        "task": task,
        "pattern": cfg.pattern,
        "codec": codec_info(codec),
        "config": asdict(cfg),
        "text": text,
        "default_prompt": prompt_meta,
        "sampling": sampling,
        "render": render,
        "training": training or {},
    }
    if speaker_encoder is not None:
        speaker_encoder.save(directory / SPEAKER_FOLDER)
        meta["speaker_encoder"] = SPEAKER_FOLDER
    save_file(state, str(directory / "model.safetensors"), metadata={"family": FAMILY, "task": task})
    (directory / "config.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return directory


def is_lm_folder(path: str | Path) -> bool:
    return declared_family(Path(path)) == FAMILY


def read_lm_config(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    meta = read_json_config(directory, (), "token LM", CheckpointError)

    def refuse(problem: str) -> CheckpointError:
        return CheckpointError(cannot("load token LM from", directory, f"config.json {problem}"))

    if meta.get("family") != FAMILY:
        raise refuse(f"is not a token LM's (family {meta.get('family')!r}, expected {FAMILY!r})")
    missing = [k for k in ("format_version", "task", "codec", "config", "pattern") if k not in meta]
    if missing:
        raise refuse(f"lacks {', '.join(missing)}")
    if meta["format_version"] > FORMAT_VERSION:
        raise refuse(
            f"has format version {meta['format_version']}, newer than this speechtok "
            f"supports ({FORMAT_VERSION}); upgrade speechtok"
        )
    if meta["task"] not in TASKS:
        raise refuse(f"names an unknown task {meta['task']!r}")
    if meta["config"].get("pattern") != meta["pattern"]:
        raise refuse(f"has a pattern {meta['pattern']!r} that disagrees with the model config")
    for block in ("sampling", "render"):
        if not isinstance(meta.get(block) or {}, dict):
            raise refuse(f"{block} must be a mapping, got {meta[block]!r}")
    meta["sampling"], meta["render"] = split_render(meta.get("sampling"), meta.get("render"))
    return meta


def check_codec(meta: dict, codec, where: str | Path) -> None:
    """Raise unless `codec` makes the codes the model was trained on."""
    want = meta["codec"]
    if codec_hash(codec) != want["hash"]:
        problem = (
            f"model was trained on codec '{want['name']}' (hash {want['hash']}), but codec "
            f"'{codec.name}' makes different codes (hash {codec_hash(codec)}); use a model for that codec"
        )
        raise CheckpointError(cannot("use token LM", where, problem))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The codecs' `read_weights` (missing, unreadable or NaN/inf weights refused), with LM errors."""
    return folders.read_weights(path, CheckpointError)


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """The codecs' `load_weights` (names and shapes must match exactly), with LM errors."""
    folders.load_weights(module, state, path, CheckpointError)


def load_lm(directory: str | Path, codec=None, device: str | torch.device = "cpu") -> tuple[TokenLM, dict]:
    """(model in eval mode, config dict); meta["default_prompt"]["codes"] is a LongTensor [K, P] if present,
    and ["audio"] its float waveform [T] where the folder keeps one.
    With `codec`, also checks that it makes the codes the model expects."""
    directory = Path(directory)
    meta = read_lm_config(directory)
    if codec is not None:
        check_codec(meta, codec, directory)
    weights = directory / "model.safetensors"
    state = read_weights(weights)
    prompt = state.pop(PROMPT_KEY, None)
    prompt_audio = state.pop(PROMPT_AUDIO_KEY, None)
    try:
        lm = TokenLM(LMConfig(**meta["config"]))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            cannot("load token LM from", directory, f"config.json has an invalid model config ({exc})")
        ) from exc
    load_weights(lm, state, weights)
    if meta.get("default_prompt") is not None:
        if prompt is None:
            problem = "config.json names a default prompt but model.safetensors lacks its codes"
            raise CheckpointError(cannot("load token LM from", directory, problem))
        meta["default_prompt"]["codes"] = prompt.long()
        if prompt_audio is not None:
            meta["default_prompt"]["audio"] = prompt_audio.float()
    return lm.to(device).eval(), meta


__all__ = [
    "FAMILY",
    "FORMAT_VERSION",
    "CheckpointError",
    "check_codec",
    "codec_info",
    "is_lm_folder",
    "load_lm",
    "read_lm_config",
    "save_lm",
    "split_render",
]
