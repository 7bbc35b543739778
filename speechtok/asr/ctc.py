"""A character CTC head over codec tokens, and the `Transcriber` that runs codec + head on audio.

What a token sequence says, read back without the teacher: if a small head trained on the codes
alone transcribes unseen voices, the codes carry the words (the STAB/DASB view of semantic
tokens). Characters, not phonemes, so the output is text that WER can score directly; at 25
frames/s there are about twice as many frames as characters in read speech, enough for CTC.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from speechtok.codecs import Codec, load_codec
from speechtok.codecs.base import load_weights, read_json_config, read_weights
from speechtok.errors import cannot
from speechtok.eval.judges import normalize_text
from speechtok.modules.encoder import ConvTransformer

ALPHABET = " abcdefghijklmnopqrstuvwxyz"  # index + 1 is the CTC class; 0 is the blank
FAMILY = "token-ctc"
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"
_OUTSIDE = re.compile(f"[^{re.escape(ALPHABET)}]")


class ASRError(ValueError):
    """A transcriber folder or input that cannot be used; the message says which and why."""


def text_for_ctc(text: str) -> str:
    """The transcript as CTC targets: normalised like the WER judge (lowercase, no punctuation,
    "don't" -> "dont"), then letters and spaces only: digits are dropped, so rows with numbers
    are better left out of training (`has_digits`)."""
    return " ".join(_OUTSIDE.sub(" ", normalize_text(text)).split())


def has_digits(text: str) -> bool:
    return any(c.isdigit() for c in text)


class TokenCTC(ConvTransformer):
    """log p(character | frame) [B, F, len(ALPHABET) + 1] for codes [B, K, F]: each codebook's code
    embedded and summed, then the ConvNeXt + Transformer encoder."""

    def __init__(
        self,
        n_codebooks: int,
        codebook_size: int,
        dim: int = 256,
        heads: int = 4,
        layers: int = 4,
        conv_layers: int = 2,
    ) -> None:
        super().__init__(dim, heads, layers, conv_layers)
        self.config = dict(
            n_codebooks=n_codebooks,
            codebook_size=codebook_size,
            dim=dim,
            heads=heads,
            layers=layers,
            conv_layers=conv_layers,
        )
        self.embed = nn.Embedding(n_codebooks * codebook_size, dim)
        self.register_buffer("offsets", torch.arange(n_codebooks) * codebook_size, persistent=False)
        self.out = nn.Linear(dim, len(ALPHABET) + 1)

    def forward(self, codes: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(codes + self.offsets[: codes.shape[1], None]).sum(1)
        padding = None
        if lengths is not None:
            padding = torch.arange(codes.shape[-1], device=codes.device)[None] >= lengths[:, None]
        return self.out(self.encode(x, padding)).log_softmax(-1)

    @staticmethod
    def greedy(log_probs: torch.Tensor, lengths: torch.Tensor | None = None) -> list[str]:
        """Best path: the most likely class per frame, repeats merged, blanks dropped."""
        best = log_probs.argmax(-1)
        out = []
        for b, row in enumerate(best):
            row = row[: int(lengths[b])] if lengths is not None else row
            keep = torch.ones_like(row, dtype=torch.bool)
            keep[1:] = row[1:] != row[:-1]
            out.append(" ".join("".join(ALPHABET[i - 1] for i in row[keep].tolist() if i).split()))
        return out


class Transcriber:
    """Audio -> the codec's codes -> the CTC head -> text."""

    def __init__(self, codec: Codec, model: TokenCTC) -> None:
        if model.config["codebook_size"] != codec.codebook_size or model.config["n_codebooks"] > codec.max_codebooks:
            raise ASRError(f"the CTC head reads {model.config} codes, which codec '{codec.name}' does not make")
        self.codec, self.model = codec, model.eval()

    @torch.inference_mode()
    def transcribe(self, wav: torch.Tensor) -> str:
        """Text of one clip, wav [1, T] or [T] at the codec's sample rate."""
        codes = self.codec.encode(wav.reshape(1, 1, -1), n_codebooks=self.model.config["n_codebooks"])
        return TokenCTC.greedy(self.model(codes))[0]

    def save(self, directory: str | Path) -> Path:
        """A folder `load_transcriber` reads: config.json (the codec's name, the alphabet, the head's
        size) and the head's weights in fp16 safetensors."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "family": FAMILY,
            "format_version": 1,
            "codec": self.codec.name,
            "alphabet": ALPHABET,
            "model": self.model.config,
        }
        (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        state = {k: v.detach().to(torch.float16).contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"), metadata={"family": FAMILY})
        return directory


def load_transcriber(name_or_path: str | Path, codec: Codec | None = None, device: str = "cpu") -> Transcriber:
    """A bundled transcriber by name (e.g. 'asr-semantic-16k-25') or a saved folder; its codec is
    loaded by the name in its config unless given."""
    path = Path(name_or_path)
    if not (path / "config.json").exists() and (PRETRAINED_DIR / str(name_or_path) / "config.json").exists():
        path = PRETRAINED_DIR / str(name_or_path)
    meta = read_json_config(path, ("family", "codec", "alphabet", "model"), "transcriber", ASRError)
    if meta["family"] != FAMILY or meta["alphabet"] != ALPHABET:
        raise ASRError(cannot("load transcriber from", path, f"config.json is not a {FAMILY} model of this alphabet"))
    try:
        model = TokenCTC(**meta["model"])
    except TypeError as exc:
        raise ASRError(cannot("load transcriber from", path, f"invalid model config ({exc})")) from exc
    weights = path / "model.safetensors"
    load_weights(model, read_weights(weights, ASRError), weights, ASRError)
    return Transcriber(codec or load_codec(meta["codec"], device=device), model.to(device))
