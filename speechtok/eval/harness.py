"""Codec evaluation: encode/decode a set of utterances, score the reconstructions, report.

`evaluate_codec` gives per-utterance rows and means for one codec setting; `run_eval` backs
`speechtok eval` and writes results.json, a Markdown table and a metrics-vs-bitrate plot
with one row/point per codec, decoder and number of codebooks.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from speechtok.codecs import Codec, CodecError, load_codec
from speechtok.codecs.renderers import SwitchableRenderer, decoder_name
from speechtok.data.audio import duration_seconds, load_audio, resample
from speechtok.data.manifest import Utterance, read_manifest
from speechtok.errors import cannot
from speechtok.eval import metrics as M

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3"}
SIGNAL_METRICS = ("pesq_wb", "stoi", "estoi", "si_sdr", "mel_distance")
# name -> (pip packages, what it adds to each utterance row)
EXTRAS = {
    "dnsmos": ("speechmos onnxruntime", ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")),
    "visqol": ("'visqol-python[lattice]'", ("visqol",)),
}
COLUMNS = [  # (key in run["mean"] or run, Markdown header, format)
    ("pesq_wb", "PESQ-wb", "{:.2f}"),
    ("stoi", "STOI", "{:.3f}"),
    ("estoi", "ESTOI", "{:.3f}"),
    ("si_sdr", "SI-SDR (dB)", "{:.1f}"),
    ("mel_distance", "mel dist", "{:.3f}"),
]
EXTRA_COLUMNS = [
    ("dnsmos_ovrl", "DNSMOS OVRL", "{:.2f}"),
    ("dnsmos_sig", "DNSMOS SIG", "{:.2f}"),
    ("dnsmos_bak", "DNSMOS BAK", "{:.2f}"),
    ("visqol", "ViSQOL", "{:.2f}"),
]


class EvalError(ValueError):
    """Bad evaluation request (data, option or missing optional package); says how to fix it."""


# --- items --------------------------------------------------------------------------
def load_items(data: str | Path, split: str | None = None, limit: int | None = None) -> list[Utterance]:
    """Utterances from a manifest CSV (optionally one split) or every audio file under a folder."""
    data = Path(data)
    if not data.exists():
        raise EvalError(cannot("load evaluation data", data, "no such manifest or folder"))
    if data.is_dir():
        if split:
            raise EvalError(cannot("load evaluation data", data, "--split needs a manifest; a folder has no splits"))
        files = sorted(p for p in data.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        items = [
            Utterance(ID=str(p.relative_to(data).with_suffix("")), path=str(p), duration=duration_seconds(p))
            for p in files[:limit]
        ]
        if not items:
            raise EvalError(
                cannot("load evaluation data", data, f"no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})")
            )
        return items
    items = read_manifest(data)
    if split:
        splits = sorted({u.split for u in items})
        items = [u for u in items if u.split == split]
        if not items:
            raise EvalError(
                cannot("load evaluation data", data, f"no utterances in split '{split}' (splits: {', '.join(splits)})")
            )
    if not items:
        raise EvalError(cannot("load evaluation data", data, "manifest has no utterances"))
    return items[:limit]


# --- optional extra metrics -----------------------------------------------------------
@cache
def _extra_scorer(name: str) -> Callable[[np.ndarray, np.ndarray], dict[str, float]]:
    """Scorer on 16 kHz (reference, estimate); built once, models load from the packages."""
    try:
        if name == "dnsmos":
            from speechmos import dnsmos

            def score(ref, est):  # non-intrusive: only the reconstruction is rated
                r = dnsmos.run(np.clip(est, -1.0, 1.0).astype(np.float32), 16000)
                return {f"dnsmos_{k}": float(r[f"{k}_mos"]) for k in ("ovrl", "sig", "bak", "p808")}

            return score
        if name == "visqol":
            from visqol import VisqolApi

            api = VisqolApi()
            # The lattice mapper is ViSQOL's speech default; the polynomial fallback over-predicts.
            api.create(mode="speech", use_lattice_model=True)

            def score(ref, est):
                return {"visqol": float(api.measure_from_arrays(ref, est, 16000).moslqo)}

            return score
    except ImportError as exc:
        raise EvalError(
            f"--extras {name} needs {EXTRAS[name][0]} (missing: {exc}); pip install {EXTRAS[name][0]}"
        ) from exc
    raise EvalError(f"unknown extra metric '{name}' (known: {', '.join(EXTRAS)})")


def parse_extras(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """'dnsmos,visqol' -> ('dnsmos', 'visqol'), each checked to be known and importable."""
    names = spec.split(",") if isinstance(spec, str) else list(spec or ())
    names = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    for n in names:
        _extra_scorer(n)
    return names


# --- one codec setting ------------------------------------------------------------------
def set_decoder(codec: Codec, decoder: str) -> None:
    """Pick a codec's decoder ('vocoder' | 'griffinlim'), for codecs that offer a choice."""
    label = codec.name or codec.family
    if decoder not in ("vocoder", "griffinlim"):
        raise EvalError(f"unknown decoder '{decoder}' (vocoder | griffinlim)")
    if not isinstance(codec, SwitchableRenderer):
        raise EvalError(f"codec '{label}' has a single built-in decoder; drop --decoder")
    if decoder not in codec.renderer_choices():
        raise EvalError(f"codec '{label}' has no trained vocoder (Griffin-Lim only); use --decoder griffinlim")
    codec.set_renderer(decoder)


