#!/usr/bin/env python3
"""Train the speaker encoder (`speechtok.tts.speaker.SpeakerEncoder`) that conditions TTS on a voice.

    OMP_NUM_THREADS=1 python recipes/speaker/train.py recipes/speaker/hparams/ecapa.yaml

The training clips are tokenised once with the dMel codec (`token_cache`, shared with the LM
recipes); batches are 3 s crops of dequantised levels, speakers drawn uniformly; the loss is
SpeechBrain's additive angular margin softmax. Each epoch scores the equal error rate over all
pairs of the unseen dev voices; the lowest mean is exported. Re-running resumes.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from speechbrain.lobes.models.ECAPA_TDNN import Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

from speechtok.codecs import load_codec
from speechtok.data.manifest import read_manifest
from speechtok.data.segments import ItemList
from speechtok.lm.data import audio_groups, encode_folders, load_codes, token_paths
from speechtok.modules.schedule import WarmupCosineLR
from speechtok.tokens import codec_hash
from speechtok.training import export_checkpoint, start_recipe
from speechtok.tts.speaker import SpeakerCrops, SpeakerEncoder, dev_trials, equal_error_rate


class SpeakerBrain(WarmupCosineLR, sb.Brain):
    def compute_forward(self, batch, stage):
        mel = self.codec.dequantize(batch["levels"].to(self.device).long())
        return self.modules.encoder(mel, batch["lengths"].to(self.device))

    def compute_objectives(self, emb, batch, stage):
        if stage != sb.Stage.TRAIN:
            self.dev_rows.append((batch["set"], batch["speaker"], emb[0].detach()))
            return torch.zeros(())
        logits = self.modules.classifier(emb[:, None])  # cosine to each speaker's weight vector
        return self.loss(logits, batch["labels"].to(self.device)[:, None])

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_set.set_epoch(epoch or 0)
        self.dev_rows = []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        stats = {}
        for name in dict.fromkeys(r[0] for r in self.dev_rows):
            rows = [r for r in self.dev_rows if r[0] == name]
            stats[f"{name}_eer"] = equal_error_rate(torch.stack([r[2] for r in rows]), [r[1] for r in rows])
        stats["eer"] = float(np.mean(list(stats.values())))
        self.hparams.train_logger.log_stats(
            stats_meta={"epoch": epoch, "step": self.optimizer_step, "cpu_hours": self.cpu_hours()},
            train_stats={"loss": self.train_loss},
            valid_stats=stats,
        )
        meta = {**stats, "step": self.optimizer_step, "cpu_hours": self.cpu_hours()}
        self.checkpointer.save_and_keep_only(meta=meta, min_keys=["eer"], num_to_keep=2)


def clips_by_speaker(manifests, codec, cache: Path) -> dict[str, list[torch.Tensor]]:
    """Each speaker's clips as dMel levels [n_mels, F] (uint8), tokenised once into `cache`."""
    groups = audio_groups("speaker", manifests)
    encode_folders(groups, codec, cache)
    tokens, want = token_paths(groups, codec.name, cache), codec_hash(codec)
    clips = defaultdict(list)
    for m in manifests:
        for u in read_manifest(m):
            codes = load_codes(tokens[u.path], want) if u.path in tokens else None
            if codes is not None:
                clips[u.speaker or u.ID].append(codes.to(torch.uint8))
    return dict(clips)


def export(hparams: dict) -> Path:
    """The checkpoint with the lowest mean EER on unseen voices, as a speaker encoder folder."""
    encoder = SpeakerEncoder(**hparams["encoder"])
    return export_checkpoint(
        hparams["save_folder"],
        {"encoder": encoder},
        lambda: encoder.save(hparams["export_folder"]),
        min_key="eer",
        codec=hparams["codec"],
        dev_sets=hparams["dev_sets"],
    )


def main(argv: list[str]) -> None:
    started = start_recipe(argv, export)
    if started is None:
        return
    hparams, run_opts = started
    codec = load_codec(hparams["codec"])
    cache = Path(hparams["token_cache"])
    clips = clips_by_speaker(hparams["train_manifests"], codec, cache)
    clips = {s: [c for c in cs if c.shape[-1] >= hparams["min_frames"]] for s, cs in clips.items()}
    train_set = SpeakerCrops(
        {s: cs for s, cs in clips.items() if cs},
        hparams["crop_frames"],
        hparams["batch_size"],
        hparams["steps_per_epoch"],
        hparams["seed"],
    )
    dev = []
    for name, path in hparams["dev_sets"].items():
        trial_clips, speakers = dev_trials(clips_by_speaker([path], codec, cache), hparams["dev_max_frames"])
        dev += [
            {"levels": c[None], "lengths": torch.ones(1), "set": name, "speaker": s}
            for c, s in zip(trial_clips, speakers)
            if c.shape[-1] >= hparams["min_frames"] // 2
        ]
    print(f"{len(train_set.speakers)} training speakers, {len(dev)} dev clips", flush=True)
    encoder = SpeakerEncoder(**hparams["encoder"])
    classifier = Classifier(hparams["encoder"]["dim"], out_neurons=len(train_set.speakers))
    hparams["checkpointer"].add_recoverable("encoder", encoder)
    hparams["checkpointer"].add_recoverable("classifier", classifier)
    brain = SpeakerBrain(
        modules={"encoder": encoder, "classifier": classifier},
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.codec, brain.train_set = codec.to(brain.device), train_set
    brain.loss = LogSoftmaxWrapper(AdditiveAngularMargin(margin=hparams["margin"], scale=hparams["scale"]))
    brain.fit(
        hparams["epoch_counter"],
        train_set,
        ItemList(dev),
        train_loader_kwargs={"batch_size": None, "num_workers": 0},
        valid_loader_kwargs={"batch_size": None},
    )
    if sb.utils.distributed.if_main_process():
        print(f"exported {export(hparams)}")


if __name__ == "__main__":
    main(sys.argv[1:])
