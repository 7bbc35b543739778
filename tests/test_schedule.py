"""The shared LR schedule: warm-up then cosine, over steps or over a wall-clock budget that also
ends the run (and survives a resume)."""

import time

import pytest
import speechbrain as sb
import torch

from speechtok.modules.schedule import WarmupCosineLR, warmup_cosine


def test_warmup_then_cosine_to_the_floor_by_steps_or_by_progress():
    assert warmup_cosine(0, 10, 110) == pytest.approx(0.1) and warmup_cosine(9, 10, 110) == 1.0
    assert warmup_cosine(60, 10, 110) == pytest.approx(0.55)  # halfway down from 1 to the floor
    assert warmup_cosine(500, 10, 110) == pytest.approx(0.1)
    # progress replaces the step count after the warm-up, never during it
    assert warmup_cosine(60, 10, 110, progress=0.0) == 1.0
    assert warmup_cosine(60, 10, 110, progress=0.5) == pytest.approx(0.55)
    assert warmup_cosine(60, 10, 110, progress=2.0) == pytest.approx(0.1)
    assert warmup_cosine(3, 10, 110, progress=0.9) == pytest.approx(0.4)


class SlowBrain(WarmupCosineLR, sb.Brain):
    """Each batch takes 20 ms; the checkpoint is saved after each dev pass, as in the recipes."""

    def compute_forward(self, batch, stage):
        time.sleep(0.02)
        return self.modules.lin(batch)

    def compute_objectives(self, out, batch, stage):
        return out.pow(2).mean()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.VALID:
            self.lrs.append(self.optimizer.param_groups[0]["lr"])
            self.checkpointer.save_and_keep_only(meta={"loss": stage_loss}, num_to_keep=1)


def fit(tmp_path, minutes):
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 4)
    counter = sb.utils.epoch_loop.EpochCounter(limit=3)
    ckpt = sb.utils.checkpoints.Checkpointer(tmp_path / "save", recoverables={"lin": lin, "counter": counter})
    hp = {"lr": 0.1, "warmup_steps": 1, "total_steps": 10**6, "train_minutes": minutes}
    brain = SlowBrain(
        modules={"lin": lin},
        opt_class=lambda p: torch.optim.SGD(p, lr=0.1),
        hparams=hp,
        checkpointer=ckpt,
        run_opts={"device": "cpu", "noprogressbar": True},
    )
    brain.lrs = []
    batches = [torch.randn(2, 4) for _ in range(500)]  # an epoch would take 10 s
    brain.fit(
        counter,
        batches,
        batches[:2],
        train_loader_kwargs={"batch_size": None},
        valid_loader_kwargs={"batch_size": None},
    )
    return brain, counter


def test_a_time_budget_ends_the_run_decays_the_lr_and_counts_on_after_a_resume(tmp_path):
    brain, counter = fit(tmp_path, minutes=0.01)  # 0.6 s: about 30 of the 1500 batches
    assert 5 < brain.optimizer_step < 100 and counter.current == 1
    assert brain.lrs[-1] < 0.03 and brain.train_clock.seconds() >= 0.6  # most of the way to the floor (0.01)
    again, counter = fit(tmp_path, minutes=0.01)  # resumed: the clock says the budget is spent, so the
    assert again.optimizer_step == brain.optimizer_step and counter.current == 2  # epoch only validates
    assert again.train_clock.seconds() >= 0.6
    more, counter = fit(tmp_path, minutes=0.02)  # a larger budget trains on from there
    assert more.optimizer_step > brain.optimizer_step + 5 and counter.current == 3
