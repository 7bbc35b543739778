#!/usr/bin/env python3
"""Train the Vocos-style vocoder that decodes dMel tokens.

The vocoder sees *quantised* log-mels (decode(encode(x)) exactly), and is trained with a
multi-resolution mel loss, optionally multi-resolution STFT and APNet phase losses (`stft_weight`,
`phase_weight`), and hinge GAN + feature matching against multi-period and multi-resolution STFT
discriminators once `adv_start_step` is reached. Checkpoints are chosen by dev PESQ-wb on unseen
voices (`dev_sets`); `seen_dev_sets` are reported apart. `init_from` warm-starts a fresh run from
an exported codec folder; `cpu_hours` in the log counts CPU time across resumes.

    python recipes/codec/dmel_vocoder/train.py recipes/codec/dmel_vocoder/hparams/gpu.yaml
    torchrun --nproc_per_node 2 recipes/codec/dmel_vocoder/train.py hparams/gpu.yaml

Re-running the same command resumes from the last checkpoint; at the end the best
checkpoint (dev PESQ) is exported as a codec folder (`config.json` + `model.safetensors`).
Add `--export_only True` to export the best checkpoint so far without training.
"""

from __future__ import annotations

import sys
from pathlib import Path

import speechbrain as sb
import torch

from speechtok.codecs.dmel import DMelCodec
from speechtok.data.segments import codec_training_sets, dev_summary
from speechtok.eval.metrics import pesq_wb, stoi
from speechtok.modules.losses import feature_matching_loss, hinge_discriminator_loss, hinge_generator_loss
from speechtok.modules.schedule import WarmupCosineLR
from speechtok.modules.vocos import ConvNeXtBlock
from speechtok.training import export_best, fit_codec_brain, grown_like, start_recipe, warm_start_matching


