"""Phoneme durations for TTS training: a small monotonic aligner and its hard alignment.

A decoder-only LM that must find, by attention alone, which phoneme each frame renders learns
that slowly; handed the phoneme (and its place on the timeline) it learns to render speech far
sooner, as FastSpeech-style models do. The durations come from the unsupervised aligner of
RAD-TTS ("One TTS Alignment To Rule Them All", Badlani et al. 2022): a text encoder and a frame
encoder, a soft alignment from their distances, trained with the forward-sum (CTC) loss over all
monotonic paths, then a hard alignment by monotonic alignment search (Glow-TTS). It needs no
pretrained acoustic model and reads the codec's codes themselves (each code of a frame embedded,
so it suits any codec), training in a few minutes on a CPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import betaln
from torch import nn


def _conv(c_in: int, c_out: int, k: int) -> nn.Conv1d:
    return nn.Conv1d(c_in, c_out, k, padding=k // 2)


class Aligner(nn.Module):
    """log p(symbol | frame) [B, F, L] from the distance of each frame's and symbol's encodings."""

    def __init__(self, n_symbols: int, n_codebooks: int, codebook_size: int, dim: int = 128, code_dim: int = 4) -> None:
        super().__init__()
        self.emb = nn.Embedding(n_symbols, dim)
        self.code_emb = nn.Embedding(n_codebooks * codebook_size, code_dim)  # small: K of them per frame
        self.register_buffer("offset", torch.arange(n_codebooks)[:, None] * codebook_size, persistent=False)
        self.text = nn.Sequential(_conv(dim, 2 * dim, 3), nn.ReLU(), _conv(2 * dim, dim, 1))
        # frame by frame: context blurs the boundaries the search must find (recipes/lm/README.md, Durations)
        self.frames = nn.Sequential(
            _conv(n_codebooks * code_dim, dim, 1), nn.ReLU(), _conv(dim, 2 * dim, 1), nn.ReLU(), _conv(2 * dim, dim, 1)
        )

    def forward(
        self, text: torch.Tensor, text_len: torch.Tensor, codes: torch.Tensor, feat_len: torch.Tensor
    ) -> torch.Tensor:
        """text [B, L] ids, codes [B, K, F] -> log-probabilities [B, F, L] (-1e4 on padded symbols),
        with a beta-binomial prior towards the diagonal so training starts near a sane path."""
        k = self.text(self.emb(text).transpose(1, 2)).transpose(1, 2)  # [B, L, D]
        x = self.code_emb(codes + self.offset).permute(0, 1, 3, 2).flatten(1, 2)  # [B, K * code_dim, F]
        q = self.frames(x).transpose(1, 2)  # [B, F, D]
        score = -torch.cdist(q, k).pow(2) / math.sqrt(k.shape[-1])
        valid = torch.arange(text.shape[1], device=text.device)[None, None] < text_len[:, None, None]
        logp = score.masked_fill(~valid, float("-inf")).log_softmax(-1)
        logp = logp + diagonal_prior(text_len, feat_len, text.shape[1], codes.shape[-1])
        return logp.masked_fill(~valid, -1e4)


def diagonal_prior(text_len: torch.Tensor, feat_len: torch.Tensor, L: int, Fr: int) -> torch.Tensor:
    """log beta-binomial prior [B, F, L] (RAD-TTS): frame f of N favours symbols near f/N of the text."""
    out = torch.zeros(len(text_len), Fr, L)
    for b, (n_sym, n_fr) in enumerate(zip(text_len.tolist(), feat_len.tolist())):
        k = np.arange(n_sym)[None]
        f = np.arange(1, n_fr + 1)[:, None]
        a, c = f, n_fr + 1 - f  # the beta-binomial's alpha and beta for frame f
        log_choose = -np.log(n_sym) - betaln(k + 1, n_sym - k)  # log C(n_sym - 1, k)
        logpmf = log_choose + betaln(k + a, n_sym - 1 - k + c) - betaln(a, c)
        out[b, :n_fr, :n_sym] = torch.from_numpy(logpmf).float()
    return out.to(text_len.device)


def forward_sum_loss(logp: torch.Tensor, text_len: torch.Tensor, feat_len: torch.Tensor) -> torch.Tensor:
    """-log of the total probability of all monotonic alignments that visit every symbol in order,
    per frame: CTC with the symbol positions as labels and a constant-scored blank."""
    blank = torch.full_like(logp[..., :1], -1.0)
    lp = torch.cat([blank, logp], -1).log_softmax(-1)  # [B, F, L + 1]
    targets = torch.arange(1, logp.shape[-1] + 1, device=logp.device).expand(len(text_len), -1)
    loss = F.ctc_loss(lp.transpose(0, 1), targets, feat_len, text_len, blank=0, reduction="none", zero_infinity=True)
    return (loss / feat_len.float()).mean()


def monotonic_search(logp: np.ndarray) -> np.ndarray:
    """Durations [L] (each >= 1, summing to F) of the most likely monotonic alignment of a
    [F, L] log-probability matrix (F >= L): every frame takes one symbol, in order, none skipped."""
    n_fr, n_sym = logp.shape
    if n_fr < n_sym:
        raise ValueError(f"{n_fr} frames cannot hold {n_sym} symbols (each needs at least one)")
    value = np.full(n_sym, -np.inf)
    value[0] = logp[0, 0]
    moved = np.zeros((n_fr, n_sym), dtype=bool)  # frame f took a new symbol (came from i - 1)
    for f in range(1, n_fr):
        shift = np.concatenate([[-np.inf], value[:-1]])
        moved[f] = shift > value
        value = np.maximum(value, shift) + logp[f]
    durations = np.zeros(n_sym, dtype=np.int64)
    i = n_sym - 1
    for f in range(n_fr - 1, -1, -1):
        durations[i] += 1
        if moved[f, i]:
            i -= 1
    return durations


def train_aligner(
    items: list[tuple[torch.Tensor, torch.Tensor]],
    n_symbols: int,
    codebook_size: int,
    *,
    steps: int = 2000,
    batch_size: int = 16,
    lr: float = 1e-3,
    dim: int = 128,
    seed: int = 0,
    log_every: int = 250,
    device: str | torch.device = "cpu",
) -> Aligner:
    """Fit an Aligner on (symbol ids [L], codes [K, F]) pairs with the forward-sum loss; each batch
    is utterances of similar length. Seeded on its own, so the caller's random state is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Aligner(n_symbols, items[0][1].shape[0], codebook_size, dim).to(device)
        order = sorted(range(len(items)), key=lambda j: items[j][1].shape[-1])
        starts = torch.randint(max(len(order) - batch_size, 0) + 1, (steps,)).tolist()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for step, lo in enumerate(starts, 1):
        text, text_len, codes, feat_len = _batch([items[j] for j in order[lo : lo + batch_size]], device)
        loss = forward_sum_loss(model(text, text_len, codes, feat_len), text_len, feat_len)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if log_every and step % log_every == 0:
            print(f"aligner step {step} forward-sum loss {loss.item():.3f}", flush=True)
    return model.eval()


