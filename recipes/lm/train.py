#!/usr/bin/env python3
"""Train a decoder-only token LM for text-to-speech or speech enhancement (`task` in the YAML).

    python recipes/lm/train.py recipes/lm/tts/hparams/cpu.yaml
    python recipes/lm/train.py recipes/lm/enhance/hparams/gpu.yaml --device cuda:0
    torchrun --nproc_per_node 2 recipes/lm/train.py recipes/lm/tts/hparams/gpu.yaml

Every audio folder named by the manifests is tokenised once with `speechtok encode` into
`token_cache/<codec>/` (resumable, shared by later runs and by both tasks); transcripts are
phonemized once into a JSON cache beside it. TTS rows are [phonemes][sep][prompt][target]:
half the time (`prompt_prob`) the prompt is a crop of another utterance by the same speaker
(zero-shot voice), otherwise there is none and the loss covers the whole utterance, which
is what VALL-E continuation needs; with `durations` each phoneme also gets its length in frames
from an aligner trained once on the corpus (cached beside the tokens). Enhancement rows are
[noisy codes][sep][clean codes] on
aligned random crops. The dev loss is reported per group (TTS: voices seen in training vs
held-out voices, always with a speaker prompt). Re-running the same command resumes (also
mid-epoch, every `ckpt_interval_minutes`); at the end the best (dev loss) or the last
end-of-epoch checkpoint (`export_checkpoint`) is exported as a model folder that `speechtok.tts` / `speechtok.enhance` load.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from torch.nn.utils.rnn import pad_sequence

from speechtok.codecs import load_codec
from speechtok.data.audio import save_audio
from speechtok.data.manifest import read_manifest
from speechtok.data.segments import EpochSeeded, ItemList, fixed_subset
from speechtok.enhance import Enhancer
from speechtok.lm import LMConfig, TokenLM, count_parameters
from speechtok.lm.checkpoint import load_lm, save_lm
from speechtok.lm.transformer import grow_depth
from speechtok.modules.schedule import WarmupCosineLR
from speechtok.tokens import TokenFileError, codec_hash, load_tokens
from speechtok.tts import Synthesizer
from speechtok.tts.align import durations, train_aligner
from speechtok.tts.text import TextFrontend, characters, phonemize_many


# --- data: tokens and phonemes, cached --------------------------------------------------
def token_folders(groups: list[list[str]], codec_name: str, cache: Path) -> list[tuple[Path, Path, list[str]]]:
    """(audio folder, its token folder, files) for each group of files: the folder holding them all."""
    out = []
    for paths in groups:
        if paths:
            root = Path(os.path.commonpath([str(Path(p).parent) for p in paths]))
            dest = cache / Path(codec_name).name / f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:8]}"
            out.append((root, dest, paths))
    return out


def encode_folders(groups: list[list[str]], codec_name: str, cache: Path, workers: int = 0) -> None:
    """Tokenise each folder once with `speechtok encode` (it skips files already done); `workers`
    processes read the audio (0: the main process, as on a 2-core machine)."""
    from speechtok.cli import main as speechtok

    for root, dest in dict.fromkeys((r, d) for r, d, _ in token_folders(groups, codec_name, cache)):
        if speechtok(["encode", str(root), str(dest), "--codec", codec_name, "--workers", str(workers)]) != 0:
            print(f"warning: some files under {root} failed to encode (see {dest}/failed.tsv)", file=sys.stderr)


def token_paths(groups: list[list[str]], codec_name: str, cache: Path) -> dict[str, Path]:
    """Audio path -> its token file, for the files that were encoded."""
    out = {}
    for root, dest, paths in token_folders(groups, codec_name, cache):
        for p in paths:
            rel = Path(p).relative_to(root)
            for name in (rel.with_suffix("").as_posix(), rel.as_posix()):  # the second after a name clash
                if (dest / f"{name}.npz").exists():
                    out[p] = dest / f"{name}.npz"
                    break
    return out


def load_codes(path: Path, want_hash: str) -> torch.Tensor | None:
    try:
        tf = load_tokens(path)
    except TokenFileError as exc:
        print(f"warning: skipping {exc}", file=sys.stderr)
        return None
    if tf.codec_hash != want_hash:
        raise TokenFileError(f"{path}: made by another codec ('{tf.codec}'); clear the token cache")
    return torch.from_numpy(tf.codes.astype(np.int16))


def symbols_cache(texts: list[str], frontend: TextFrontend, cache: Path) -> dict[str, str]:
    """text -> symbol string ('' when unspeakable), computed once per front-end kind and language."""
    path = cache / f"symbols-{frontend.kind}-{frontend.language}.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    todo = sorted({t for t in texts if t not in known})
    if todo:
        new = phonemize_many(todo, frontend.language) if frontend.kind == "phonemes" else map(characters, todo)
        known.update(zip(todo, new))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, ensure_ascii=False, indent=0, sort_keys=True))
        tmp.replace(path)
    return known


def transcript(utt) -> str:
    """The manifest text, or a pseudo-label column (e.g. from ASR) when there is no text."""
    return utt.text or utt.extra.get("pseudo_text", "")


def tts_items(manifests, hp, codec, frontend) -> list[dict]:
    utts = [u for m in manifests for u in read_manifest(m) if transcript(u)]
    tokens = token_paths(audio_groups(hp["task"], manifests), hp["codec"], Path(hp["token_cache"]))
    syms = symbols_cache([transcript(u) for u in utts], frontend, Path(hp["token_cache"]))
    items, want = [], codec_hash(codec)
    for u in utts:
        s = syms[transcript(u)]
        codes = load_codes(tokens[u.path], want) if u.path in tokens and s else None
        if codes is None:
            continue
        ids = [frontend.index[c] for c in s if c in frontend.index]
        items.append({"id": u.ID, "speaker": u.speaker or u.ID, "text": transcript(u), "symbols": s,
                      "src": torch.tensor(ids), "codes": codes})
    return items


def with_durations(items: list[dict], hp, codebook_size: int, n_symbols: int) -> list[dict]:
    """The TTS items, each with its phoneme durations (frames per symbol) from the aligner
    (`speechtok.tts.align`, settings under `aligner`), cached per codec and front-end beside the
    tokens; an item with fewer frames than symbols cannot be aligned and is left out. The aligner
    is unsupervised and reads all items, dev ones included: their durations only feed the dev loss."""
    items = [r for r in items if r["codes"].shape[-1] >= len(r["src"])]
    path = Path(hp["token_cache"]) / Path(hp["codec"]).name / f"durations-{hp['text']['kind']}-{hp['text']['language']}.json"
    known = json.loads(path.read_text()) if path.exists() else {}

    def cached(r) -> bool:
        d = known.get(r["id"])
        return d is not None and len(d) == len(r["src"]) and sum(d) == r["codes"].shape[-1]

    todo = [r for r in items if not cached(r)]
    if todo:
        print(f"aligning {len(todo)} utterances (aligner: {dict(hp['aligner'])})", flush=True)
        pair = lambda r: (r["src"].long(), r["codes"].long())  # noqa: E731
        aligner = train_aligner([pair(r) for r in items], n_symbols, codebook_size, seed=hp["seed"], **hp["aligner"])
        known.update({r["id"]: d.tolist() for r, d in zip(todo, durations(aligner, [pair(r) for r in todo]))})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, sort_keys=True))
        tmp.replace(path)
    return [{**r, "durations": torch.tensor(known[r["id"]])} for r in items]


def enhance_items(manifests, hp, codec) -> list[dict]:
    utts = [u for m in manifests for u in read_manifest(m)]
    for u in utts:
        if not u.extra.get("clean_path"):
            raise ValueError(f"{u.ID}: enhancement manifests need a clean_path column")
    tokens = token_paths(audio_groups(hp["task"], manifests), hp["codec"], Path(hp["token_cache"]))
    items, want = [], codec_hash(codec)
    for u in utts:
        if u.path not in tokens or u.extra["clean_path"] not in tokens:
            continue
        noisy, clean = load_codes(tokens[u.path], want), load_codes(tokens[u.extra["clean_path"]], want)
        if noisy is None or clean is None or noisy.shape != clean.shape:
            continue
        items.append({"id": u.ID, "speaker": u.speaker, "noisy": noisy, "codes": clean})
    return items


def audio_groups(task: str, manifests) -> list[list[str]]:
    """The audio files of each manifest (and, for enhancement, their clean references)."""
    groups = [[u.path for u in read_manifest(m)] for m in manifests]
    if task == "enhance":
        groups += [[u.extra.get("clean_path", "") for u in read_manifest(m) if u.extra.get("clean_path")]
                   for m in manifests]
    return groups


def build_caches(hp, manifests, codec) -> None:
    """Tokenise the corpus and, for TTS, phonemize its transcripts and align them (main process only)."""
    encode_folders(audio_groups(hp["task"], manifests), hp["codec"], Path(hp["token_cache"]), hp.get("encode_workers", 0))
    if hp["task"] == "tts":
        frontend = TextFrontend.for_training(hp["text"]["kind"], hp["text"]["language"])
        texts = [transcript(u) for m in manifests for u in read_manifest(m) if transcript(u)]
        symbols_cache(texts, frontend, Path(hp["token_cache"]))
        if hp.get("durations", False):
            with_durations(tts_items(manifests, hp, codec, frontend), hp, codec.codebook_size, frontend.vocab_size)


# --- batches ------------------------------------------------------------------------------
def collate(rows: list[dict], group: str = "") -> dict:
    """Right-padded tensors; rows hold src ([L] ids or [K, L] codes), codes [K, T], prompt_len
    and, for TTS with durations, durations [L]."""
    src = [r["src"].T if r["src"].dim() == 2 else r["src"] for r in rows]  # pad over time
    srcp = pad_sequence(src, batch_first=True)
    extra = {}
    if "durations" in rows[0]:
        extra["durations"] = pad_sequence([r["durations"] for r in rows], batch_first=True)
    return {
        **extra,
        "src": srcp.transpose(1, 2).long() if srcp.dim() == 3 else srcp.long(),
        "src_len": torch.tensor([len(s) for s in src]),
        "codes": pad_sequence([r["codes"].T for r in rows], batch_first=True).transpose(1, 2).long(),
        "code_len": torch.tensor([r["codes"].shape[-1] for r in rows]),
        "prompt_len": torch.tensor([r.get("prompt_len", 0) for r in rows]),
        "group": group,
    }


class TTSBatches(EpochSeeded):
    """Item i is a whole batch of utterances of similar length, drawn from (seed, epoch, i)."""

    def __init__(self, items, n_batches, max_batch_frames, max_batch_size, prompt_prob, prompt_frames, seed):
        super().__init__(n_batches, seed)
        self.items = sorted(items, key=lambda r: r["codes"].shape[-1])
        self.max_frames, self.max_size = max_batch_frames, max_batch_size
        self.prompt_prob, self.prompt_frames = prompt_prob, prompt_frames
        self.by_speaker = defaultdict(list)
        for j, r in enumerate(self.items):
            self.by_speaker[r["speaker"]].append(j)

    def __getitem__(self, i: int) -> dict:
        rng = self.rng(i)
        n = len(self.items)
        a = int(rng.integers(n))
        cost = self.items[a]["codes"].shape[-1] + self.prompt_frames * self.prompt_prob + len(self.items[a]["src"])
        size = int(np.clip(self.max_frames // cost, 1, self.max_size))
        lo, hi = max(0, a - 2 * size), min(n, a + 2 * size + 1)
        picks = rng.choice(np.arange(lo, hi), size=min(size, hi - lo), replace=False)
        return collate([with_prompt(self.items, self.by_speaker, int(j), rng, self.prompt_frames,
                                    rng.random() < self.prompt_prob) for j in picks])


def with_prompt(items, by_speaker, j, rng, prompt_frames, use_prompt) -> dict:
    """Row j, preceded by a random crop (<= prompt_frames) of another utterance by the same speaker."""
    row = items[j]
    others = [k for k in by_speaker[row["speaker"]] if k != j]
    extra = {"durations": row["durations"]} if "durations" in row else {}
    if not use_prompt or not others:
        return {"src": row["src"], "codes": row["codes"], "prompt_len": 0, **extra}
    other = items[others[int(rng.integers(len(others)))]]["codes"]
    P = min(prompt_frames, other.shape[-1])
    start = int(rng.integers(other.shape[-1] - P + 1))
    return {"src": row["src"], "codes": torch.cat([other[:, start : start + P], row["codes"]], -1), "prompt_len": P,
            **extra}


class PairBatches(EpochSeeded):
    """Item i is a batch of aligned random crops (noisy -> clean) drawn from (seed, epoch, i)."""

    def __init__(self, items, n_batches, batch_size, crop_frames, seed):
        super().__init__(n_batches, seed)
        self.items, self.batch_size, self.crop = items, batch_size, crop_frames

    def __getitem__(self, i: int) -> dict:
        rng = self.rng(i)
        rows = []
        for j in rng.choice(len(self.items), size=self.batch_size):
            r = self.items[int(j)]
            s = int(rng.integers(max(r["codes"].shape[-1] - self.crop, 0) + 1))
            rows.append({"src": r["noisy"][:, s : s + self.crop], "codes": r["codes"][:, s : s + self.crop]})
        return collate(rows)


def fixed_batches(rows: list[dict], group: str, max_batch_frames: int) -> list[dict]:
    """Dev rows in order, packed into batches of at most max_batch_frames padded frames."""
    batches, cur = [], []
    for r in sorted(rows, key=lambda r: r["codes"].shape[-1]):
        if cur and (len(cur) + 1) * r["codes"].shape[-1] > max_batch_frames:
            batches.append(collate(cur, group))
            cur = []
        cur.append(r)
    return batches + ([collate(cur, group)] if cur else [])


# --- training -----------------------------------------------------------------------------
class LMBrain(WarmupCosineLR, sb.Brain):
    def compute_forward(self, batch, stage):
        b = {k: v.to(self.device) for k, v in batch.items() if torch.is_tensor(v)}
        return self.modules.lm(b["src"], b["codes"], b["src_len"], b["code_len"], b["prompt_len"],
                               src_durations=b.get("durations"))

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
        meta = {"epoch": epoch, "step": self.optimizer_step, "lr": self.hparams.lr * self.lr_factor()}
        self.hparams.train_logger.log_stats(stats_meta=meta, train_stats={"loss": self.train_loss}, valid_stats=stats)
        if sb.utils.distributed.if_main_process():
            print(f"epoch {epoch} step {self.optimizer_step} train {self.train_loss:.4f} "
                  + " ".join(f"{k} {v:.4f}" for k, v in stats.items()), flush=True)
        self.checkpointer.save_and_keep_only(meta={**stats, "step": self.optimizer_step}, min_keys=["loss"],
                                             num_to_keep=2)


def build_model(hp, codec, src_vocab, src_codebooks) -> TokenLM:
    cfg = LMConfig(pattern=hp["pattern"], n_codebooks=codec.n_codebooks, codebook_size=codec.codebook_size,
                   src_vocab=src_vocab, src_codebooks=src_codebooks, max_len_ratio=hp["max_len_ratio"],
                   end_weight=hp.get("end_weight", 1.0), guided_attention=hp.get("guided_attention", 0.0),
                   guide_sigma=hp.get("guide_sigma", 0.2), aligned_positions=hp.get("aligned_positions", False),
                   frame_dropout=hp.get("frame_dropout", 0.0), aligned_source=hp.get("aligned_source", False),
                   durations=hp.get("durations", False), duration_weight=hp.get("duration_weight", 1.0),
                   transformer=dict(hp["model"]))
    return TokenLM(cfg)


def warm_start(lm: TokenLM, folder: str, task: str, codec) -> None:
    """Start from an exported model's weights (fine-tuning; a resumed run's checkpoint wins).
    What this run adds may be missing there: the `aligned_source` table (it starts at zero, so the
    model starts out as the exported one), the duration predictor (trained from scratch) and,
    for a deeper `model.n_layers`, blocks that start as the identity (`grow_depth`)."""
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
    new = [k for k in missing if k.startswith(("src_frame_emb.", "duration."))]
    if unexpected or len(new) != len(missing):
        raise ValueError(f"init_from {folder}: weights do not fit this model (missing {sorted(set(missing) - set(new))}, "
                         f"unexpected {sorted(unexpected)})")
    if new:
        print(f"init_from {folder}: new in this run: {', '.join(new)}", flush=True)


def fits(lm: TokenLM, n_src: int, n_frames: int) -> bool:
    """A row (source, separator, n_frames of audio and the end) fits the model's positions."""
    return n_src + 2 + int(lm._steps_needed(n_frames)) <= lm.cfg.transformer.max_len


