"""Codecs behind one interface, and `load_codec` to find them by short name or path."""

from __future__ import annotations

from pathlib import Path

import torch

from speechtok.codecs.base import Codec, CodecError, declared_family, read_config
from speechtok.codecs.dmel import DMelCodec
from speechtok.codecs.external import EXTERNAL, EncodecCodec, external_with_weights, load_external
from speechtok.codecs.rvq import RVQCodec
from speechtok.codecs.semantic import SemanticCodec, WhisperTeacher
from speechtok.errors import cannot

FAMILIES: dict[str, type[Codec]] = {cls.family: cls for cls in (DMelCodec, RVQCodec, SemanticCodec, EncodecCodec)}
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"


def available_codecs() -> list[str]:
    """Short names of the bundled checkpoints, and of the wrapped pretrained codecs (EnCodec)
    whose weights are on this machine."""
    folders = PRETRAINED_DIR.iterdir() if PRETRAINED_DIR.is_dir() else []
    bundled = [p.name for p in folders if declared_family(p) in FAMILIES]
    return sorted(bundled) + external_with_weights()


def load_codec(name_or_path: str | Path, device: str | torch.device = "cpu") -> Codec:
    """Load a bundled codec by short name (e.g. 'dmel-16k'), a wrapped pretrained one (e.g.
    'encodec-24k', its weights found or fetched as `speechtok.codecs.external` says) or a saved
    codec folder."""
    path = Path(name_or_path)
    if not (path / "config.json").exists():
        bundled = PRETRAINED_DIR / str(name_or_path)
        if str(name_or_path) in EXTERNAL and not (bundled / "config.json").exists():
            return load_external(str(name_or_path), device=device)
        if not (bundled / "config.json").exists():
            raise CodecError(
                f"unknown codec '{name_or_path}': not a bundled name and not a folder with "
                f"config.json. Bundled codecs: {', '.join(available_codecs()) or 'none'}; "
                f"wrapped pretrained codecs: {', '.join(EXTERNAL)}"
            )
        path = bundled
    family = read_config(path)["family"]
    if family not in FAMILIES:
        problem = f"config.json names an unknown codec family '{family}' (known: {', '.join(FAMILIES)})"
        raise CodecError(cannot("load codec from", path, problem))
    codec = FAMILIES[family].from_pretrained(path, device=device)
    codec.name = path.name
    return codec


__all__ = [
    "Codec",
    "CodecError",
    "DMelCodec",
    "EXTERNAL",
    "EncodecCodec",
    "FAMILIES",
    "RVQCodec",
    "SemanticCodec",
    "WhisperTeacher",
    "available_codecs",
    "load_codec",
]
