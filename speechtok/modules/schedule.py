"""The learning-rate schedule every recipe uses."""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, floor: float = 0.1) -> float:
    """LR factor: linear warm-up to 1, then cosine decay to `floor` at `total_steps` (and after)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return floor + (1 - floor) / 2 * (1 + math.cos(math.pi * progress))


class WarmupCosineLR:
    """SpeechBrain `Brain` mixin: before each batch, `self.optimizer` gets `hparams.lr` times
    `warmup_cosine` of the optimizer step (hparams `warmup_steps`, `total_steps`)."""

    def lr_factor(self) -> float:
        h = self.hparams
        return warmup_cosine(self.optimizer_step, h.warmup_steps, h.total_steps)

    def on_fit_batch_start(self, batch, should_step):
        for group in self.optimizer.param_groups:
            group["lr"] = self.hparams.lr * self.lr_factor()
