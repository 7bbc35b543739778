#!/usr/bin/env python3
"""Fit the semantic tokenizer `semantic-16k-25` and train its prompted token-to-mel decoder.

    python recipes/codec/semantic/train.py recipes/codec/semantic/hparams/semantic-16k-25.yaml
    python recipes/codec/semantic/train.py recipes/codec/semantic/hparams/semantic-16k-25.yaml --train_decoder False

1. Whisper tiny.en's pooled encoder states of every train and dev utterance are cached once
   (`state_cache`, one .npz per manifest).
2. k-means over `kmeans_frames` of them, drawn by source share and speaker, gives the centroids:
   the tokenizer (`tokenizer_folder`), which encodes but cannot decode.
3. The decoder learns log-mel from tokens given a prompt: crops of `crop_seconds`, the first
   `prompt_seconds` (random) given as log-mel and tokens, the rest predicted (L1 on normalised
   log-mel; with `decoder.flow_steps`, L1 of the flow's clean estimate from a noisy log-mel at a
   random time, the dev set's noise and times seeded). The checkpoint with the lowest dev loss on
   unseen voices is exported with the centroids as a codec that decodes with a voice prompt.
   Re-running resumes; `init_from` warm-starts a fresh run's decoder from a codec folder (what fits).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch

from speechtok.codecs import SemanticCodec, WhisperTeacher, load_codec
from speechtok.data.manifest import read_manifest
from speechtok.data.segments import ItemList, balanced_weights
from speechtok.data.states import StateCache, cached_states
from speechtok.data.token_crops import PromptedCrops, dev_crops
from speechtok.modules.encoder import ConvTransformer
from speechtok.modules.schedule import WarmupCosineLR
from speechtok.training import export_best, grown_like, start_recipe, warm_start_matching


class DecoderBrain(WarmupCosineLR, sb.Brain):
    def compute_forward(self, batch, stage):
        codec = self.modules.codec
        codes, wav, prompt_codes = batch["codes"], batch["wav"].to(self.device), batch["prompt_codes"]
        with torch.no_grad():
            mel = codec.normalise(codec.log_mel(wav))[..., : codes.shape[1] * codec.pool]
        p, decoder = prompt_codes * codec.pool, codec.mel_decoder
        inputs, target = (codes[:, prompt_codes:], codes[:, :prompt_codes], mel[..., :p]), mel[..., p:]
        if decoder.flow_steps:
            noise_source = None if stage == sb.Stage.TRAIN else self.dev_noise
            t = torch.rand(target.shape[0], generator=noise_source).to(self.device)
            noise = torch.randn(target.shape, generator=noise_source).to(self.device)
            noisy = (1 - t)[:, None, None] * noise + t[:, None, None] * target
            return decoder.denoise(*inputs, noisy, t), target
        if stage == sb.Stage.TRAIN and decoder.levels:
            return decoder.level_logits(*inputs), target
        return decoder(*inputs), target

    def compute_objectives(self, predictions, batch, stage):
        """Training: L1 on normalised log-mel, or cross-entropy over the levels when the decoder
        classifies; dev: L1 of the (expected) log-mel either way, so runs compare."""
        pred, target = predictions
        levels = self.modules.codec.mel_decoder.levels
        if stage == sb.Stage.TRAIN and levels:
            classes = torch.round((target + 1) / 2 * (levels - 1)).long()
            return torch.nn.functional.cross_entropy(pred, classes)
        return (pred - target).abs().mean()

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_set.set_epoch(epoch or 0)
        self.dev_noise = torch.Generator().manual_seed(0)  # the same noise and times at every evaluation

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        stats = {"mel_l1": stage_loss}
        self.hparams.train_logger.log_stats(
            stats_meta={
                "epoch": epoch,
                "step": self.optimizer_step,
                "lr": self.hparams.lr * self.lr_factor(),
                "cpu_hours": self.cpu_hours(),
            },
            train_stats={"loss": self.train_loss},
            valid_stats=stats,
        )
        print(f"epoch {epoch} step {self.optimizer_step} dev mel_l1 {stage_loss:.4f}", flush=True)
        self.checkpointer.save_and_keep_only(
            meta={**stats, "step": self.optimizer_step, "cpu_hours": self.cpu_hours()},
            min_keys=["mel_l1"],
            num_to_keep=2,
        )


def build_codec(hparams: dict, decoder: bool) -> SemanticCodec:
    """The config's codec, its teacher resolved, rendering with `vocoder_from`'s vocoder (borrowed, frozen)."""
    dmel = load_codec(hparams["vocoder_from"])
    teacher = WhisperTeacher(hparams["teacher"])
    mel = {k: v for k, v in dmel.token_config().items() if k not in ("sample_rate", "frame_rate", "n_bins")}
    codec = SemanticCodec(
        **hparams["codec"],
        teacher=str(hparams["teacher"] or "tiny.en"),
        teacher_digest=teacher.digest(),
        teacher_dim=teacher.dim,
        decoder=hparams["decoder"] if decoder else None,
        mel=mel,
        vocoder_from=hparams["vocoder_from"],
    )
    codec.set_teacher(teacher)
    return codec


def state_caches(hparams: dict, codec: SemanticCodec) -> dict[str, StateCache]:
    """Teacher states of every manifest the recipe reads, by manifest path (computed once)."""
    paths = [*hparams["train_manifests"], *hparams["dev_sets"].values(), *hparams["seen_dev_sets"].values()]
    return cached_states(codec, paths, hparams["state_cache"])


def fit_tokenizer(hparams: dict, caches: dict[str, StateCache]) -> SemanticCodec:
    """k-means over states drawn by source share and speaker; saved to `tokenizer_folder`."""
    out = Path(hparams["tokenizer_folder"])
    if (out / "model.safetensors").exists():
        return load_codec(out)
    codec = build_codec(hparams, decoder=False)
    sources = [[u for u in read_manifest(p) if u.ID in caches[str(p)].index] for p in hparams["train_manifests"]]
    weights = balanced_weights(sources, hparams["source_shares"])
    rows = [(caches[str(p)], u.ID) for p, utts in zip(hparams["train_manifests"], sources) for u in utts]
    lengths = np.array([len(cache[uid]) for cache, uid in rows])
    rng = np.random.default_rng(hparams["seed"])
    picks = rng.choice(len(rows), size=hparams["kmeans_frames"], p=weights)  # utterance of each frame
    states = np.stack([rows[k][0][rows[k][1]][rng.integers(lengths[k])] for k in picks]).astype(np.float32)
    inertia = codec.fit_quantizer(states, seed=hparams["seed"])
    codec.save_pretrained(out)
    record = {"kmeans_frames": len(states), "inertia_per_frame": inertia, "train_manifests": hparams["train_manifests"]}
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"tokenizer: {len(states)} frames, inertia {inertia:.2f} per frame -> {out}", flush=True)
    return load_codec(out)


def export(hparams: dict) -> Path:
    """The best decoder checkpoint (dev mel L1) with the tokenizer's centroids, as one codec folder."""
    codec = build_codec(hparams, decoder=True)
    tokenizer = load_codec(hparams["tokenizer_folder"])
    for name in ("mean", "std", "centroids"):
        getattr(codec, name).copy_(getattr(tokenizer, name))
    return export_best(
        codec,
        hparams["save_folder"],
        hparams["export_folder"],
        {"decoder": codec.mel_decoder},
        keep=("step", "cpu_hours", "mel_l1"),
        min_key="mel_l1",
        dev_sets=hparams["dev_sets"],
    )