def _signal_metrics(ref: np.ndarray, est: np.ndarray, sr: int, label: str) -> dict[str, float]:
    try:
        pesq = M.pesq_wb(ref, est, sr)
    except ValueError as exc:  # e.g. an all-silent reference: keep the other metrics
        warnings.warn(f"{label}: {exc}; PESQ recorded as NaN", stacklevel=2)
        pesq = math.nan
    return {
        "pesq_wb": pesq,
        "stoi": M.stoi(ref, est, sr),
        "estoi": M.estoi(ref, est, sr),
        "si_sdr": M.si_sdr(ref, est),
        "mel_distance": M.mel_distance(ref, est, sr),
    }


def _warm_up(codec: Codec, n_codebooks: int) -> None:
    """One tiny encode/decode so first-call costs (FFT plans, caches) stay out of the RTF."""
    n = codec.hop_length * 8
    wav = 1e-3 * torch.randn(1, 1, n, generator=torch.Generator().manual_seed(0))
    codec.decode(codec.encode(wav.to(codec.device), n_codebooks=n_codebooks))


def evaluate_codec(
    codec: Codec,
    items: Iterable[Utterance],
    n_codebooks: int | None = None,
    extras: Sequence[str] = (),
    progress: bool = False,
) -> dict:
    """Encode and decode each item one at a time; per-utterance metrics, means, usage, RTFs.

    Reconstructions are scored at the codec's sample rate against the input as the codec saw
    it (loaded, mixed to mono and resampled to `codec.sample_rate`). Mean RTFs are total wall
    time over total audio duration.
    """
    extras = parse_extras(extras)
    items = list(items)
    if not items:
        raise EvalError("evaluate_codec: no items to evaluate")
    sr, dev = codec.sample_rate, codec.device
    try:
        n_books = codec.check_n_codebooks(n_codebooks)
    except CodecError as exc:
        raise EvalError(f"{exc} (drop --n-codebooks)") from None
    label = f"{codec.name or codec.family} ({decoder_name(codec)}, K={n_books})"
    _warm_up(codec, n_books)
    hist, rows, enc_total, dec_total = 0, [], 0.0, 0.0
    for utt in tqdm(items, desc=label, disable=not progress, file=sys.stderr):
        wav = load_audio(utt.path, sr).to(dev)
        seconds = wav.shape[-1] / sr
        with M.stopwatch(dev) as t_enc:
            codes = codec.encode(wav.unsqueeze(0), n_codebooks=n_books)
        with M.stopwatch(dev) as t_dec:
            out = codec.decode(codes)
        enc_total, dec_total = enc_total + t_enc[0], dec_total + t_dec[0]
        hist = hist + M.code_histogram(codes[0], codec.codebook_size)
        ref = wav[0].double().cpu().numpy()
        est = out[0, 0, : wav.shape[-1]].double().cpu().numpy()
        row = {
            "id": utt.ID,
            "path": str(utt.path),
            "duration": seconds,
            **_signal_metrics(ref, est, sr, f"{utt.path}"),
            "encode_rtf": t_enc[0] / seconds,
            "decode_rtf": t_dec[0] / seconds,
        }
        if extras:
            ref16, est16 = (resample(torch.from_numpy(x), sr, 16000).numpy() for x in (ref, est))
            for name in extras:
                row.update(_extra_scorer(name)(ref16, est16))
        rows.append(row)
    usage = M.codebook_usage(hist)
    audio_seconds = sum(r["duration"] for r in rows)
    keys = list(SIGNAL_METRICS) + [k for n in extras for k in EXTRAS[n][1]]
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    mean.update(
        usage_perplexity=float(usage["perplexity"].mean()),
        usage_fraction=float(usage["used_fraction"].mean()),
        encode_rtf=M.real_time_factor(enc_total, audio_seconds),
        decode_rtf=M.real_time_factor(dec_total, audio_seconds),
    )
    return {
        "codec": codec.name or codec.family,
        "family": codec.family,
        "decoder": decoder_name(codec),
        "n_codebooks": n_books,
        "codebook_size": codec.codebook_size,
        "sample_rate": sr,
        "frame_rate": codec.frame_rate,
        "bitrate": codec.bitrate_at(n_books),
        "n_utterances": len(rows),
        "audio_seconds": audio_seconds,
        "extras": list(extras),
        "mean": mean,
        "codebook_usage": {k: v.tolist() for k, v in usage.items()},
        "utterances": rows,
    }


