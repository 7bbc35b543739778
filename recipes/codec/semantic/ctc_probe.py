#!/usr/bin/env python3
"""How much of what is said survives a tokenizer of Whisper's states: a CTC probe, equal budgets.

    python recipes/codec/semantic/ctc_probe.py --tokens kmeans --out results/ctc_probe/kmeans.pt
    python recipes/codec/semantic/ctc_probe.py --tokens continuous --out results/ctc_probe/continuous.pt
    python recipes/codec/semantic/ctc_probe.py --tokens supervised --layer convs \
        --probe results/ctc_probe/continuous.pt --out results/ctc_probe/supervised_convs.pt

The ASR recipe's character CTC head (`recipes/asr/hparams/ctc-semantic-16k-25.yaml`: its data, its
sampling, its head; 10% code noise on discrete inputs) is trained for `--steps` batches on one
input, and scored every `--eval_every` steps by greedy CER/WER on the dev sets (unseen voices;
cathy seen). Inputs, all from the semantic recipe's cached pooled states (25 frames/s):
- `kmeans`: the bundled `semantic-16k-25` tokens (1024 centroids);
- `residual2`: a second 1024-code k-means stage on the residual (more capacity, any first K);
- `continuous`: the standardised states themselves, through a linear layer (no quantiser: the ceiling);
- `fsq`: a ConvTransformer encoder and an FSQ bottleneck (levels 8,5,5,5: 1000 codes) trained
  jointly with the head by the CTC loss (supervised tokens, S3-style, from scratch);
- `supervised`: 1024-means over the features of a trained `continuous` probe (`--probe`) at
  `--layer` (`convs`: its input layer and ConvNeXt blocks, +-6 frames of context; `final`: its
  encoder's output), i.e. k-means in a space the CTC loss shaped.
`residual2`'s k-means draws 100,000 frames from each real-speech source (cathy, LibriSpeech, crowd
train: what the bundled k-means was fitted on; seed 0); `supervised`'s, about 30 frames from every
third utterance. Prints one JSON line per evaluation (`<set>_cer`, `<set>_wer`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from hyperpyyaml import load_hyperpyyaml
from torch import nn
from vector_quantize_pytorch import FSQ

from speechtok.asr import TokenCTC, text_for_ctc
from speechtok.asr.data import CTCBatches, corrupt_codes, error_rates, pad_batch, targets, transcribed
from speechtok.codecs import load_codec
from speechtok.data.states import cached_states
from speechtok.modules.encoder import ConvTransformer

ASR_HPARAMS = "recipes/asr/hparams/ctc-semantic-16k-25.yaml"
DISCRETE = {"kmeans": (1, 1024), "residual2": (2, 1024), "supervised": (1, 1024)}


def kmeans(x: np.ndarray, k: int) -> torch.Tensor:
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(k, batch_size=8192, n_init=1, max_iter=50, random_state=0).fit(x)
    return torch.from_numpy(km.cluster_centers_.astype(np.float32))


def nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, centroids).argmin(-1)


class ContinuousInput(nn.Module):
    """Standardised states [B, F, D] -> the head's width: the `continuous` probe's input layer."""

    def __init__(self, dim_in: int, dim: int) -> None:
        super().__init__()
        self.inp = nn.Linear(dim_in, dim)

    def forward(self, z: torch.Tensor, padding: torch.Tensor, noise: float) -> torch.Tensor:
        return self.inp(z)


class FSQInput(nn.Module):
    """Standardised states -> encoder -> FSQ codes -> the head's width (straight-through)."""

    def __init__(self, dim_in: int, dim: int, levels=(8, 5, 5, 5), width: int = 256) -> None:
        super().__init__()
        self.inp, self.encoder = nn.Linear(dim_in, width), ConvTransformer(width, 4, 2, 1)
        self.fsq, self.to_head, self.size = FSQ(levels=list(levels), dim=width), nn.Linear(width, dim), np.prod(levels)

    def forward(self, z: torch.Tensor, padding: torch.Tensor, noise: float) -> torch.Tensor:
        q, codes = self.fsq(self.encoder.encode(self.inp(z), padding))
        if noise > 0:  # the discrete inputs' code noise, on the codes' vectors
            random = self.fsq.indices_to_codes(torch.randint_like(codes, int(self.size)))
            q = torch.where((torch.rand(codes.shape) < noise)[..., None], random, q)
        return self.to_head(q)


