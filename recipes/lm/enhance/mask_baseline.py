#!/usr/bin/env python3
"""Baseline for the enhancer: band gains predicted from the fine noisy log-mel alone, no tokens.

    python recipes/lm/enhance/mask_baseline.py --out results/enh_diag/masknet --steps 2000
    python recipes/lm/enhance/mask_baseline.py --out results/enh_diag/masknet --eval_only

A small net (a convolution, two bidirectional GRU layers, 1.2 M parameters) maps the noisy
log-mel to per-band log gains in [log 0.05, 0], trained by L1 against the clean signal's own
(clean minus noisy log-mel, clipped), on the enhancement recipe's on-the-fly mixtures (the `mix`
block of `hparams/cpu.yaml`: real, coloured and babble noise, train rooms). Its gains are applied
to the noisy input by `BandGainFilter.apply`, as the token enhancer's are, so the two differ only in
where the gains come from: is the token LM (which sees 16 coarse levels) what limits the gain on
unseen noise? Scored on the unseen pairs of `score_unseen.py` (PESQ-wb, STOI every `--eval_every`
steps; Whisper tiny.en WER at the end), dry and reverberant. A diagnostic, not a shipped model.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from functools import cache
from pathlib import Path

import numpy as np
import torch
from hyperpyyaml import load_hyperpyyaml
from torch import nn

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "recipes" / "lm"))
from train import mixed_train_set  # noqa: E402

from speechtok.codecs import load_codec  # noqa: E402
from speechtok.data.audio import load_audio  # noqa: E402
from speechtok.data.manifest import read_manifest  # noqa: E402
from speechtok.enhance.filter import GAIN_FLOOR, BandGainFilter  # noqa: E402
from speechtok.eval import judges as J  # noqa: E402
from speechtok.eval.metrics import pesq_wb, stoi  # noqa: E402

LOW = math.log(GAIN_FLOOR)


class MaskNet(nn.Module):
    def __init__(self, n_mels: int = 80, hidden: int = 192):
        super().__init__()
        self.inp = nn.Sequential(nn.Conv1d(2 * n_mels, hidden, 3, padding=1), nn.GELU())
        self.rnn = nn.GRU(hidden, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, n_mels)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Log gains [B, M, F] in [log floor, 0] for the noisy log-mel [B, M, F] (its level and its
        shape per band, each band's mean over the clip removed)."""
        x = torch.cat([log_mel - log_mel.mean(-1, keepdim=True), log_mel / 5], 1)
        h, _ = self.rnn(self.inp(x).transpose(1, 2))
        return LOW * torch.sigmoid(self.out(h)).transpose(1, 2)


def enhance(net: MaskNet, codec, band_filter: BandGainFilter, noisy: torch.Tensor) -> np.ndarray:
    """Waveform [1, 1, T] -> the band-gain filtered waveform [T]."""
    frames = codec.n_frames(noisy.shape[-1])
    padded = nn.functional.pad(noisy, (0, frames * codec.hop_length - noisy.shape[-1]))
    with torch.no_grad():
        return band_filter.apply(noisy, net(codec.log_mel(padded)).exp())[0, 0].numpy()


def _pesq(ref: np.ndarray, est: np.ndarray) -> float:
    try:
        return pesq_wb(ref, est, 16000)
    except ValueError:  # no speech found in a 1 s clip: left out of the mean
        return math.nan


def _score(ref: np.ndarray, est: np.ndarray, text: str, wer: bool) -> tuple[float, float, int, int]:
    """PESQ-wb, STOI, and Whisper's word errors and reference words (0, 0 without `wer` or text)."""
    n = min(len(ref), len(est))
    r = J.whisper_judge().wer(est, 16000, text) if wer and text else {"errors": 0, "ref_words": 0}
    return _pesq(ref[:n], est[:n]), stoi(ref[:n], est[:n], 16000), r["errors"], r["ref_words"]


@cache
def _noisy_score(path: str, clean_path: str, text: str, wer: bool) -> tuple[float, float, int, int]:
    """The noisy input's scores: the same at every evaluation, so computed once."""
    return _score(load_audio(clean_path, 16000)[0].numpy(), load_audio(path, 16000)[0].numpy(), text, wer)