# --- reports ----------------------------------------------------------------------------
def _fmt(value, fmt: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def markdown_table(runs: Sequence[dict]) -> str:
    """One row per codec setting."""
    extra_cols = [c for c in EXTRA_COLUMNS if any(c[0] in r["mean"] for r in runs)]
    cols = COLUMNS + extra_cols
    head = [
        "codec",
        "decoder",
        "codebooks",
        "bitrate (kbps)",
        *(h for _, h, _ in cols),
        "usage ppl (used)",
        "enc RTF",
        "dec RTF",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * (len(head) - 4)) + "|"]
    for r in runs:
        m = r["mean"]
        cells = [
            r["codec"],
            r["decoder"],
            str(r["n_codebooks"]),
            f"{r['bitrate'] / 1000:.2f}",
            *(_fmt(m.get(k), f) for k, _, f in cols),
            f"{m['usage_perplexity']:.1f}/{r['codebook_size']} ({100 * m['usage_fraction']:.0f}%)",
            f"{m['encode_rtf']:.4f}",
            f"{m['decode_rtf']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_metrics(runs: Sequence[dict], path: Path) -> Path:
    """Each metric against bitrate; one line per codec and decoder across codebook settings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = COLUMNS + [c for c in EXTRA_COLUMNS if any(c[0] in r["mean"] for r in runs)]
    n_rows = math.ceil(len(cols) / 3)
    fig, axes = plt.subplots(n_rows, 3, figsize=(13, 3.6 * n_rows), squeeze=False)
    series: dict[str, list[dict]] = {}
    for r in runs:
        series.setdefault(f"{r['codec']} ({r['decoder']})", []).append(r)
    for ax, (key, title, _) in zip(axes.flat, cols):
        for name, rs in series.items():
            rs = sorted(rs, key=lambda r: r["bitrate"])
            ax.plot(
                [r["bitrate"] / 1000 for r in rs], [r["mean"].get(key, math.nan) for r in rs], marker="o", label=name
            )
        ax.set(title=title, xlabel="bitrate (kbps)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cols) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def write_results(out: str | Path, runs: Sequence[dict], meta: dict | None = None) -> dict[str, Path]:
    """results.json (NaN -> null), results.md and metrics_vs_bitrate.png under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "metrics_vs_bitrate.png"}
    payload = {**(meta or {}), "runs": list(runs)}
    paths["json"].write_text(json.dumps(_json_safe(payload), indent=2) + "\n")
    paths["md"].write_text(markdown_table(runs))
    plot_metrics(runs, paths["png"])
    return paths


# --- CLI ------------------------------------------------------------------------------
def _int_list(spec: str) -> list[int]:
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{spec}'") from None


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--codec", action="append", required=True, help="bundled codec name or codec folder; repeat to compare several"
    )
    parser.add_argument("--data", required=True, help="manifest CSV or folder of audio files")
    parser.add_argument("--out", required=True, help="output folder for results.json/.md/.png")
    parser.add_argument(
        "--n-codebooks",
        type=_int_list,
        default=None,
        help="comma-separated codebook counts to evaluate, e.g. 1,2,4 (default: all)",
    )
    parser.add_argument(
        "--decoder",
        choices=["griffinlim", "vocoder"],
        default=None,
        help="decoder for codecs that offer a choice (dmel)",
    )
    parser.add_argument("--split", default=None, help="only manifest rows of this split, e.g. dev")
    parser.add_argument("--limit", type=int, default=None, help="evaluate at most N utterances")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--extras", default="", help="optional metrics: dnsmos,visqol (need their pip packages)")
    from speechtok.eval.token_metrics import add_token_metric_arguments

    add_token_metric_arguments(parser)
    return parser


def report_command(command: str, build: Callable[[], dict[str, Path]]) -> int:
    """Run `build` (it writes a report and returns its paths), print the Markdown table and
    return 0; a bad input (EvalError, AudioError, CodecError, bad manifest) is one line on
    stderr and exit code 2."""
    try:
        paths = build()
    except (ValueError, FileNotFoundError) as exc:
        print(f"speechtok {command}: error: {exc}", file=sys.stderr)
        return 2
    print(paths["md"].read_text(), end="")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    return report_command("eval", lambda: _eval_codecs(args))


def _eval_codecs(args: argparse.Namespace) -> dict[str, Path]:
    if args.limit is not None and args.limit < 1:
        raise EvalError(f"--limit must be >= 1, got {args.limit}")
    extras = parse_extras(args.extras)
    items = load_items(args.data, args.split, args.limit)
    if getattr(args, "token_metrics", False):
        from speechtok.eval.token_metrics import run_token_metrics

        return run_token_metrics(args, items)
    runs = []
    for name in args.codec:
        codec = load_codec(name, args.device)
        if args.decoder:
            set_decoder(codec, args.decoder)
        for n in args.n_codebooks or [None]:
            runs.append(evaluate_codec(codec, items, n, extras, progress=True))
    meta = {"data": str(args.data), "split": args.split, "limit": args.limit, "device": str(args.device)}
    return write_results(args.out, runs, meta)
