"""Decoding speed of TokenLM with and without the KV cache, and of the shipped TTS/enhancement models.

Part 1 generates exactly N tokens (min_len = max_len, greedy) after a short source, for a ~20 M
parameter model, and prints tokens/s. Without the cache every step re-runs the whole sequence
(quadratic), so beyond --uncached-max tokens that run is estimated instead: full forward passes
are timed at a few lengths and the per-step times interpolated and summed ("estimated": true).
Part 2 times every bundled `tts-*` / `enhance-*` model end to end (text or noisy audio in,
waveform out, codec included) on about --seconds of speech and prints its real-time factor.
Part 3 asks whether lossless speculative decoding could speed those models up with the model as
its own draft (frame dropout trains it to predict a frame without having seen the one before):
for every generated frame it compares the prediction made with the previous frame blanked (the
draft) with the one made after seeing it (the verifier), and prints how often a drafted frame
would be accepted - greedy: all heads' argmax agree; sampling: prod_h sum_v min(p, q), the
acceptance probability of speculative sampling - with the per-head agreement beside it.
Results go to bench/results/lm_speed.json.

    python bench/lm_speed.py [--lengths 100 500 1000] [--device cpu] [--threads N] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from speechtok.data.audio import load_audio
from speechtok.data.noise import colored_noise, mix_at_snr
from speechtok.enhance import load_enhancer
from speechtok.lm import LMConfig, SamplingConfig, TokenLM, TransformerConfig, count_parameters
from speechtok.lm.runner import available_models
from speechtok.tts import load_tts

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# about 10 s of read speech at a typical rate
PARAGRAPH = (
    "The old lighthouse keeper climbed the narrow stairs every evening, lit the great lamp, "
    "and watched the ships pass safely through the dark and stormy channel."
)


def noisy_clip(seconds: float, sr: int, snr_db: float = 5.0) -> torch.Tensor:
    """[1, T]: the bundled example speech, repeated to `seconds`, in pink noise at `snr_db`."""
    speech = torch.cat([load_audio(f, sr) for f in sorted(EXAMPLES.glob("*.flac"))], -1)
    n = int(seconds * sr)
    clean = speech.repeat(1, n // speech.shape[-1] + 1)[:, :n]
    return mix_at_snr(clean, colored_noise(n, 1.0, np.random.default_rng(0)), snr_db)[0]


def shipped_rtf(seconds: float, device: str) -> list[dict]:
    """End-to-end real-time factor of each bundled token-LM on about `seconds` of speech."""
    jobs = []
    for name in available_models():
        if name.startswith("tts-"):
            runner = load_tts(name, device=device)
            runner.tts("Warm up.", seed=0)
            what = f"{len(PARAGRAPH.split())} words of text"
            jobs.append((name, runner, lambda r=runner: r.tts(PARAGRAPH, seed=0), what))
        else:
            runner = load_enhancer(name, device=device)
            wav = noisy_clip(seconds, runner.sample_rate)
            runner.enhance(wav[:, : runner.sample_rate], seed=0)
            what = f"{seconds:g} s of speech in pink noise at 5 dB"
            jobs.append((name, runner, lambda r=runner, w=wav: r.enhance(w, seed=0), what))
            if runner.refiner is not None:  # its cost, side by side with the rows' plain average
                jobs.append(
                    (f"{name} --no-refiner", runner, lambda r=runner, w=wav: r.enhance(w, seed=0, refine=False), what)
                )
    rows = []
    for name, runner, job, what in jobs:
        t0 = time.perf_counter()
        out = job()
        wall = time.perf_counter() - t0
        audio = out.shape[-1] / runner.sample_rate
        rows.append(
            {
                "model": name,
                "input": what,
                "audio_s": round(audio, 2),
                "wall_s": round(wall, 2),
                "x_real_time": round(audio / wall, 2),
            }
        )
        print(
            f"{name:>36}: {audio:.1f} s of audio in {wall:.2f} s = {audio / wall:.1f}x real time ({what})", flush=True
        )
    return rows


@torch.no_grad()
def draft_acceptance(
    lm: TokenLM, src, src_len, prompt, target, temperature: float, chunk: int = 16, durations=None
) -> dict:
    """Acceptance of self-drafted frames (see the module docstring) along one generated `target`
    [K, T] after `prompt` [K, P] (`durations` [1, L]: a durations model's, summing to T); for
    patterns with one step per frame (single, parallel)."""
    p, dev = lm.pattern, src.device
    Pn, T = prompt.shape[-1], target.shape[-1]
    codes = torch.cat([prompt, target], -1)[None]
    prompt_len = torch.tensor([Pn], device=dev)
    verify = lm(src, codes, src_len, prompt_lengths=prompt_len, src_durations=durations).logits[0]  # [S, H, V]
    frames = torch.arange(Pn + 1, Pn + T, device=dev)  # drafted frames: the one before is a target frame
    accept, agree = [], []
    for fr in frames.split(chunk):
        B = len(fr)
        blank = torch.zeros(B, Pn + T, dtype=torch.bool, device=dev)
        blank[torch.arange(B), fr - 1] = True
        rows = lm(
            src.expand(B, *src.shape[1:]),
            codes.expand(B, -1, -1),
            src_len.expand(B),
            prompt_lengths=prompt_len.expand(B),
            blank_frames=blank,
            src_durations=None if durations is None else durations.expand(B, -1),
        ).logits
        q = rows[torch.arange(B), p.frame_step(fr)][..., : p.codebook_size].float()  # draft  [B, H, C]
        v = verify[p.frame_step(fr)][..., : p.codebook_size].float()  # verifier
        if temperature <= 0:
            same = q.argmax(-1) == v.argmax(-1)
            accept.append(same.all(-1).float())
            agree.append(same.float().mean(-1))
        else:
            overlap = torch.minimum((q / temperature).softmax(-1), (v / temperature).softmax(-1)).sum(-1)
            accept.append(overlap.prod(-1))
            agree.append(overlap.mean(-1))
    return {
        "frames": len(frames),
        "accept": round(float(torch.cat(accept).mean()), 4),
        "per_head": round(float(torch.cat(agree).mean()), 4),
    }


def shipped_draft_acceptance(seconds: float, device: str) -> list[dict]:
    """Self-draft acceptance (draft_acceptance) of each bundled token-LM on its own output: TTS of
    PARAGRAPH in the voice of the first bundled example (a speaker prompt, laid out as in
    training), enhancement of one chunk of `noisy_clip`."""
    rows = []
    for name in available_models():
        if name.startswith("tts-"):
            runner = load_tts(name, device=device)
            src, src_len, prompt, _, _ = runner.inputs([PARAGRAPH], sorted(EXAMPLES.glob("*.flac"))[0])
        else:
            runner = load_enhancer(name, device=device)
            src = runner.codec.encode(noisy_clip(seconds, runner.sample_rate)[None].to(device)).long().cpu()
            src = src[..., : runner.chunk_frames]
            src_len, prompt = torch.tensor([src.shape[-1]]), torch.zeros(1, src.shape[1], 0, dtype=torch.long)
        lm, sampling = runner.lm, runner.sampling
        if lm.pattern.steps_per_frame != 1 or lm.pattern.tail:
            continue  # a frame spans several steps: drafting whole frames does not apply as measured here
        src, src_len, prompt = src.to(device), src_len.to(device), prompt.to(device)
        min_len = 1 if name.startswith("tts-") else src.shape[-1]
        durations = lm.predict_durations(src, src_len) if lm.cfg.durations else None
        target, n = lm.generate(src, src_len, prompt, sampling, seed=0, min_len=min_len, durations=durations)
        res = draft_acceptance(
            lm, src, src_len, prompt[0], target[0, :, : int(n[0])], sampling.temperature, durations=durations
        )
        decoding = "greedy" if sampling.temperature <= 0 else f"sampling, T={sampling.temperature:g}"
        rows.append({"model": name, "decoding": decoding, "heads": lm.pattern.n_heads, **res})
        print(
            f"{name:>24}: drafted frame accepted {100 * res['accept']:.2f}% of the time "
            f"(per head {100 * res['per_head']:.1f}%, {res['frames']} frames, {decoding})",
            flush=True,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[100, 500, 1000])
    ap.add_argument("--pattern", default="single")
    ap.add_argument("--codebooks", type=int, default=1)
    ap.add_argument("--codebook-size", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--src-len", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--uncached-max", type=int, default=500, help="longest uncached run timed in full")
    ap.add_argument("--seconds", type=float, default=10.0, help="speech per shipped-model run")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "lm_speed.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    longest = max(args.lengths)
    cfg = LMConfig(
        pattern=args.pattern,
        n_codebooks=args.codebooks,
        codebook_size=args.codebook_size,
        src_vocab=256,
        transformer=TransformerConfig(dim=args.dim, n_layers=args.layers, n_heads=args.heads, max_len=longest + 64),
    )
    lm = TokenLM(cfg).to(args.device).eval()
    p = lm.pattern
    src = torch.randint(0, 256, (1, args.src_len), device=args.device)

    def run(n_tokens: int, use_cache: bool) -> dict:
        frames = max(p.n_frames(n_tokens), 1)
        steps = int(lm.steps_needed(frames))  # decoding steps, end token included
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        _, n = lm.generate(
            src, sampling=SamplingConfig(temperature=0), max_len=frames, min_len=frames, use_cache=use_cache
        )
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        sec = time.perf_counter() - t0
        assert int(n[0]) == frames
        return row(n_tokens, frames, steps, use_cache, sec, False)

    def row(n_tokens, frames, steps, use_cache, sec, estimated) -> dict:
        return {
            "tokens": n_tokens,
            "frames": frames,
            "steps": steps,
            "cache": use_cache,
            "estimated": estimated,
            "seconds": round(sec, 3),
            "steps_per_s": round(steps / sec, 1),
            "tokens_per_s": round(steps * p.n_heads / sec, 1),
        }

    @torch.no_grad()
    def estimate_uncached(n_tokens: int) -> dict:
        """Sum of full-forward times over the sequence lengths the uncached loop runs at."""
        frames = max(p.n_frames(n_tokens), 1)
        steps = int(lm.steps_needed(frames))
        first, last = args.src_len + 1, args.src_len + steps
        at = torch.linspace(first, last, 8).round().long().tolist()
        times = []
        for length in at:
            x = torch.randn(1, length, args.dim, device=args.device)
            t0 = time.perf_counter()
            lm.head(lm.transformer(x)[:, -1])  # the output layer, as generation runs it
            times.append(time.perf_counter() - t0)
        lengths = torch.arange(first, last, dtype=torch.float64)
        sec = float(np.interp(lengths.numpy(), at, times).sum())
        return row(n_tokens, frames, steps, False, sec, True)

    run(20, True)  # warm-up
    rows = []
    for n in args.lengths:
        for use_cache in (True, False):
            rows.append(run(n, use_cache) if use_cache or n <= args.uncached_max else estimate_uncached(n))
            r = rows[-1]
            print(
                f"{r['tokens']:>6} tokens  cache={str(r['cache']):5}  {r['seconds']:9.2f} s  "
                f"{r['tokens_per_s']:9.1f} tokens/s{'  (estimated)' if r['estimated'] else ''}",
                flush=True,
            )

    print(f"\n{'tokens':>6} | {'cached tok/s':>12} | {'uncached tok/s':>14} | speed-up")
    for n in args.lengths:
        c, u = (next(r for r in rows if r["tokens"] == n and r["cache"] == flag) for flag in (True, False))
        print(
            f"{n:>6} | {c['tokens_per_s']:>12.1f} | {u['tokens_per_s']:>13.1f}{'*' if u['estimated'] else ' '} | "
            f"{c['tokens_per_s'] / u['tokens_per_s']:.1f}x"
        )
    print("* estimated from timed full forward passes\n")
    shipped = shipped_rtf(args.seconds, args.device)
    print("\nself-drafted frames that lossless speculative decoding would accept:")
    drafts = shipped_draft_acceptance(args.seconds, args.device)

    result = {
        "model": {
            "params": count_parameters(lm),
            "pattern": args.pattern,
            "codebooks": args.codebooks,
            "codebook_size": args.codebook_size,
            "dim": args.dim,
            "layers": args.layers,
            "heads": args.heads,
        },
        "setup": {
            "device": args.device,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "src_len": args.src_len,
            "load_avg_at_end": os.getloadavg()[0],
            "decoding": "greedy, batch 1, fp32",
        },
        "results": rows,
        "shipped": shipped,
        "self_draft_acceptance": drafts,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{count_parameters(lm) / 1e6:.1f} M params; wrote {args.out}")


if __name__ == "__main__":
    main()