def manifest_paths(hp, key) -> list[Path]:
    return [Path(hp["manifest_folder"]) / m for m in hp[key]]  # absolute entries stay absolute


def prepare(hp, codec):
    """(model, train set, dev batches, extras for export) for the task."""
    train_m, dev_m = manifest_paths(hp, "train_manifests"), manifest_paths(hp, "dev_manifests")
    if hp["task"] == "tts":
        frontend = TextFrontend.for_training(hp["text"]["kind"], hp["text"]["language"])
        lm = build_model(hp, codec, frontend.vocab_size, 0)
        items = tts_items(train_m + dev_m, hp, codec, frontend)
        if lm.cfg.durations:
            items = with_durations(items, hp, codec.codebook_size, frontend.vocab_size)
        usable = [r for r in items if r["codes"].shape[-1] <= hp["max_frames"]
                  and fits(lm, len(r["src"]), r["codes"].shape[-1] + hp["prompt_frames"])]
        dev_ids = {u.ID for m in dev_m for u in read_manifest(m)}
        train = [r for r in usable if r["id"] not in dev_ids]
        dev = [r for r in usable if r["id"] in dev_ids]
        # the speaking rate a prompt without transcript is generated at: median target steps per symbol
        lm.cfg.default_rate = float(np.median([int(lm.pattern.frame_step(r["codes"].shape[-1])) / len(r["src"])
                                               for r in train])) if train else 1.0
        seen = {r["speaker"] for r in train}
        rng = np.random.default_rng(hp["seed"])
        by_speaker = defaultdict(list)
        for j, r in enumerate(dev):
            by_speaker[r["speaker"]].append(j)
        rows = {"seen": [], "new": []}
        for j in fixed_subset(len(dev), hp["n_dev"], hp["seed"]):
            row = with_prompt(dev, by_speaker, j, rng, hp["prompt_frames"], True)
            rows["seen" if dev[j]["speaker"] in seen else "new"].append(row)
        dev_batches = [b for g, rs in rows.items() for b in fixed_batches(rs, g, hp["max_batch_frames"])]
        train_set = TTSBatches(train, hp["steps_per_epoch"] * hp["grad_accumulation_factor"], hp["max_batch_frames"],
                               hp["max_batch_size"], hp["prompt_prob"], hp["prompt_frames"], hp["seed"])
        extra = {"frontend": frontend, "train": train, "dev": dev}
    elif hp["task"] == "enhance":
        lm = build_model(hp, codec, codec.codebook_size, codec.n_codebooks)
        train = enhance_items(train_m, hp, codec)
        dev = enhance_items(dev_m, hp, codec)
        dev = [dev[j] for j in fixed_subset(len(dev), hp["n_dev"], hp["seed"])]
        crop = hp["crop_frames"]
        dev_batches = fixed_batches([{"src": r["noisy"][:, :crop], "codes": r["codes"][:, :crop]} for r in dev],
                                    "dev", hp["max_batch_frames"])
        train_set = PairBatches(train, hp["steps_per_epoch"] * hp["grad_accumulation_factor"], hp["batch_size"],
                                crop, hp["seed"])
        extra = {"train": train, "dev": dev}
    else:
        raise ValueError(f"task must be 'tts' or 'enhance', got {hp['task']!r}")
    if not train or not dev_batches:
        raise ValueError(f"no usable {hp['task']} training or dev data (check the manifests and max_frames)")
    return lm, train_set, dev_batches, extra


