"""Batches for training a CTC head on codes: transcribed utterances, sampled by source and speaker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from speechtok.asr.ctc import ALPHABET, has_digits, text_for_ctc
from speechtok.data.manifest import Utterance, read_manifest
from speechtok.data.segments import EpochSeeded, balanced_weights


def transcribed(manifest: str | Path) -> list[Utterance]:
    """The utterances of `manifest` with a usable transcript. A pseudo-labelled copy beside it
    (`<name>_pl.csv`, recipes/data/pseudo_label.py) is read instead when there is one; rows whose
    text has digits (which CTC over letters cannot spell) are left out."""
    manifest = Path(manifest)
    labelled = manifest.with_name(manifest.stem + "_pl.csv")
    utts = read_manifest(labelled if labelled.exists() else manifest)
    return [u for u in utts if text_for_ctc(u.text) and not has_digits(u.text)]


def targets(text: str) -> torch.Tensor:
    return torch.tensor([ALPHABET.index(c) + 1 for c in text_for_ctc(text)], dtype=torch.long)


def pad_batch(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """codes [B, K, F] (right-padded with 0), their lengths, targets [B, L] and their lengths."""
    codes, labels = zip(*rows)
    n, m = max(c.shape[-1] for c in codes), max(len(t) for t in labels)
    return {
        "codes": torch.stack([torch.nn.functional.pad(c, (0, n - c.shape[-1])) for c in codes]),
        "code_lengths": torch.tensor([c.shape[-1] for c in codes]),
        "targets": torch.stack([torch.nn.functional.pad(t, (0, m - len(t))) for t in labels]),
        "target_lengths": torch.tensor([len(t) for t in labels]),
    }


class CTCBatches(EpochSeeded):
    """`n_batches` batches of `batch_size` transcribed utterances, drawn by source share and then by
    speaker; `codes_of(utterance)` gives its codes [K, F]. Utterances whose codes are too few for
    their text (CTC needs a frame per character, and one more between repeats) are left out."""

    def __init__(
        self,
        sources: list[list[Utterance]],
        codes_of: Callable[[Utterance], torch.Tensor],
        n_batches: int,
        batch_size: int,
        shares: list[float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(n_batches, seed)
        kept = []
        self.rows = []
        for utts in sources:
            ok = []
            for u in utts:
                codes, labels = codes_of(u), targets(u.text)
                repeats = int((labels[1:] == labels[:-1]).sum())
                if codes.shape[-1] >= len(labels) + repeats:
                    ok.append(u)
                    self.rows.append((codes, labels))
            kept.append(ok)
        self.weights = balanced_weights(kept, shares)
        self.batch_size = batch_size

    def __getitem__(self, i: int) -> dict:
        picks = self.rng(i).choice(len(self.rows), size=self.batch_size, p=self.weights)
        return pad_batch([self.rows[k] for k in picks])


def corrupt_codes(codes: torch.Tensor, p: float, codebook_size: int) -> torch.Tensor:
    """`codes` with a share `p` of them replaced by uniformly random codes: token noise that keeps a
    small CTC head from memorising its few hours of transcribed speech (SpecAugment's role for codes)."""
    if p <= 0:
        return codes
    noise = torch.randint_like(codes, codebook_size)
    return torch.where(torch.rand(codes.shape, device=codes.device) < p, noise, codes)


def error_rates(rows: list[tuple[str, str, str]]) -> dict[str, float]:
    """Corpus WER and CER per dev set, of (set, reference, hypothesis) rows (texts as CTC spells them)."""
    import jiwer

    out = {}
    for name in dict.fromkeys(r[0] for r in rows):
        refs = [r[1] for r in rows if r[0] == name]
        hyps = [r[2] or "-" for r in rows if r[0] == name]  # jiwer refuses an empty hypothesis
        out[f"{name}_wer"], out[f"{name}_cer"] = jiwer.wer(refs, hyps), jiwer.cer(refs, hyps)
    return out
