"""The learning-rate schedule every recipe uses, over steps or over a wall-clock budget."""

from __future__ import annotations

import math
import time

from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks


def warmup_cosine(
    step: int, warmup_steps: int, total_steps: int, floor: float = 0.1, progress: float | None = None
) -> float:
    """LR factor: linear warm-up to 1, then cosine decay to `floor` at `total_steps` (and after).
    `progress` (0-1), when given, replaces the step count after the warm-up (a time budget)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if progress is None:
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return floor + (1 - floor) / 2 * (1 + math.cos(math.pi * min(progress, 1.0)))


@register_checkpoint_hooks
class TrainClock:
    """Seconds a run has trained, kept in its checkpoints so a resumed run counts on: wall-clock
    by default, or CPU time of all the process's threads with `timer=time.process_time` (what a
    recipe's CPU-hours are measured in)."""

    def __init__(self, timer=time.monotonic):
        self.timer = timer
        self.before, self.since = 0.0, timer()

    def seconds(self) -> float:
        return self.before + self.timer() - self.since

    @mark_as_saver
    def _save(self, path):
        with open(path, "w") as f:
            f.write(f"{self.seconds():.3f}\n")

    @mark_as_loader
    def _recover(self, path, end_of_epoch=True):
        with open(path) as f:
            self.before, self.since = float(f.read()), self.timer()


class WarmupCosineLR:
    """SpeechBrain `Brain` mixin: before each batch, `self.optimizer` gets `hparams.lr` times
    `warmup_cosine` of the optimizer step (hparams `warmup_steps`, `total_steps`).

    With `hparams.train_minutes` set, the decay runs over that much wall-clock time instead of
    `total_steps` (a fixed time budget, as in "Cramming"), and training stops when it is spent:
    the epoch in progress ends there, is validated and checkpointed, so a run fits a command
    limit (the GPU machine's 10 minutes) whatever its step rate. Dev passes count towards it.

    It also keeps `cpu_clock`, the CPU time the run has trained across resumes (`cpu_hours()`),
    which the recipes log and their ledgers compare quality against."""

    train_clock: TrainClock | None = None  # both set when fitting starts
    cpu_clock: TrainClock | None = None

    def cpu_hours(self) -> float:
        return self.cpu_clock.seconds() / 3600

    def budget_seconds(self) -> float | None:
        minutes = getattr(self.hparams, "train_minutes", None)
        return None if minutes is None else 60.0 * float(minutes)

    def lr_factor(self) -> float:
        h, budget = self.hparams, self.budget_seconds()
        progress = None if budget is None else self.train_clock.seconds() / budget
        return warmup_cosine(self.optimizer_step, h.warmup_steps, h.total_steps, progress=progress)

    def on_fit_start(self):
        self.train_clock = TrainClock()
        self.cpu_clock = TrainClock(timer=time.process_time)
        if self.checkpointer is not None and "cpu_clock" not in self.checkpointer.recoverables:
            self.checkpointer.add_recoverable("cpu_clock", self.cpu_clock, optional_load=True)  # older runs lack it
        budgeted = self.budget_seconds() is not None  # runs without a budget keep their checkpoints' contents
        if budgeted and self.checkpointer is not None and "train_clock" not in self.checkpointer.recoverables:
            self.checkpointer.add_recoverable("train_clock", self.train_clock)
        super().on_fit_start()  # recovers the checkpoint, the clock with it

    @property
    def _optimizer_step_limit_exceeded(self) -> bool:
        """SpeechBrain checks this after every batch and epoch: the time budget ends the run there."""
        budget = self.budget_seconds()
        if budget is not None and self.train_clock is not None and self.train_clock.seconds() >= budget:
            return True
        return super()._optimizer_step_limit_exceeded

    def on_fit_batch_start(self, batch, should_step):
        for group in self.optimizer.param_groups:
            group["lr"] = self.hparams.lr * self.lr_factor()