@torch.no_grad()
def durations(
    model: Aligner,
    items: list[tuple[torch.Tensor, torch.Tensor]],
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> list[np.ndarray]:
    """The hard alignment (durations per symbol, in frames) of each (ids, codes) pair."""
    out = []
    for s in range(0, len(items), batch_size):
        chunk = items[s : s + batch_size]
        text, text_len, codes, feat_len = _batch(chunk, device)
        logp = model(text, text_len, codes, feat_len).cpu().numpy()
        out += [monotonic_search(lp[:nf, :ns]) for lp, ns, nf in zip(logp, text_len.tolist(), feat_len.tolist())]
    return out


def _batch(rows, device):
    text_len = torch.tensor([len(t) for t, _ in rows])
    feat_len = torch.tensor([x.shape[-1] for _, x in rows])
    text = torch.zeros(len(rows), int(text_len.max()), dtype=torch.long)
    codes = torch.zeros(len(rows), rows[0][1].shape[0], int(feat_len.max()), dtype=torch.long)
    for b, (t, c) in enumerate(rows):
        text[b, : len(t)] = t
        codes[b, :, : c.shape[-1]] = c
    return text.to(device), text_len.to(device), codes.to(device), feat_len.to(device)


__all__ = ["Aligner", "diagonal_prior", "durations", "forward_sum_loss", "monotonic_search", "train_aligner"]
