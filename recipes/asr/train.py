#!/usr/bin/env python3
"""Train a character CTC head over a codec's tokens (`speechtok transcribe`).

    python recipes/asr/train.py recipes/asr/hparams/ctc-semantic-16k-25.yaml

Transcripts: cathy's, the crowd keywords, LibriSpeech's few official ones, and Whisper tiny.en
pseudo-labels where a `<manifest>_pl.csv` exists (recipes/data/pseudo_label.py). The codes come
from the semantic recipe's cached teacher states, so training runs on tokens only. Each epoch
scores WER and CER by greedy decoding on the dev sets; the checkpoint with the lowest mean WER on
unseen voices is exported as a transcriber folder. Re-running resumes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch

from speechtok.asr import TokenCTC, Transcriber, text_for_ctc
from speechtok.asr.data import CTCBatches, corrupt_codes, error_rates, pad_batch, targets, transcribed
from speechtok.codecs import load_codec
from speechtok.data.segments import ItemList
from speechtok.data.states import cached_states
from speechtok.modules.schedule import WarmupCosineLR
from speechtok.training import export_checkpoint, start_recipe


class CTCBrain(WarmupCosineLR, sb.Brain):
    def compute_forward(self, batch, stage):
        codes = batch["codes"].to(self.device)
        if stage == sb.Stage.TRAIN:
            codes = corrupt_codes(codes, self.hparams.code_noise, self.modules.model.config["codebook_size"])
        return self.modules.model(codes, batch["code_lengths"].to(self.device))

    def compute_objectives(self, log_probs, batch, stage):
        loss = torch.nn.functional.ctc_loss(
            log_probs.transpose(0, 1),
            batch["targets"].to(self.device),
            batch["code_lengths"].to(self.device),
            batch["target_lengths"].to(self.device),
            zero_infinity=True,
        )
        if stage != sb.Stage.TRAIN:
            hyps = TokenCTC.greedy(log_probs, batch["code_lengths"])
            self.dev_rows += [(batch["set"], ref, hyp) for ref, hyp in zip(batch["texts"], hyps)]
        return loss

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_set.set_epoch(epoch or 0)
        self.dev_rows = []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        stats = {"ctc": stage_loss, **error_rates(self.dev_rows)}
        unseen = [s for s in self.hparams.dev_sets if f"{s}_wer" in stats]  # sets with transcripts
        stats["wer"] = float(np.mean([stats[f"{s}_wer"] for s in unseen]))
        stats["cer"] = float(np.mean([stats[f"{s}_cer"] for s in unseen]))
        self.hparams.train_logger.log_stats(
            stats_meta={"epoch": epoch, "step": self.optimizer_step, "lr": self.hparams.lr * self.lr_factor()},
            train_stats={"loss": self.train_loss},
            valid_stats=stats,
        )
        print(f"epoch {epoch} step {self.optimizer_step} " + " ".join(f"{k} {v:.3f}" for k, v in stats.items()))
        self.checkpointer.save_and_keep_only(meta={**stats, "step": self.optimizer_step}, min_keys=["wer"])


def codes_reader(codec, caches):
    """codes [1, F] of an utterance, from its manifest's cached teacher states."""
    by_id = {uid: cache for cache in caches.values() for uid in cache.ids}

    def codes_of(u):
        return codec.quantize(torch.from_numpy(by_id[u.ID][u.ID].astype(np.float32)))[None]

    return codes_of, by_id


def dev_batches(hparams, codes_of, known) -> list[dict]:
    """One batch per dev utterance with a transcript, tagged with its set."""
    items = []
    for name, path in {**hparams["dev_sets"], **hparams["seen_dev_sets"]}.items():
        for u in transcribed(path):
            if u.ID in known:
                batch = pad_batch([(codes_of(u), targets(u.text))])
                items.append({**batch, "set": name, "texts": [text_for_ctc(u.text)]})
    return items


def export(hparams: dict) -> Path:
    """The best checkpoint (lowest mean WER on unseen voices) as a transcriber folder."""
    codec = load_codec(hparams["codec"])
    model = TokenCTC(codec.max_codebooks, codec.codebook_size, **hparams["model"])
    codec.name = hparams["codec_name"]
    return export_checkpoint(
        hparams["save_folder"],
        {"model": model},
        lambda: Transcriber(codec, model).save(hparams["export_folder"]),
        min_key="wer",
        dev_sets=hparams["dev_sets"],
        seen_dev_sets=hparams["seen_dev_sets"],
    )


def main(argv: list[str]) -> None:
    started = start_recipe(argv, export)
    if started is None:
        return
    hparams, run_opts = started
    codec = load_codec(hparams["codec"])
    manifests = [*hparams["train_manifests"], *hparams["dev_sets"].values(), *hparams["seen_dev_sets"].values()]
    codes_of, known = codes_reader(codec, cached_states(codec, manifests, hparams["state_cache"]))
    sources = [[u for u in transcribed(p) if u.ID in known] for p in hparams["train_manifests"]]
    train_set = CTCBatches(
        sources, codes_of, hparams["steps_per_epoch"], hparams["batch_size"], hparams["source_shares"], hparams["seed"]
    )
    print(f"training on {len(train_set.rows)} transcribed utterances", flush=True)
    model = TokenCTC(codec.max_codebooks, codec.codebook_size, **hparams["model"])
    hparams["checkpointer"].add_recoverable("model", model)
    brain = CTCBrain(
        modules={"model": model},
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.train_set = train_set
    brain.fit(
        hparams["epoch_counter"],
        train_set,
        ItemList(dev_batches(hparams, codes_of, known)),
        train_loader_kwargs={"batch_size": None, "num_workers": hparams["num_workers"]},
        valid_loader_kwargs={"batch_size": None},
    )
    if sb.utils.distributed.if_main_process():
        print(f"exported {export(hparams)}")


if __name__ == "__main__":
    main(sys.argv[1:])
