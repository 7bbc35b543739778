#!/usr/bin/env python3
"""Train a decoder-only token LM for text-to-speech, speech enhancement or as the prior of
entropy-coded token files (`task` in the YAML: tts, enhance, prior).

    python recipes/lm/train.py recipes/lm/tts/hparams/cpu.yaml
    python recipes/lm/train.py recipes/lm/enhance/hparams/gpu.yaml --device cuda:0
    python recipes/lm/train.py recipes/lm/prior/hparams/cpu.yaml       # `speechtok compress`
    torchrun --nproc_per_node 2 recipes/lm/train.py recipes/lm/tts/hparams/gpu.yaml

Every audio folder named by the manifests is tokenised once (`speechtok.lm.data.encode_folders`,
the same token files as `speechtok encode`) into `token_cache/<codec>/` (resumable, shared by later
runs and by all tasks); transcripts are phonemized once into a JSON cache beside it. TTS rows are
[phonemes][sep][prompt][target]: half the time (`prompt_prob`) the prompt is a crop of another
utterance by the same speaker (zero-shot voice), otherwise there is none and the loss covers the
whole utterance, which is what VALL-E continuation needs; with `durations` each phoneme also gets
its length in frames from an aligner trained once on the corpus (cached beside the tokens).
Enhancement rows are [noisy codes][sep][clean codes] on aligned random crops, prior rows
[sep][codes] on random crops. The dev loss is reported per group (TTS: voices seen in training vs
held-out voices, always with a speaker prompt). Re-running the same command resumes (also
mid-epoch, every `ckpt_interval_minutes`); at the end the best or the last end-of-epoch checkpoint
(`export_checkpoint`) is exported as a model folder that `speechtok.tts`, `speechtok.enhance` or
`speechtok.compress` load. "Best" is the lowest dev loss, except for an enhancer with `render_dev`
pairs: those are enhanced after every epoch, and their mean PESQ-wb chooses.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from speechtok.codecs import load_codec
from speechtok.data.audio import load_audio, save_audio
from speechtok.data.manifest import read_manifest
from speechtok.data.rooms import read_rir_list, write_simulated_rirs
from speechtok.data.segments import ItemList, fixed_subset, pesq_scorable
from speechtok.enhance import Enhancer
from speechtok.enhance.data import MixedPairBatches, PairBatches, crop_rows, enhance_items, mixed_pairs
from speechtok.eval.metrics import pesq_wb, stoi
from speechtok.lm import TokenLM, count_parameters
from speechtok.lm.checkpoint import load_lm, save_lm
from speechtok.lm.data import CodeCrops, audio_groups, code_items, encode_folders, fixed_batches
from speechtok.lm.transformer import grow_depth
from speechtok.modules.schedule import WarmupCosineLR
from speechtok.tts import Synthesizer
from speechtok.tts.data import (
    TTSBatches,
    default_prompt,
    durations_path,
    manifest_texts,
    symbols_cache,
    tts_items,
    with_durations,
    with_voices,
)
from speechtok.tts.data import dev_batches as tts_dev_batches
from speechtok.tts.speaker import SpeakerEncoder
from speechtok.tts.text import TextFrontend


# --- data: tokens and phonemes, cached (speechtok.lm.data, speechtok.tts.data, speechtok.enhance.data) ----
def build_caches(hp, manifests, codec) -> None:
    """Tokenise the corpus and, for TTS, phonemize its transcripts and align them (main process only)."""
    cache = Path(hp["token_cache"])
    encode_folders(audio_groups(hp["task"], manifests), codec, cache, hp["codec"], hp.get("encode_workers", 0))
    if hp["task"] == "tts":
        frontend = TextFrontend.for_training(hp["text"]["kind"], hp["text"]["language"])
        symbols_cache(manifest_texts(manifests), frontend, cache)
        if hp.get("durations", False):
            tts_durations(tts_items(manifests, codec, frontend, cache, hp["codec"]), hp, codec, frontend)


def tts_durations(items: list[dict], hp, codec, frontend) -> list[dict]:
    """The items with their aligner durations (`speechtok.tts.data.with_durations`), cached per codec and text."""
    path = durations_path(hp["token_cache"], hp["codec"], hp["text"]["kind"], hp["text"]["language"])
    return with_durations(items, path, codec.codebook_size, frontend.vocab_size, hp["aligner"], hp["seed"])


# --- training -----------------------------------------------------------------------------
class LMBrain(WarmupCosineLR, sb.Brain):
    def compute_forward(self, batch, stage):
        b = {k: v.to(self.device) for k, v in batch.items() if torch.is_tensor(v)}
        return self.modules.lm(
            b["src"],
            b["codes"],
            b["src_len"],
            b["code_len"],
            b["prompt_len"],
            src_durations=b.get("durations"),
            speaker=b.get("voice"),
        )

    def compute_objectives(self, out, batch, stage):
        """The dev loss is the token loss alone (comparable across runs); the duration loss is logged beside it."""
        if stage != sb.Stage.TRAIN:
            n = int((out.targets != -100).sum())
            self.dev_sums[batch["group"]][0] += out.token_loss.item() * n
            self.dev_sums[batch["group"]][1] += n
            if out.duration_loss is not None:
                self.dev_duration[0] += out.duration_loss.item() * len(batch["src_len"])
                self.dev_duration[1] += len(batch["src_len"])
        return out.loss

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_set.set_epoch(epoch or 0)
        self.dev_sums = defaultdict(lambda: [0.0, 0])
        self.dev_duration = [0.0, 0]

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        total = sum(n for _, n in self.dev_sums.values())
        stats = {"loss": sum(s for s, _ in self.dev_sums.values()) / max(total, 1)}
        if len(self.dev_sums) > 1:
            stats.update({f"loss_{g}": s / max(n, 1) for g, (s, n) in sorted(self.dev_sums.items())})
        if self.dev_duration[1]:
            stats["duration_mse"] = self.dev_duration[0] / self.dev_duration[1]
        if self.render_pairs:
            stats.update(self.rendered_scores())
        meta = {
            "epoch": epoch,
            "step": self.optimizer_step,
            "lr": self.hparams.lr * self.lr_factor(),
            "cpu_hours": self.cpu_hours(),
        }
        self.hparams.train_logger.log_stats(stats_meta=meta, train_stats={"loss": self.train_loss}, valid_stats=stats)
        if sb.utils.distributed.if_main_process():
            print(
                f"epoch {epoch} step {self.optimizer_step} train {self.train_loss:.4f} "
                + " ".join(f"{k} {v:.4f}" for k, v in stats.items()),
                flush=True,
            )
        keep = {"max_keys": ["pesq_wb"]} if self.render_pairs else {"min_keys": [dev_key(stats)]}
        self.checkpointer.save_and_keep_only(meta={**stats, "step": self.optimizer_step}, num_to_keep=2, **keep)

    @torch.inference_mode()
    def rendered_scores(self) -> dict[str, float]:
        """Mean PESQ-wb and STOI of the enhancer as it is now on the `render_pairs` (noisy, clean)."""
        lm = self.modules.lm.module if hasattr(self.modules.lm, "module") else self.modules.lm
        meta = {"sampling": dict(self.hparams.sampling), "render": dict(self.hparams.render or {})}
        enhancer, scores = Enhancer(lm, self.codec, meta), []
        for noisy, clean in self.render_pairs:
            est = enhancer.enhance(noisy.to(self.device), seed=0)[0].float().cpu().numpy()
            ref, sr = clean[0].numpy()[: len(est)], self.codec.sample_rate
            try:
                quality = pesq_wb(ref, est[: len(ref)], sr)
            except ValueError:  # the reference is scorable (render_pairs), so the output has no speech left
                quality = 1.0  # PESQ-wb's floor
            scores.append((quality, stoi(ref, est[: len(ref)], sr)))
        return {"pesq_wb": float(np.mean([p for p, _ in scores])), "stoi": float(np.mean([t for _, t in scores]))}


def build_model(hp, codec, src_vocab, src_codebooks, speaker_dim: int = 0) -> TokenLM:
    """The YAML's `lm_config` (an LMConfig template) completed with the codec's codebooks, the
    source vocabulary (the text front-end's, or the codec's for enhancement) and, for TTS with a
    speaker encoder, its embedding size."""
    return TokenLM(
        hp["lm_config"](
            n_codebooks=codec.n_codebooks,
            codebook_size=codec.codebook_size,
            src_vocab=src_vocab,
            src_codebooks=src_codebooks,
            speaker_dim=speaker_dim,
        )
    )


def warm_start(lm: TokenLM, folder: str, task: str, codec) -> None:
    """Start from an exported model's weights (fine-tuning; a resumed run's checkpoint wins).
    What this run adds may be missing there: the `aligned_source` table and the voice projection
    (both start at zero, so the model starts out as the exported one), the duration predictor
    (trained from scratch) and, for a deeper `model.n_layers`, blocks that start as the identity
    (`grow_depth`)."""
    src, meta = load_lm(folder, codec)
    if meta.get("task") != task:
        raise ValueError(f"init_from {folder}: a {meta.get('task')!r} model, this run trains {task!r}")
    state, n_old, n_new = src.state_dict(), src.cfg.transformer.n_layers, lm.cfg.transformer.n_layers
    if n_new > n_old:  # a deeper model: the added blocks start as the identity
        state = grow_depth(state, n_old, n_new)
        print(f"init_from {folder}: grown from {n_old} to {n_new} blocks", flush=True)
    try:
        missing, unexpected = lm.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ValueError(f"init_from {folder}: weights do not fit this model ({exc})") from exc
    new = [k for k in missing if k.startswith(("src_frame_emb.", "duration.", "voice."))]
    if unexpected or len(new) != len(missing):
        raise ValueError(
            f"init_from {folder}: weights do not fit this model (missing {sorted(set(missing) - set(new))}, "
            f"unexpected {sorted(unexpected)})"
        )
    if new:
        print(f"init_from {folder}: new in this run: {', '.join(new)}", flush=True)


def manifest_paths(hp, key, block=None) -> list[Path]:
    return [Path(hp["manifest_folder"]) / m for m in (block or hp)[key]]  # absolute entries stay absolute


def mixed_train_set(hp, codec) -> tuple[MixedPairBatches, dict]:
    """Enhancement pairs mixed on the fly (the YAML's `mix` block) and what they are drawn from."""
    mix = hp["mix"]
    clean = [read_manifest(p) for p in manifest_paths(hp, "clean", mix)]
    noise = [u for p in manifest_paths(hp, "noise", mix) for u in read_manifest(p)]
    rooms = write_simulated_rirs(
        mix["rooms_folder"], mix["simulated_rooms"], "train", mix["room_seed"], codec.sample_rate
    )
    rirs = read_rir_list([*manifest_paths(hp, "rirs", mix), rooms])
    mixer, weights = mixed_pairs(
        clean,
        mix["shares"],
        noise,
        rirs,
        codec,
        hp["crop_frames"],
        snr_range=tuple(mix["snr_range"]),
        reverb_prob=mix["reverb_prob"],
        noise_kinds=dict(mix["noise_kinds"]),
        seed=hp["seed"],
    )
    n_batches = hp["steps_per_epoch"] * hp["grad_accumulation_factor"]
    batches = MixedPairBatches(mixer, weights, codec, n_batches, hp["batch_size"], hp["seed"], mix["gain_db"])
    stats = {
        "train_items": "mixed on the fly",
        "clean_hours": round(sum(u.duration for u in mixer.clean) / 3600, 3),
        "clean_speakers": len({u.speaker for u in mixer.clean if u.speaker}),
        "noise_hours": round(sum(u.duration for u in noise) / 3600, 3),
        "rooms": len(rirs),
    }
    return batches, stats


def item_stats(items: list[dict], codec) -> dict:
    return {
        "train_items": len(items),
        "train_hours": round(sum(r["codes"].shape[-1] for r in items) / codec.frame_rate / 3600, 3),
    }


def prepare(hp, codec):
    """(model, train set, dev batches, extras for export) for the task."""
    train_m, dev_m = manifest_paths(hp, "train_manifests"), manifest_paths(hp, "dev_manifests")
    if hp["task"] == "tts":
        frontend = TextFrontend.for_training(hp["text"]["kind"], hp["text"]["language"])
        encoder = SpeakerEncoder.load(hp["speaker_encoder"]) if hp.get("speaker_encoder") else None
        lm = build_model(hp, codec, frontend.vocab_size, 0, 0 if encoder is None else encoder.dim)
        items = tts_items(train_m + dev_m, codec, frontend, Path(hp["token_cache"]), hp["codec"])
        if lm.cfg.durations:
            items = tts_durations(items, hp, codec, frontend)
        if encoder is not None:
            items = with_voices(items, encoder, codec)
        usable = [
            r
            for r in items
            if r["codes"].shape[-1] <= hp["max_frames"]
            and lm.fits(len(r["src"]), r["codes"].shape[-1] + hp["prompt_frames"])
        ]
        dev_ids = {u.ID for m in dev_m for u in read_manifest(m)}
        train = [r for r in usable if r["id"] not in dev_ids]
        dev = [r for r in usable if r["id"] in dev_ids]
        # the speaking rate a prompt without transcript is generated at: median target steps per symbol
        lm.cfg.default_rate = (
            float(np.median([int(lm.pattern.frame_step(r["codes"].shape[-1])) / len(r["src"]) for r in train]))
            if train
            else 1.0
        )
        dev_batches = tts_dev_batches(
            dev, {r["speaker"] for r in train}, hp["n_dev"], hp["prompt_frames"], hp["max_batch_frames"], hp["seed"]
        )
        train_set = TTSBatches(
            train,
            hp["steps_per_epoch"] * hp["grad_accumulation_factor"],
            hp["max_batch_frames"],
            hp["max_batch_size"],
            hp["prompt_prob"],
            hp["prompt_frames"],
            hp["seed"],
        )
        extra = {
            "frontend": frontend,
            "train": train,
            "dev": dev,
            "train_stats": item_stats(train, codec),
            "speaker_encoder": encoder,
        }
    elif hp["task"] == "enhance":
        lm = build_model(hp, codec, codec.codebook_size, codec.n_codebooks)
        train = enhance_items(train_m, codec, Path(hp["token_cache"]), hp["codec"])
        dev = enhance_items(dev_m, codec, Path(hp["token_cache"]), hp["codec"])
        dev = [dev[j] for j in fixed_subset(len(dev), hp["n_dev"], hp["seed"])]
        crop = hp["crop_frames"]
        dev_batches = fixed_batches(crop_rows(dev, crop), "dev", hp["max_batch_frames"])
        if hp.get("mix"):
            train_set, stats = mixed_train_set(hp, codec)
            train = train_set.mixer.clean
        else:
            train_set = PairBatches(
                train, hp["steps_per_epoch"] * hp["grad_accumulation_factor"], hp["batch_size"], crop, hp["seed"]
            )
            stats = item_stats(train, codec)
        extra = {"train": train, "dev": dev, "train_stats": stats, "render_pairs": render_pairs(hp, dev_m, codec)}
    elif hp["task"] == "prior":
        lm = build_model(hp, codec, 1, 0)
        train = code_items(train_m, codec, Path(hp["token_cache"]), hp["codec"])
        dev = code_items(dev_m, codec, Path(hp["token_cache"]), hp["codec"])
        dev = [dev[j] for j in fixed_subset(len(dev), hp["n_dev"], hp["seed"])]
        crop = hp["crop_frames"]
        rows = [{"src": torch.zeros(0, dtype=torch.long), "codes": r["codes"][:, :crop]} for r in dev]
        dev_batches = fixed_batches(rows, "dev", hp["max_batch_frames"])
        train_set = CodeCrops(
            train, hp["steps_per_epoch"] * hp["grad_accumulation_factor"], hp["batch_size"], crop, hp["seed"]
        )
        extra = {"train": train, "dev": dev, "train_stats": item_stats(train, codec)}
    else:
        raise ValueError(f"task must be 'tts', 'enhance' or 'prior', got {hp['task']!r}")
    if not train or not dev_batches:
        raise ValueError(f"no usable {hp['task']} training or dev data (check the manifests and max_frames)")
    return lm, train_set, dev_batches, extra


def render_pairs(hp, dev_manifests, codec) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(noisy, clean) waveforms of `render_dev` dev pairs (a fixed subset), enhanced and scored after
    every epoch: the dev loss rewards exact dMel levels, which is not what the rendered audio needs."""
    rows, pairs = [u for m in dev_manifests for u in read_manifest(m)], []
    for j in np.random.default_rng(hp["seed"]).permutation(len(rows)) if hp.get("render_dev") else []:
        clean = load_audio(rows[j].extra["clean_path"], codec.sample_rate)
        if pesq_scorable(clean[0].numpy(), codec.sample_rate):  # PESQ finds no speech in some 1 s clips
            pairs.append((load_audio(rows[j].path, codec.sample_rate), clean))
        if len(pairs) == hp["render_dev"]:
            break
    return pairs


def dev_key(stats: dict) -> str:
    """The dev loss that chooses checkpoints: on the voices training never heard (`loss_new`) where the
    dev set has them apart, else the whole dev loss; seen voices are reported, never used to choose."""
    return "loss_new" if "loss_new" in stats else "loss"


def export(brain: LMBrain, hp: dict, codec, extra: dict) -> Path:
    """Save the best checkpoint (lowest dev loss, `dev_key`; `export_checkpoint: last` for the newest) as a
    model folder; write a few samples beside it. Only end-of-epoch checkpoints have a dev loss
    and a step, so mid-epoch ones are never exported."""
    key = {"ckpt_predicate": lambda c: "step" in c.meta}
    if hp.get("export_checkpoint", "best") != "last":
        ckpts = brain.checkpointer.list_checkpoints()
        lowest = {"min_key": dev_key(ckpts[-1].meta if ckpts else {})}
        key.update({"max_key": "pesq_wb"} if extra.get("render_pairs") else lowest)
    ckpt = brain.checkpointer.find_checkpoint(**key)
    if ckpt is None:
        raise SystemExit(f"export: no end-of-epoch checkpoint in {hp['save_folder']} yet")
    brain.checkpointer.recover_if_possible(**key)
    lm = brain.modules.lm.module if hasattr(brain.modules.lm, "module") else brain.modules.lm
    lm = lm.float().cpu().eval()
    training = {
        "step": ckpt.meta["step"],
        **{
            k: round(v, 4)
            for k, v in ckpt.meta.items()
            if k.startswith("loss") or k in ("duration_mse", "pesq_wb", "stoi")
        },
        "parameters": count_parameters(lm),
        **extra["train_stats"],
    }
    out = Path(hp["export_folder"])
    samples = Path(hp["output_folder"]) / "samples"
    if hp["task"] == "tts":
        prompt = default_prompt(extra["train"], hp["default_voice"], codec.frame_rate)
        if prompt is not None:
            path = prompt.pop("path")
            if codec.takes_prompt:  # its decoder renders the default voice from the sound, not the codes
                prompt["audio"] = load_audio(path, codec.sample_rate)[0]
        save_lm(
            out,
            lm,
            "tts",
            codec,
            text=extra["frontend"].config(),
            default_prompt=prompt,
            sampling=dict(hp["sampling"]),
            render=dict(hp.get("render") or {}),
            training=training,
            speaker_encoder=extra["speaker_encoder"],
        )
        runner = Synthesizer(
            lm, codec, {**json.loads((out / "config.json").read_text()), "default_prompt": prompt}, out
        )
        for r in extra["dev"][: hp["n_export_samples"]]:
            save_audio(samples / f"{r['id']}.wav", runner.tts(r["text"], seed=0, max_seconds=15)[0], codec.sample_rate)
    elif hp["task"] == "prior":  # dev loss in nats per code -> bits per second of audio
        bits = training["loss"] / np.log(2) * codec.n_codebooks * codec.frame_rate
        save_lm(out, lm, "prior", codec, training={**training, "dev_bits_per_second": round(float(bits), 1)})
    else:
        save_lm(
            out,
            lm,
            "enhance",
            codec,
            sampling=dict(hp["sampling"]),
            render=dict(hp.get("render") or {}),
            training={**training, "crop_frames": hp["crop_frames"]},
        )  # the enhancer's chunk size
        runner = Enhancer(lm, codec, json.loads((out / "config.json").read_text()), out)
        for r in extra["dev"][: hp["n_export_samples"]]:
            wav = codec.decode(r["noisy"][None].long())[0]
            save_audio(samples / f"{r['id']}.noisy-codec.wav", wav, codec.sample_rate)
            save_audio(samples / f"{r['id']}.enhanced.wav", runner.enhance(wav, seed=0), codec.sample_rate)
    return out


def main(argv: list[str]) -> None:
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file) as f:
        hp = load_hyperpyyaml(f, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    sb.create_experiment_directory(
        experiment_directory=hp["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
    )
    codec = load_codec(hp["codec"])
    # tokenise (and phonemize) on the main process only; then every process reads the caches
    manifests = manifest_paths(hp, "train_manifests") + manifest_paths(hp, "dev_manifests")
    sb.utils.distributed.run_on_main(build_caches, args=[hp, manifests, codec])
    lm, train_set, dev_batches, extra = prepare(hp, codec)
    if hp.get("init_from"):
        warm_start(lm, hp["init_from"], hp["task"], codec)
    if sb.utils.distributed.if_main_process():
        print(
            f"{hp['task']}: {count_parameters(lm) / 1e6:.2f} M parameters, {len(extra['train'])} training items"
            f"{' (clean speech, mixed on the fly)' if hp.get('mix') else ''}, "
            f"{len(dev_batches)} dev batches",
            flush=True,
        )
    hp["checkpointer"].add_recoverable("lm", lm)
    brain = LMBrain(
        modules={"lm": lm}, opt_class=hp["opt_class"], hparams=hp, run_opts=run_opts, checkpointer=hp["checkpointer"]
    )
    brain.train_set, brain.codec, brain.render_pairs = train_set, codec, extra.get("render_pairs") or []
    if not hp.get("export_only", False):  # export_only: export what is there so far, e.g. mid-run
        brain.fit(
            hp["epoch_counter"],
            train_set,
            ItemList(dev_batches),
            train_loader_kwargs={"batch_size": None, "num_workers": hp["num_workers"]},
            valid_loader_kwargs={"batch_size": None},
        )
    if sb.utils.distributed.if_main_process():
        print(f"exported {export(brain, hp, codec.cpu(), extra)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