class VocoderBrain(WarmupCosineLR, sb.Brain):
    """Two optimisers, so `fit_batch` sets both learning rates from `lr_factor` itself."""

    def on_fit_start(self):
        super().on_fit_start()
        self.codec.to(self.device)

    def init_optimizers(self):
        self.g_opt = self.hparams.g_opt_class(self.modules.generator.parameters())
        self.d_opt = self.hparams.d_opt_class(self.modules.discriminator.parameters())
        self.optimizers_dict = {"g_opt": self.g_opt, "d_opt": self.d_opt}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("g_opt", self.g_opt)
            self.checkpointer.add_recoverable("d_opt", self.d_opt)

    def dmel_input(self, wav: torch.Tensor) -> torch.Tensor:
        """Quantised log-mel exactly as the codec produces it (clone leaves inference mode)."""
        return self.codec.dequantize(self.codec.encode(wav).clone())

    def fit_batch(self, batch):
        wav = batch.to(self.device)
        mel = self.dmel_input(wav)
        for opt in (self.g_opt, self.d_opt):
            for group in opt.param_groups:
                group["lr"] = self.hparams.lr * self.lr_factor()
        adversarial = self.optimizer_step >= self.hparams.adv_start_step
        with self.training_ctx:
            fake = self.modules.generator(mel)[..., : wav.shape[-1]]

        stats = {}
        if adversarial:
            with self.training_ctx:
                real_logits, _ = self.modules.discriminator(wav)
                fake_logits, _ = self.modules.discriminator(fake.detach())
                d_loss = hinge_discriminator_loss(real_logits, fake_logits)
            self.d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            torch.nn.utils.clip_grad_norm_(self.modules.discriminator.parameters(), self.max_grad_norm)
            self.d_opt.step()
            stats["d_loss"] = d_loss.item()

        mel_loss = self.hparams.mel_loss(fake, wav)
        g_loss = self.hparams.mel_weight * mel_loss
        for name in ("stft", "phase"):
            if getattr(self.hparams, f"{name}_weight", 0):
                with self.training_ctx:
                    term = getattr(self.hparams, f"{name}_loss")(fake, wav)
                g_loss = g_loss + getattr(self.hparams, f"{name}_weight") * term
                stats[name] = term.item()
        if adversarial:
            with self.training_ctx:
                fake_logits, fake_fmaps = self.modules.discriminator(fake)
                with torch.no_grad():
                    _, real_fmaps = self.modules.discriminator(wav)
                adv = hinge_generator_loss(fake_logits)
                fm = feature_matching_loss(real_fmaps, fake_fmaps)
            g_loss = g_loss + self.hparams.adv_weight * adv + self.hparams.fm_weight * fm
            stats.update(g_adv=adv.item(), fm=fm.item())
        self.g_opt.zero_grad(set_to_none=True)
        self.check_loss_isfinite(g_loss)
        g_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.modules.generator.parameters(), self.max_grad_norm)
        self.g_opt.step()
        self.optimizer_step += 1
        stats["mel_loss"] = mel_loss.item()
        self.last_stats = stats
        return mel_loss.detach().cpu()

    def evaluate_batch(self, batch, stage):
        """Full dev utterances one at a time: mel loss plus PESQ-wb and STOI of the vocoder output."""
        (set_name,), wav = batch
        wav = wav.to(self.device)
        with torch.no_grad():
            fake = self.modules.generator(self.dmel_input(wav)).float()[..., : wav.shape[-1]]
        ref, est = wav[0, 0].cpu().numpy(), fake[0, 0].clamp(-1, 1).cpu().numpy()
        self.dev_scores.append((set_name, pesq_wb(ref, est, 16000), stoi(ref, est, 16000)))
        return self.hparams.mel_loss(fake, wav).detach().cpu()

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_set.set_epoch(epoch or 0)
        self.dev_scores = []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        scores = dev_summary(self.dev_scores, list(self.hparams.dev_sets))
        cpu_hours = self.cpu_hours()
        self.hparams.train_logger.log_stats(
            stats_meta={
                "epoch": epoch,
                "step": self.optimizer_step,
                "lr": self.hparams.lr * self.lr_factor(),
                "cpu_hours": cpu_hours,
            },
            train_stats={"mel_loss": self.train_loss, **getattr(self, "last_stats", {})},
            valid_stats={"mel_loss": stage_loss, **scores},
        )
        self.checkpointer.save_and_keep_only(
            meta={**scores, "step": self.optimizer_step, "cpu_hours": cpu_hours},
            max_keys=["pesq_wb"],
            num_to_keep=2,
        )


def export(hparams: dict) -> Path:
    """Save the best checkpoint so far (by dev PESQ) as a codec folder; safe while training runs."""
    codec = DMelCodec(**hparams["dmel"], vocoder=hparams["vocoder"])
    return export_best(
        codec,
        hparams["save_folder"],
        hparams["export_folder"],
        {"generator": codec.vocoder},
        keep=("pesq_wb", "stoi", "step", "cpu_hours"),
        dev_sets=hparams["dev_sets"],
        seen_dev_sets=hparams.get("seen_dev_sets") or {},
    )


def main(argv: list[str]) -> None:
    started = start_recipe(argv, export)
    if started is None:
        return
    hparams, run_opts = started
    codec = DMelCodec(**hparams["dmel"], vocoder=hparams["vocoder"])
    residual = ("backbone.blocks.", ConvNeXtBlock.residual_outputs)  # a deeper vocoder grows from its source
    warm_start_matching(hparams, codec.vocoder, lambda src: grown_like(codec.vocoder, src.vocoder, *residual))
    train_set, dev_set = codec_training_sets(hparams, codec.sample_rate)
    modules = {"generator": codec.vocoder, "discriminator": hparams["discriminator"]}
    hparams["checkpointer"].add_recoverables(modules)
    brain = VocoderBrain(modules=modules, hparams=hparams, run_opts=run_opts, checkpointer=hparams["checkpointer"])
    brain.codec, brain.train_set = codec, train_set
    fit_codec_brain(brain, hparams, train_set, dev_set)
    if sb.utils.distributed.if_main_process():
        print(f"exported {export(hparams)}")


if __name__ == "__main__":
    main(sys.argv[1:])