def main(argv: list[str]) -> None:
    started = start_recipe(argv, export)
    if started is None:
        return
    hparams, run_opts = started
    caches = state_caches(hparams, build_codec(hparams, decoder=False))
    tokenizer = fit_tokenizer(hparams, caches)
    if not hparams["train_decoder"]:
        return
    codec = build_codec(hparams, decoder=True)
    codec.centroids.copy_(tokenizer.centroids), codec.mean.copy_(tokenizer.mean), codec.std.copy_(tokenizer.std)
    decoder, residual = codec.mel_decoder, ("transformer.layers.", ConvTransformer.residual_outputs)
    warm_start_matching(hparams, decoder, lambda src: grown_like(decoder, src.mel_decoder, *residual))
    train_set = PromptedCrops(
        codec,
        [read_manifest(p) for p in hparams["train_manifests"]],
        [caches[str(p)] for p in hparams["train_manifests"]],
        hparams,
    )
    dev_items = dev_crops(codec, [(read_manifest(p), caches[str(p)]) for p in hparams["dev_sets"].values()], hparams)
    hparams["checkpointer"].add_recoverable("decoder", codec.mel_decoder)
    brain = DecoderBrain(
        modules={"codec": codec},
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.train_set = train_set
    brain.fit(
        hparams["epoch_counter"],
        train_set,
        ItemList(dev_items),
        train_loader_kwargs={"batch_size": None, "num_workers": hparams["num_workers"]},
        valid_loader_kwargs={"batch_size": None},
    )
    if sb.utils.distributed.if_main_process():
        print(f"exported {export(hparams)}")


if __name__ == "__main__":
    main(sys.argv[1:])