def evaluate(net, codec, band_filter, rows, wer: bool) -> dict:
    """Means over the pairs (all, dry, reverberant) of PESQ-wb and STOI, and corpus WER, for the noisy
    input and the output."""
    net.eval()
    scores: dict[str, list] = defaultdict(list)
    for u in rows:
        ref = load_audio(u.extra["clean_path"], 16000)[0].numpy()
        enhanced = enhance(net, codec, band_filter, load_audio(u.path, 16000)[None])
        outputs = {
            "noisy": _noisy_score(u.path, u.extra["clean_path"], u.text, wer),
            "enhanced": _score(ref, enhanced, u.text, wer),
        }
        for group in ("all", "reverberant" if u.extra["reverb"] == "1" else "dry"):
            for name, row in outputs.items():
                scores[f"{name} {group}"].append(row)
    net.train()
    out = {}
    for key, values in scores.items():
        table = np.array(values, dtype=float)
        pesq, st = np.nanmean(table[:, :2], 0)
        out[key] = {"n": len(values), "pesq_wb": round(float(pesq), 3), "stoi": round(float(st), 3)}
        if table[:, 3].sum():
            out[key]["wer"] = round(float(table[:, 2].sum() / table[:, 3].sum()), 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--crop_frames", type=int, default=160)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=192, help="width of the convolution and each GRU direction")
    p.add_argument("--init_from", type=Path, default=None, help="a net.pt of the same width to train on from")
    p.add_argument(
        "--loss_power",
        type=float,
        default=None,
        help="L1 of mel magnitudes to this power (e.g. 0.3), which weights loud cells, instead of L1 of log gains",
    )
    p.add_argument("--eval_every", type=int, default=500)
    p.add_argument("--n_dev", type=int, default=None, help="score the first N unseen pairs only (default: all)")
    p.add_argument("--eval_only", action="store_true", help="score the net saved in --out, with WER")
    p.add_argument("--hparams", type=Path, default=REPO / "recipes/lm/enhance/hparams/cpu.yaml")
    args = p.parse_args()
    torch.manual_seed(0)
    with open(args.hparams) as f:
        hp = load_hyperpyyaml(f, {"crop_frames": args.crop_frames, "batch_size": args.batch})
    codec = load_codec(hp["codec"])
    band_filter = BandGainFilter(codec)
    rows = [u for m in hp["dev_manifests"] for u in read_manifest(Path(hp["manifest_folder"]) / m)][: args.n_dev]
    net = MaskNet(hidden=args.hidden)
    if args.init_from:
        net.load_state_dict(torch.load(args.init_from))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.eval_only:
        net.load_state_dict(torch.load(args.out / "net.pt"))
        print(json.dumps(evaluate(net, codec, band_filter, rows, wer=True), indent=1))
        return
    batches, _ = mixed_train_set(hp, codec)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=0.05)
    cpu0, log = time.process_time(), []
    for step in range(1, args.steps + 1):
        rng = batches.rng(step)
        noisy, clean = (
            torch.stack(x) for x in zip(*(batches.pair(step * args.batch + j, rng) for j in range(args.batch)))
        )
        with torch.no_grad():
            noisy_mel, clean_mel = codec.log_mel(noisy), codec.log_mel(clean)
        gains = net(noisy_mel)
        if args.loss_power:
            c = args.loss_power
            loss = ((c * (noisy_mel + gains)).exp() - (c * clean_mel).exp()).abs().mean()
        else:
            loss = (gains - (clean_mel - noisy_mel).clamp(LOW, 0)).abs().mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            last = step == args.steps
            scores = evaluate(net, codec, band_filter, rows, wer=last)
            log.append({"step": step, "loss": loss.item(), "cpu_hours": (time.process_time() - cpu0) / 3600, **scores})
            print(json.dumps(log[-1]), flush=True)
            torch.save(net.state_dict(), args.out / "net.pt")
            (args.out / "log.json").write_text(json.dumps(log, indent=1) + "\n")


if __name__ == "__main__":
    main()