def supervised_features(probe_path: str, layer: str):
    """The `continuous` probe's features of standardised states [F, D] at `layer`."""
    saved = torch.load(probe_path)
    head, inp = TokenCTC(1, 1024, **saved["model"]), ContinuousInput(saved["dim_in"], saved["model"]["dim"])
    head.load_state_dict(saved["head"]), inp.load_state_dict(saved["input"])

    @torch.no_grad()
    def features(z: torch.Tensor) -> torch.Tensor:
        x = inp.inp(z[None])
        if layer == "final":
            return head.encode(x)[0]
        x = x.transpose(1, 2)
        for block in head.convs:
            x = block(x)
        return x.transpose(1, 2)[0]

    return features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", required=True, choices=[*DISCRETE, "continuous", "fsq"])
    parser.add_argument("--layer", default="convs", choices=["convs", "final"])
    parser.add_argument("--probe", help="a `continuous` probe's --out (for --tokens supervised)")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--eval_every", type=int, default=200)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1), torch.manual_seed(1234)
    with open(ASR_HPARAMS) as f:
        hp = load_hyperpyyaml(f)
    fitted_on = [p for p in hp["train_manifests"] if Path(p).stem != "synth_train"]  # as the bundled k-means
    codec = load_codec("semantic-16k-25")
    dev_sets = {**hp["dev_sets"], **hp["seen_dev_sets"]}
    caches = cached_states(codec, [*hp["train_manifests"], *dev_sets.values()], hp["state_cache"])
    by_id = {uid: cache for cache in caches.values() for uid in cache.ids}

    def raw(uid: str) -> torch.Tensor:  # pooled states [F, D]
        return torch.from_numpy(by_id[uid][uid].astype(np.float32))

    def states(uid: str) -> torch.Tensor:  # standardised, as the centroids live
        return (raw(uid) - codec.mean) / codec.std

    n_codebooks, size = DISCRETE.get(args.tokens, (1, 1024))
    if args.tokens == "kmeans":
        item = lambda uid: codec.quantize(raw(uid))[None]  # noqa: E731
    elif args.tokens == "residual2":
        rng = np.random.default_rng(0)
        sample = [caches[p].states for p in fitted_on]
        sample = np.concatenate([s[rng.choice(len(s), min(len(s), 100000), replace=False)] for s in sample])
        fit_frames = (torch.from_numpy(sample.astype(np.float32)) - codec.mean) / codec.std
        second = kmeans((fit_frames - codec.centroids[nearest(fit_frames, codec.centroids)]).numpy(), 1024)

        def item(uid):
            z = states(uid)
            first = nearest(z, codec.centroids)
            return torch.stack([first, nearest(z - codec.centroids[first], second)])
    elif args.tokens == "supervised":
        features = supervised_features(args.probe, args.layer)
        x = torch.cat([features(states(uid))[:: max(1, len(by_id[uid][uid]) // 30)] for uid in list(by_id)[::3]])
        mean, std = x.mean(0), x.std(0) + 1e-4
        space = kmeans(((x - mean) / std).numpy(), 1024)
        item = lambda uid: nearest((features(states(uid)) - mean) / std, space)[None]  # noqa: E731
    else:
        item = lambda uid: states(uid).T  # noqa: E731  [D, F], padded like codes
    sources = [[u for u in transcribed(p) if u.ID in by_id] for p in hp["train_manifests"]]
    train_set = CTCBatches(sources, lambda u: item(u.ID), args.steps, hp["batch_size"], hp["source_shares"], 1234)
    dev = [
        (name, pad_batch([(item(u.ID), targets(u.text))]), text_for_ctc(u.text))
        for name, path in dev_sets.items()
        for u in transcribed(path)
        if u.ID in by_id
    ]
    head = TokenCTC(n_codebooks, size, **hp["model"])
    dim_in, dim = codec.teacher_dim, hp["model"]["dim"]
    front = {"continuous": ContinuousInput, "fsq": FSQInput}.get(args.tokens)
    front = front(dim_in, dim) if front else None
    params = [*head.parameters(), *(front.parameters() if front else [])]
    opt = torch.optim.AdamW(params, lr=hp["lr"], betas=(0.9, 0.98), weight_decay=0.01)
    warm, total = hp["warmup_steps"], args.steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * s / total))
    )

    def log_probs(batch, train: bool) -> torch.Tensor:
        lengths = batch["code_lengths"]
        if front is None:
            codes = corrupt_codes(batch["codes"], hp["code_noise"], size) if train else batch["codes"]
            return head(codes, lengths)
        padding = torch.arange(batch["codes"].shape[-1])[None] >= lengths[:, None]
        x = front(batch["codes"].transpose(1, 2), padding, hp["code_noise"] if train else 0.0)
        return head.out(head.encode(x, padding)).log_softmax(-1)

    def evaluate() -> dict:
        head.eval(), front and front.eval()
        with torch.no_grad():
            rows = [(name, ref, TokenCTC.greedy(log_probs(b, False))[0]) for name, b, ref in dev]
        head.train(), front and front.train()
        return {k: round(v, 3) for k, v in error_rates(rows).items()}

    start = time.process_time()
    for step in range(args.steps):
        batch = train_set[step]
        lp = log_probs(batch, True)
        loss = nn.functional.ctc_loss(
            lp.transpose(0, 1), batch["targets"], batch["code_lengths"], batch["target_lengths"], zero_infinity=True
        )
        opt.zero_grad(), loss.backward(), nn.utils.clip_grad_norm_(params, 1.0), opt.step(), sched.step()
        if (step + 1) % args.eval_every == 0:
            hours = (time.process_time() - start) / 3600
            print(json.dumps({"step": step + 1, "cpu_hours": round(hours, 3), **evaluate()}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    saved = {"head": head.state_dict(), "model": hp["model"], "dim_in": dim_in}
    torch.save({**saved, "input": front.state_dict() if front else None}, args.out)


if __name__ == "__main__":
    main()
