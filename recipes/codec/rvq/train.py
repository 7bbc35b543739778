#!/usr/bin/env python3
"""Train a learned vector-quantised codec over log-mel frames (`speechtok.codecs.rvq`).

    python recipes/codec/rvq/train.py recipes/codec/rvq/hparams/rvq-16k.yaml
    python recipes/codec/rvq/train.py recipes/codec/rvq/hparams/single-16k-50.yaml
    python recipes/codec/rvq/train.py recipes/codec/rvq/hparams/rvq-16k.yaml --device cuda --batch_size 64

The encoder, quantiser and mel decoder learn to reconstruct dMel's log-mel (L1 plus the
quantiser's commitment loss); the waveform decoder is the bundled dMel vocoder, copied in
frozen (`vocoder_from`), so a step costs frame-rate convolutions only and the codec trains on
a CPU. Each epoch scores the dev utterances through the whole codec (PESQ-wb, STOI, codebook
usage) and logs the CPU-hours trained so far. `init_from` warm-starts a fresh run from an exported
codec folder. Re-running the same command resumes; at the end the best checkpoint (dev PESQ-wb) is
exported as a codec folder. `--export_only True` exports the best so far without training.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch

from speechtok.codecs import RVQCodec, load_codec
from speechtok.data.segments import codec_training_sets, dev_summary
from speechtok.eval.metrics import code_histogram, codebook_usage, pesq_wb, stoi
from speechtok.modules.schedule import WarmupCosineLR
from speechtok.training import copy_own, export_best, fit_codec_brain, start_recipe, warm_start


class RVQBrain(WarmupCosineLR, sb.Brain):
    def compute_forward(self, batch, stage):
        codec = self.modules.codec
        with torch.no_grad():
            mel = codec.log_mel(batch.to(self.device))
        rec, _, commit = codec(mel)
        return codec.normalise(rec), codec.normalise(mel), commit

    def compute_objectives(self, predictions, batch, stage):
        rec, target, commit = predictions
        mel_l1 = (rec - target).abs().mean()
        self.last_stats = {"mel_l1": mel_l1.item(), "commit": commit.item()}
        return mel_l1 + self.hparams.commit_weight * commit

    def evaluate_batch(self, batch, stage):
        """One whole dev utterance through encode -> decode: mel L1, PESQ-wb, STOI, code counts."""
        codec = self.modules.codec
        (set_name,), wav = batch
        wav = wav.to(self.device)
        codes = codec.encode(wav)
        mel = codec.decode_mel(codes)
        fake = codec.render(mel).float()[..., : wav.shape[-1]]
        ref, est = wav[0, 0].cpu().numpy(), fake[0, 0].clamp(-1, 1).cpu().numpy()
        self.dev_scores.append((set_name, pesq_wb(ref, est, codec.sample_rate), stoi(ref, est, codec.sample_rate)))
        self.histogram += code_histogram(codes[0].cpu().numpy(), codec.codebook_size)
        target = codec.normalise(
            codec.log_mel(torch.nn.functional.pad(wav, (0, codes.shape[-1] * codec.hop_length - wav.shape[-1])))
        )
        return (codec.normalise(mel) - target).abs().mean().cpu()

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_set.set_epoch(epoch or 0)
        self.dev_scores = []
        self.histogram = 0

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        usage = codebook_usage(self.histogram)
        stats = {
            "mel_l1": stage_loss,
            **dev_summary(self.dev_scores, list(self.hparams.dev_sets)),
            "codes_used": float(np.mean(usage["used_fraction"])),
            "perplexity": float(np.mean(usage["perplexity"])),
        }
        self.hparams.train_logger.log_stats(
            stats_meta={
                "epoch": epoch,
                "step": self.optimizer_step,
                "lr": self.hparams.lr * self.lr_factor(),
                "cpu_hours": self.cpu_hours(),
            },
            train_stats={"loss": self.train_loss, **getattr(self, "last_stats", {})},
            valid_stats=stats,
        )
        print(
            f"epoch {epoch} step {self.optimizer_step} " + " ".join(f"{k} {v:.4f}" for k, v in stats.items()),
            flush=True,
        )
        self.checkpointer.save_and_keep_only(
            meta={**stats, "step": self.optimizer_step, "cpu_hours": self.cpu_hours()},
            max_keys=["pesq_wb"],
            num_to_keep=2,
        )


def build_codec(hparams: dict) -> RVQCodec:
    """The codec of the config on `vocoder_from`'s log-mel, rendering with its vocoder (frozen,
    borrowed: the exported codec names it rather than carrying a copy)."""
    dmel = load_codec(hparams["vocoder_from"])
    mel = {k: v for k, v in dmel.token_config().items() if k not in ("sample_rate", "frame_rate", "n_bins")}
    return RVQCodec(
        **hparams["codec"],
        sample_rate=dmel.sample_rate,
        frame_rate=int(dmel.frame_rate),
        mel=mel,
        vocoder_from=hparams["vocoder_from"],
    )


def export(hparams: dict) -> Path:
    """Save the best checkpoint so far (by dev PESQ-wb) as a codec folder; safe while training runs."""
    codec = build_codec(hparams)
    return export_best(
        codec,
        hparams["save_folder"],
        hparams["export_folder"],
        {"codec": codec},
        keep=("step", "cpu_hours", "pesq_wb", "stoi", "mel_l1", "codes_used", "perplexity"),
        dev_sets=hparams["dev_sets"],
        seen_dev_sets=hparams.get("seen_dev_sets") or {},
    )


def main(argv: list[str]) -> None:
    started = start_recipe(argv, export)
    if started is None:
        return
    hparams, run_opts = started
    codec = build_codec(hparams)
    warm_start(hparams, lambda source: copy_own(codec, source))
    train_set, dev_set = codec_training_sets(hparams, codec.sample_rate)
    hparams["checkpointer"].add_recoverable("codec", codec)
    brain = RVQBrain(
        modules={"codec": codec},
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.train_set = train_set
    fit_codec_brain(brain, hparams, train_set, dev_set)
    if sb.utils.distributed.if_main_process():
        print(f"exported {export(hparams)}")


if __name__ == "__main__":
    main(sys.argv[1:])
