"""How `TokenLM.generate` draws tokens: the `SamplingConfig` it takes and the helpers that apply it
(temperature, top-k, top-p, VALL-E 2's repetition-aware redraw, and the end-probability gate).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingConfig:
    """How each step's tokens are drawn.

    temperature <= 0 is greedy (argmax, no repetition check). Sampling applies `top_k`, then
    `top_p` (nucleus); with `rep_window` > 0, a sampled token that fills more than `rep_ratio` of
    its codebook's last `rep_window` tokens is redrawn from the full (temperature-only)
    distribution, as in VALL-E 2. With `end_threshold`, stopping is not sampled: a row ends as soon
    as the model's end probability reaches the threshold, and never before (like Tacotron's stop
    gate)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    rep_window: int = 10
    rep_ratio: float = 0.1
    end_threshold: float | None = None

    @classmethod
    def from_dict(cls, values: dict | None) -> SamplingConfig:
        """A config from a model's `sampling` block (or CLI options): None values keep the default;
        an unknown key is refused, naming the known ones."""
        values = {k: v for k, v in (values or {}).items() if v is not None}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"sampling: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def replace(self, **changes) -> SamplingConfig:
        """A copy with `changes` applied; None values leave a setting as it is."""
        return SamplingConfig.from_dict(
            {**dataclasses.asdict(self), **{k: v for k, v in changes.items() if v is not None}}
        )

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def token_history(steps: torch.Tensor, s: torch.Tensor, window: int, stride: int) -> torch.Tensor | None:
    """The last `window` tokens of each head's codebook before step s [B, H, W] (-1 before
    the stream starts); `stride` steps apart so a flattened stream compares like with like.
    None when window <= 0 (no repetition check)."""
    if window <= 0:
        return None
    back = s[:, None] - stride * torch.arange(1, window + 1, device=s.device)  # [B, W]
    rows = torch.arange(steps.shape[0], device=s.device)[:, None]
    hist = steps[rows, back.clamp(min=0)]  # [B, W, H]
    return hist.masked_fill((back < 0)[..., None], -1).transpose(1, 2)


def gate_end(head0: torch.Tensor, end_id: int, threshold: float, decide: torch.Tensor) -> torch.Tensor:
    """Head-0 logits [B, V] where rows free to end (decide, end allowed) either must end
    (end probability >= threshold) or must not."""
    inf = float("-inf")
    decide = decide & torch.isfinite(head0[:, end_id])
    stop = head0.softmax(-1)[:, end_id] >= threshold
    is_end = torch.arange(head0.shape[-1], device=head0.device) == end_id
    only_end = head0.masked_fill(~is_end, inf)
    no_end = head0.masked_fill(is_end, inf)
    return torch.where((decide & stop)[:, None], only_end, torch.where(decide[:, None], no_end, head0))


def sample(
    logits: torch.Tensor,
    cfg: SamplingConfig,
    history: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Token ids [B, H] from masked logits [B, H, V] as `cfg` says; `history` [B, H, W] from
    `token_history` (None: no repetition check)."""
    if cfg.temperature <= 0:
        return logits.argmax(-1)
    full = logits / cfg.temperature
    filt = full
    if cfg.top_k is not None and cfg.top_k < filt.shape[-1]:
        kth = filt.topk(cfg.top_k, dim=-1).values[..., -1:]
        filt = filt.masked_fill(filt < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_logits, order = filt.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > cfg.top_p  # keep the smallest prefix reaching top_p
        filt = filt.masked_fill(drop.scatter(-1, order, drop), float("-inf"))

    def draw(lg: torch.Tensor) -> torch.Tensor:
        return torch.multinomial(lg.softmax(-1).flatten(0, 1), 1, generator=generator).view(lg.shape[:2])

    tok = draw(filt)
    if history is None:
        return tok
    redraw = (history == tok[..., None]).float().mean(-1) > cfg.rep_ratio
    return torch.where(redraw, draw(full), tok)


__all__ = ["SamplingConfig", "gate_end", "sample", "token_history"]
