#!/usr/bin/env python3
"""Train the gain refiner of an enhancer (`speechtok.enhance.GainRefiner`).

    python recipes/lm/enhance/train_refiner.py recipes/lm/enhance/hparams/refiner.yaml

1. Collect: the enhancer runs on each noisy/clean pair as `speechtok enhance` would (`workers`
   processes sharing `threads`), and what the refiner reads (the noisy log-mel and the rows'
   clean log-mel at each input gain) is kept beside the clean log-mel, one file a pair (a
   re-run skips the pairs already done).
2. Train: L1 between the refiner's log gains and the clean signal's own (clean minus noisy
   log-mel, clipped to [log floor, 0]) on random crops; the dev loss over held-out pairs picks
   the checkpoint: the `dev_manifests` pairs (unseen voices in unseen noise), else the first
   `n_dev` training pairs. Re-running the command resumes.
3. Export: the enhancer's folder with `refiner.safetensors` and the refiner's settings and
   training figures under `refiner` in config.json; `speechtok enhance --model` that folder.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from speechtok.data.audio import load_audio
from speechtok.data.manifest import read_manifest
from speechtok.enhance import GainRefiner, load_enhancer
from speechtok.modules.schedule import WarmupCosineLR


class RefinerBrain(WarmupCosineLR, sb.Brain):
    def compute_forward(self, batch, stage):
        noisy, targets, clean, mask = (t.to(self.device) for t in batch)
        return self.modules.refiner(noisy, targets), noisy, clean, mask

    def compute_objectives(self, predictions, batch, stage):
        log_gain, noisy, clean, mask = predictions
        wanted = (clean - noisy).clamp(math.log(self.modules.refiner.floor), 0)
        mask = mask[:, None]
        return ((log_gain - wanted).abs() * mask).sum() / (mask.sum() * log_gain.shape[1]).clamp(min=1)

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_set.epoch = epoch or 0

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        self.hparams.train_logger.log_stats(
            stats_meta={"epoch": epoch, "step": self.optimizer_step, "lr": self.hparams.lr * self.lr_factor()},
            train_stats={"loss": self.train_loss},
            valid_stats={"loss": stage_loss},
        )
        print(f"epoch {epoch} step {self.optimizer_step} train {self.train_loss:.4f} dev {stage_loss:.4f}", flush=True)
        self.checkpointer.save_and_keep_only(
            meta={"loss": stage_loss, "step": self.optimizer_step}, min_keys=["loss"], num_to_keep=2
        )


class Crops(torch.utils.data.Dataset):
    """`steps` x `batch` random crops of the collected pairs, drawn anew each epoch (seeded)."""

    def __init__(self, items: list[dict], frames: int, size: int, seed: int):
        self.items, self.frames, self.size, self.seed, self.epoch = items, frames, size, seed, 0

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 100_003 + i)
        item = self.items[int(torch.randint(len(self.items), (1,), generator=g))]
        n = item["noisy"].shape[-1]
        start = int(torch.randint(max(n - self.frames, 0) + 1, (1,), generator=g))
        return padded({k: v[..., start : start + self.frames] for k, v in item.items()}, self.frames)


def padded(item: dict, frames: int) -> tuple:
    """(noisy, targets, clean, mask) zero-padded to `frames`; the mask marks the real frames."""
    pad = frames - item["noisy"].shape[-1]
    mask = torch.cat([torch.ones(item["noisy"].shape[-1]), torch.zeros(pad)])
    return (*(torch.nn.functional.pad(item[k], (0, pad)) for k in ("noisy", "targets", "clean")), mask)


def collect(hp: dict, manifests: list[str]) -> list[dict]:
    """What the refiner reads for each pair, computed once into inputs_folder by `workers` processes."""
    rows = [u for m in manifests for u in read_manifest(m)][: hp["limit"]]
    if not rows:
        raise SystemExit(f"no pairs in {manifests}")
    folder = Path(hp["inputs_folder"])
    folder.mkdir(parents=True, exist_ok=True)
    todo = [(u.ID, u.path, u.extra["clean_path"]) for u in rows if not (folder / f"{u.ID}.safetensors").exists()]
    if todo:
        workers = max(1, min(hp["workers"], len(todo)))
        with ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(hp["enhancer"], max(1, hp["threads"] // workers), folder),
        ) as pool:
            list(tqdm(pool.map(_collect_pair, todo), total=len(todo), desc="refiner inputs"))
    return [load_file(str(folder / f"{u.ID}.safetensors")) for u in rows]


_worker: dict = {}


def _start_worker(enhancer: str, threads: int, folder: Path) -> None:
    torch.set_num_threads(threads)
    _worker["enhancer"], _worker["folder"] = load_enhancer(enhancer), folder


def _collect_pair(pair: tuple[str, str, str]) -> None:
    uid, noisy_path, clean_path = pair
    enhancer = _worker["enhancer"]
    noisy, targets = enhancer.refiner_inputs(noisy_path)
    clean = load_audio(clean_path, enhancer.sample_rate).reshape(1, 1, -1)
    clean = torch.nn.functional.pad(clean, (0, noisy.shape[-1] * enhancer.codec.hop_length - clean.shape[-1]))
    save_file(
        {
            "noisy": noisy.contiguous(),
            "targets": targets.contiguous(),
            "clean": enhancer.codec.log_mel(clean)[0].contiguous(),
        },
        str(_worker["folder"] / f"{uid}.safetensors"),
    )


def export(hp: dict, refiner: GainRefiner, checkpointer, n_train: int) -> Path:
    """The enhancer's folder with the best refiner so far (dev loss) beside its weights."""
    best = checkpointer.recover_if_possible(min_key="loss")
    if best is None:
        raise SystemExit(f"no checkpoint in {hp['save_folder']} to export")
    source = load_enhancer(hp["enhancer"]).path
    out = Path(hp["export_folder"])
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(source) / name, out / name)
    refiner.save(out)
    meta = json.loads((out / "config.json").read_text())
    meta["refiner"] = {
        "config": refiner.config(),
        "training": {
            "step": best.meta["step"],
            "dev_loss": round(best.meta["loss"], 5),
            "train_pairs": n_train,
            "parameters": sum(p.numel() for p in refiner.parameters()),
        },
    }
    (out / "config.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return out


def main(argv: list[str]) -> None:
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file) as f:
        hp = load_hyperpyyaml(f, overrides)
    torch.set_num_threads(hp["threads"])
    sb.create_experiment_directory(
        experiment_directory=hp["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
    )
    items = collect(hp, hp["manifests"])
    if hp["dev_manifests"]:
        train, dev = items, collect(hp, hp["dev_manifests"])
    elif len(items) <= hp["n_dev"]:
        raise SystemExit(f"{len(items)} pairs: need more than n_dev={hp['n_dev']}")
    else:
        train, dev = items[hp["n_dev"] :], items[: hp["n_dev"]]
    refiner = GainRefiner(n_mels=items[0]["noisy"].shape[0], **hp["refiner"])
    hp["checkpointer"].add_recoverable("refiner", refiner)
    if not hp["export_only"]:
        brain = RefinerBrain(
            modules={"refiner": refiner},
            opt_class=hp["opt_class"],
            hparams=hp,
            run_opts=run_opts,
            checkpointer=hp["checkpointer"],
        )
        brain.train_set = Crops(train, hp["crop_frames"], hp["steps_per_epoch"] * hp["batch_size"], hp["seed"])
        dev_set = [padded(item, item["noisy"].shape[-1]) for item in dev]
        brain.fit(
            hp["epoch_counter"],
            brain.train_set,
            dev_set,
            train_loader_kwargs={"batch_size": hp["batch_size"], "shuffle": False},
            valid_loader_kwargs={"batch_size": 1},
        )
    print(f"exported {export(hp, refiner, hp['checkpointer'], len(train))}")


if __name__ == "__main__":
    main(sys.argv[1:])