def default_prompt(items, speaker: str, frame_rate: float, seconds=(2.0, 4.0)) -> dict | None:
    """A short utterance of `speaker` (the first by ID of 2-4 s) to be the model's default voice."""
    mine = sorted((r for r in items if r["speaker"] == speaker), key=lambda r: r["id"])
    ok = [r for r in mine if seconds[0] * frame_rate <= r["codes"].shape[-1] <= seconds[1] * frame_rate] or mine
    if not ok:
        return None
    r = ok[0]
    return {"codes": r["codes"].long(), "text": r["text"], "symbols": r["symbols"], "id": r["id"], "speaker": speaker}


def export(brain: LMBrain, hp: dict, codec, extra: dict) -> Path:
    """Save the best checkpoint (lowest dev loss; `export_checkpoint: last` for the newest) as a
    model folder; write a few samples beside it. Only end-of-epoch checkpoints have a dev loss
    and a step, so mid-epoch ones are never exported."""
    key = {"ckpt_predicate": lambda c: "step" in c.meta}
    if hp.get("export_checkpoint", "best") != "last":
        key["min_key"] = "loss"
    ckpt = brain.checkpointer.find_checkpoint(**key)
    if ckpt is None:
        raise SystemExit(f"export: no end-of-epoch checkpoint in {hp['save_folder']} yet")
    brain.checkpointer.recover_if_possible(**key)
    lm = brain.modules.lm.module if hasattr(brain.modules.lm, "module") else brain.modules.lm
    lm = lm.float().cpu().eval()
    training = {"step": ckpt.meta["step"],
                **{k: round(v, 4) for k, v in ckpt.meta.items() if k.startswith("loss") or k == "duration_mse"},
                "parameters": count_parameters(lm), "train_items": len(extra["train"]),
                "train_hours": round(sum(r["codes"].shape[-1] for r in extra["train"]) / codec.frame_rate / 3600, 3)}
    out = Path(hp["export_folder"])
    samples = Path(hp["output_folder"]) / "samples"
    if hp["task"] == "tts":
        prompt = default_prompt(extra["train"], hp["default_voice"], codec.frame_rate)
        save_lm(out, lm, "tts", codec, text=extra["frontend"].config(), default_prompt=prompt,
                sampling=dict(hp["sampling"]), render=dict(hp.get("render") or {}), training=training)
        runner = Synthesizer(lm, codec, {**json.loads((out / "config.json").read_text()),
                                         "default_prompt": prompt}, out)
        for r in extra["dev"][: hp["n_export_samples"]]:
            save_audio(samples / f"{r['id']}.wav", runner.tts(r["text"], seed=0, max_seconds=15)[0], codec.sample_rate)
    else:
        save_lm(out, lm, "enhance", codec, sampling=dict(hp["sampling"]), render=dict(hp.get("render") or {}),
                training={**training, "crop_frames": hp["crop_frames"]})  # the enhancer's chunk size
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
    sb.create_experiment_directory(experiment_directory=hp["output_folder"], hyperparams_to_save=hparams_file,
                                   overrides=overrides)
    codec = load_codec(hp["codec"])
    # tokenise (and phonemize) on the main process only; then every process reads the caches
    manifests = manifest_paths(hp, "train_manifests") + manifest_paths(hp, "dev_manifests")
    sb.utils.distributed.run_on_main(build_caches, args=[hp, manifests, codec])
    lm, train_set, dev_batches, extra = prepare(hp, codec)
    if hp.get("init_from"):
        warm_start(lm, hp["init_from"], hp["task"], codec)
    if sb.utils.distributed.if_main_process():
        print(f"{hp['task']}: {count_parameters(lm) / 1e6:.2f} M parameters, {len(extra['train'])} training items, "
              f"{len(dev_batches)} dev batches", flush=True)
    hp["checkpointer"].add_recoverable("lm", lm)
    brain = LMBrain(modules={"lm": lm}, opt_class=hp["opt_class"], hparams=hp, run_opts=run_opts,
                    checkpointer=hp["checkpointer"])
    brain.train_set = train_set
    if not hp.get("export_only", False):  # export_only: export what is there so far, e.g. mid-run
        brain.fit(hp["epoch_counter"], train_set, ItemList(dev_batches),
                  train_loader_kwargs={"batch_size": None, "num_workers": hp["num_workers"]},
                  valid_loader_kwargs={"batch_size": None})
    if sb.utils.distributed.if_main_process():
        print(f"exported {export(brain, hp, codec.cpu(), extra)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
