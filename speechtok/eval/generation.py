"""Evaluation of speech a token LM generated: text-to-speech and speech enhancement.

Every table carries ceilings, because a codec round trip already costs quality: TTS rows for
the ground truth and its codec resynthesis decode(encode(gt)); enhancement rows, per SNR band,
for the noisy input, the codec ceiling decode(encode(clean)) and the enhanced output. Audio
goes in as (waveform, sample_rate) pairs. `run_eval_tts` / `run_eval_enhance` back
`speechtok eval-tts` / `speechtok eval-enhance`, reading folders or manifests of audio.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from speechtok.codecs import Codec, load_codec
from speechtok.data.audio import load_audio_with_sr, resample
from speechtok.data.manifest import Utterance
from speechtok.enhance.ceiling import has_mixture_ceiling, mixture_ceiling
from speechtok.errors import cannot
from speechtok.eval import judges as J
from speechtok.eval import metrics as M
from speechtok.eval.harness import EvalError, _fmt, _json_safe, _signal_metrics, load_items, report_command

BAND_EDGES = (0.0, 10.0)  # dB: bands < 0, 0-10, >= 10
TTS_SYSTEMS = {"generated": "generated", "ground_truth": "ground truth", "codec_resynth": "codec resynth"}
ENH_SYSTEMS = {
    "noisy": "noisy input",
    "codec_ceiling": "codec ceiling",
    "mixture_ceiling": "codec ceiling through the noisy input",
    "enhanced": "enhanced",
}
TTS_COLUMNS = [
    ("wer", "WER", "{:.1%}"),
    ("cer_ctc", "CER (CTC head)", "{:.1%}"),
    ("speaker_sim", "speaker sim", "{:.3f}"),
    ("speaker_sim_others", "sim to other voices' prompts", "{:.3f}"),
    ("dnsmos_ovrl", "DNSMOS OVRL", "{:.2f}"),
]
ENH_COLUMNS = [
    ("pesq_wb", "PESQ-wb", "{:.2f}"),
    ("stoi", "STOI", "{:.3f}"),
    ("si_sdr", "SI-SDR (dB)", "{:.1f}"),
    ("dnsmos_ovrl", "DNSMOS OVRL", "{:.2f}"),
    ("wer", "WER", "{:.1%}"),
]
Audio = tuple  # (waveform: numpy/torch 1-D or [1, T], sample_rate: int)


# --- shared pieces ------------------------------------------------------------------------
def _audio_list(items, name: str, n: int | None = None, optional_items: bool = False) -> list | None:
    """Checked list of (1-D float64 numpy, sr); None entries only where `optional_items`."""
    if items is None:
        return None
    items = list(items)
    if n is not None and len(items) != n:
        raise EvalError(f"{name}: {len(items)} items, expected {n} (one per generated item)")
    out, converted = [], {}  # the same array passed twice (a shared prompt) is converted once
    for i, item in enumerate(items):
        if item is None and optional_items:
            out.append(None)
            continue
        try:
            wav, sr = item
        except (TypeError, ValueError):
            raise EvalError(f"{name}[{i}]: expected a (waveform, sample_rate) pair") from None
        key = (id(wav), int(sr))
        if key not in converted:
            converted[key] = (M.as_mono(wav, f"{name}[{i}]"), int(sr))
        out.append(converted[key])
    return out


def _at_rate(wav, sr: int, rate: int) -> torch.Tensor:
    """A mono float waveform [T] (numpy or torch) at `rate`."""
    return resample(torch.from_numpy(M.as_mono(wav)).float(), int(sr), rate)


def resynthesize(codec: Codec, wav, sr: int, prompt: tuple | None = None) -> tuple[np.ndarray, int]:
    """decode(encode(wav)) at the codec's rate, cropped to the input length; `prompt` (wav, sr) is
    the voice a codec that `takes_prompt` decodes with."""
    x = _at_rate(wav, sr, codec.sample_rate)
    voice = None
    if codec.takes_prompt:
        if prompt is None:
            raise EvalError(f"codec '{_codec_name(codec)}' decodes with a voice prompt: the item needs one")
        voice = _at_rate(*prompt, codec.sample_rate).view(1, 1, -1).to(codec.device)
    with torch.inference_mode():
        out = codec.decode(codec.encode(x.view(1, 1, -1).to(codec.device)), prompt=voice)
    return out[0, 0, : x.numel()].double().cpu().numpy(), codec.sample_rate


def _ids(ids, n: int) -> list[str]:
    ids = [str(i) for i in (range(n) if ids is None else ids)]
    if len(ids) != n:
        raise EvalError(f"ids: {len(ids)} given, expected {n} (one per item)")
    return ids


def _codec_name(codec: Codec | None) -> str | None:
    return None if codec is None else codec.name or codec.family


def summarize(rows: Sequence[dict]) -> dict:
    """Means over rows: WER is corpus-level (total errors / total words), the rest nan-means."""
    keys = [
        k
        for k in dict.fromkeys(k for r in rows for k in r)
        if all(isinstance(r.get(k, math.nan), (int, float)) for r in rows)
        and k not in ("errors", "ref_words", "substitutions", "deletions", "insertions", "ctc_errors", "ctc_chars")
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column -> NaN, shown as "–"
        mean = {k: float(np.nanmean([r.get(k, math.nan) for r in rows])) for k in keys}
    worded = [r for r in rows if "errors" in r]
    if worded:
        mean["wer"] = sum(r["errors"] for r in worded) / sum(r["ref_words"] for r in worded)
    lettered = [r for r in rows if "ctc_errors" in r]
    if lettered:
        mean["cer_ctc"] = sum(r["ctc_errors"] for r in lettered) / max(sum(r["ctc_chars"] for r in lettered), 1)
    return {"n": len(rows), **mean}


def ctc_errors(transcriber, wav, sr: int, text: str) -> dict:
    """Character errors of a transcriber through tokens (`speechtok.asr`, as `speechtok transcribe`)
    against `text`, both normalised as for CTC: counts, so `summarize` gives the corpus CER."""
    import jiwer

    from speechtok.asr.ctc import text_for_ctc

    ref, hyp = text_for_ctc(text), transcriber.transcribe(_at_rate(wav, sr, transcriber.codec.sample_rate))
    if ref and hyp:
        e = jiwer.process_characters(ref, hyp)
        n = e.substitutions + e.deletions + e.insertions
    else:  # jiwer refuses an empty side: all deleted, or all inserted
        n = max(len(ref), len(hyp))
    return {"ctc_errors": n, "ctc_chars": len(ref)}


def _quality(wav, sr: int, text: str | None, use_dnsmos: bool) -> dict:
    """Non-intrusive judges of one waveform: Whisper WER against `text`, DNSMOS."""
    row = {}
    if text:
        row.update(J.whisper_judge().wer(wav, sr, text))
    if use_dnsmos:
        row.update(J.dnsmos(wav, sr))
    return row


# --- text-to-speech -----------------------------------------------------------------------
def evaluate_tts(
    generated: Sequence[Audio],
    texts: Sequence[str],
    prompts: Sequence[Audio | None] | None = None,
    references: Sequence[Audio] | None = None,
    codec: Codec | None = None,
    *,
    ids: Sequence[str] | None = None,
    speakers: Sequence[str] | None = None,
    dnsmos: bool = True,
    transcriber=None,
    progress: bool = False,
) -> dict:
    """Per-item and mean WER (Whisper tiny.en vs `texts`; with a `transcriber` through tokens,
    `speechtok.asr`, also its CER), speaker similarity to the item's
    prompt and DNSMOS for the generated speech, and for the ground truth `references` and
    their codec resynthesis when given (the ceilings generated speech is read against).
    With the items' `speakers`, also the mean similarity to the prompts of the other speakers:
    the floor that speech of no particular voice reaches, so the gap above it is what the
    prompt's voice carried."""
    gen = _audio_list(generated, "generated")
    if not gen:
        raise EvalError("evaluate_tts: no generated items")
    n = len(gen)
    texts = list(texts)
    if len(texts) != n:
        raise EvalError(f"texts: {len(texts)} items, expected {n} (one per generated item)")
    if not all(isinstance(t, str) and t.strip() for t in texts):
        raise EvalError("texts: every generated item needs a non-empty transcript (WER is against it)")
    ids = _ids(ids, n)
    prompts = _audio_list(prompts, "prompts", n, optional_items=True) or [None] * n
    refs = _audio_list(references, "references", n)
    systems = {"generated": gen}
    if refs is not None:
        systems["ground_truth"] = refs
    if codec is not None:
        if refs is None:
            raise EvalError("evaluate_tts: the codec resynthesis ceiling needs the ground-truth references")
        systems["codec_resynth"] = [resynthesize(codec, w, sr, p) for (w, sr), p in zip(refs, prompts)]
    spk = J.speaker_judge() if any(p is not None for p in prompts) else None
    prompt_emb: dict[int, np.ndarray] = {}  # one embedding per distinct prompt object
    result = {"task": "tts", "codec": _codec_name(codec), "n_items": n, "systems": {}}
    for system, audio in systems.items():
        rows = []
        for i, (wav, sr) in enumerate(tqdm(audio, desc=f"tts {system}", disable=not progress, file=sys.stderr)):
            row = {"id": ids[i], "text": texts[i], "duration": wav.size / sr, **_quality(wav, sr, texts[i], dnsmos)}
            if transcriber is not None:
                row.update(ctc_errors(transcriber, wav, sr, texts[i]))
            if prompts[i] is not None:
                key = id(prompts[i][0])
                if key not in prompt_emb:
                    prompt_emb[key] = spk.embed(*prompts[i])
                try:
                    emb = spk.embed(wav, sr)
                    row["speaker_sim"] = float(emb @ prompt_emb[key])
                    if speakers is not None:
                        row["speaker_sim_others"] = _others_similarity(emb, i, prompts, speakers, spk, prompt_emb)
                except ValueError as exc:  # silent output: no voice to compare
                    warnings.warn(f"{system} {ids[i]}: {exc}; speaker similarity recorded as NaN", stacklevel=2)
                    row["speaker_sim"] = math.nan
            rows.append(row)
        result["systems"][system] = {"mean": summarize(rows), "items": rows}
    return result


def _others_similarity(emb, i, prompts, speakers, spk, prompt_emb) -> float:
    """Mean similarity of item i's embedding to the prompts of the items of other speakers."""
    sims = []
    for j, prompt in enumerate(prompts):
        if prompt is not None and speakers[j] != speakers[i]:
            if id(prompt[0]) not in prompt_emb:
                prompt_emb[id(prompt[0])] = spk.embed(*prompt)
            sims.append(float(emb @ prompt_emb[id(prompt[0])]))
    return float(np.mean(sims)) if sims else math.nan


# --- enhancement --------------------------------------------------------------------------
def snr_band(snr_db: float, edges: Sequence[float] = BAND_EDGES) -> str:
    """Label of the half-open band [e_i, e_i+1) holding `snr_db`, e.g. '0–10 dB'."""
    edges = sorted(edges)
    if snr_db < edges[0]:
        return f"< {edges[0]:g} dB"
    for lo, hi in zip(edges, edges[1:]):
        if snr_db < hi:
            return f"{lo:g}–{hi:g} dB"
    return f"≥ {edges[-1]:g} dB"


def evaluate_enhancement(
    noisy: Sequence[Audio],
    enhanced: Sequence[Audio],
    clean: Sequence[Audio],
    snr_db: Sequence[float],
    codec: Codec | None = None,
    transcripts: Sequence[str | None] | None = None,
    *,
    ids: Sequence[str] | None = None,
    band_edges: Sequence[float] = BAND_EDGES,
    dnsmos: bool = True,
    progress: bool = False,
) -> dict:
    """PESQ-wb, STOI, ESTOI, SI-SDR, mel distance (against `clean`), DNSMOS and, where a
    transcript is given, Whisper WER, for the noisy input, the codec ceiling (when `codec` is
    given; for a dMel codec also its ceiling rendered through the noisy input, `speechtok.enhance.ceiling`)
    and the enhanced output; means per SNR band and overall, with enhanced − noisy."""
    clean = _audio_list(clean, "clean")
    if not clean:
        raise EvalError("evaluate_enhancement: no items")
    n = len(clean)
    systems = {"noisy": _audio_list(noisy, "noisy", n)}
    if codec is not None:
        systems["codec_ceiling"] = [resynthesize(codec, w, sr) for w, sr in clean]
        if has_mixture_ceiling(codec):
            systems["mixture_ceiling"] = [mixture_ceiling(codec, x, c) for x, c in zip(systems["noisy"], clean)]
    systems["enhanced"] = _audio_list(enhanced, "enhanced", n)
    snr_db = [float(s) for s in snr_db]
    if len(snr_db) != n:
        raise EvalError(f"snr_db: {len(snr_db)} values, expected {n} (one per item)")
    transcripts = list(transcripts) if transcripts is not None else [None] * n
    if len(transcripts) != n:
        raise EvalError(f"transcripts: {len(transcripts)} items, expected {n} (one per item)")
    ids = _ids(ids, n)
    items = []
    for i in tqdm(range(n), desc="enhancement", disable=not progress, file=sys.stderr):
        ref, sr = clean[i]
        item = {"id": ids[i], "snr_db": snr_db[i], "band": snr_band(snr_db[i], band_edges)}
        for system, audio in systems.items():
            wav, wsr = audio[i]
            est = resample(torch.from_numpy(wav), wsr, sr).numpy() if wsr != sr else wav
            item[system] = {
                **_signal_metrics(ref, est, sr, f"{system} {ids[i]}"),
                **_quality(wav, wsr, transcripts[i], dnsmos),
            }
        items.append(item)
    table = {}
    bands = [
        b
        for b in dict.fromkeys(snr_band(e, band_edges) for e in [-math.inf, *sorted(band_edges)])
        if any(it["band"] == b for it in items)
    ]
    for band in bands + ["all"]:
        chosen = [it for it in items if band in ("all", it["band"])]
        table[band] = {s: summarize([it[s] for it in chosen]) for s in systems}
        noisy_m, enh_m = table[band]["noisy"], table[band]["enhanced"]
        table[band]["delta"] = {k: enh_m[k] - noisy_m[k] for k in enh_m if k != "n" and k in noisy_m}
    return {
        "task": "enhancement",
        "codec": _codec_name(codec),
        "n_items": n,
        "band_edges": sorted(band_edges),
        "systems": list(systems),
        "table": table,
        "items": items,
    }


# --- reports ------------------------------------------------------------------------------
def _columns(cols, means: Sequence[dict]) -> list:
    return [c for c in cols if any(c[0] in m and not math.isnan(m[c[0]]) for m in means)]


def tts_markdown(result: dict) -> str:
    """One row per system: generated, ground truth, codec resynthesis."""
    means = [s["mean"] for s in result["systems"].values()]
    cols = _columns(TTS_COLUMNS, means)
    lines = ["| system | n | " + " | ".join(h for _, h, _ in cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for system, s in result["systems"].items():
        label = TTS_SYSTEMS[system] + (f" ({result['codec']})" if system == "codec_resynth" else "")
        lines.append(
            f"| {label} | {s['mean']['n']} | " + " | ".join(_fmt(s["mean"].get(k), f) for k, _, f in cols) + " |"
        )
    return "\n".join(lines) + "\n"


def enhancement_markdown(result: dict) -> str:
    """Per SNR band: noisy input, codec ceiling, enhanced, and the enhanced − noisy change."""
    table = result["table"]
    cols = _columns(ENH_COLUMNS, [m for band in table.values() for s, m in band.items() if s != "delta"])
    lines = [
        "| SNR band | n | system | " + " | ".join(h for _, h, _ in cols) + " |",
        "|---|---:|---|" + "---:|" * len(cols),
    ]
    for band, rows in table.items():
        n = rows["noisy"]["n"]
        for system in result["systems"]:
            label = ENH_SYSTEMS[system] + (f" ({result['codec']})" if "ceiling" in system else "")
            lines.append(
                f"| {band} | {n} | {label} | " + " | ".join(_fmt(rows[system].get(k), f) for k, _, f in cols) + " |"
            )
        lines.append(
            f"| {band} | {n} | Δ enhanced − noisy | "
            + " | ".join(_fmt(rows["delta"].get(k), f.replace("{:", "{:+")) for k, _, f in cols)
            + " |"
        )
    return "\n".join(lines) + "\n"


def write_report(out: str | Path, result: dict, meta: dict | None = None) -> dict[str, Path]:
    """results.json (NaN -> null) and results.md for an evaluate_tts/evaluate_enhancement result."""
    markdown = {"tts": tts_markdown, "enhancement": enhancement_markdown}[result["task"]](result)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md"}
    paths["json"].write_text(json.dumps(_json_safe({**(meta or {}), **result}), indent=2) + "\n")
    paths["md"].write_text(markdown)
    return paths


# --- CLI ----------------------------------------------------------------------------------
def load_pair(path) -> tuple[np.ndarray, int]:
    """An audio file as the (waveform, sample_rate) pair the evaluate_* functions take."""
    wav, sr = load_audio_with_sr(path)
    return wav[0].numpy(), sr


def _match(wanted: Sequence[Utterance], source: str | Path, what: str) -> list[Utterance]:
    """Items of the folder/manifest `source` for each wanted item, by ID or file name stem."""
    index = {}
    for u in load_items(source):
        index.setdefault(Path(u.path).stem, u)
        index[u.ID] = u
    found = [index.get(u.ID) or index.get(Path(u.path).stem) for u in wanted]
    missing = [u.ID for u, f in zip(wanted, found) if f is None]
    if missing:
        problem = (
            f"no audio for {len(missing)} of {len(wanted)} items (e.g. {', '.join(missing[:3])}); "
            "name files <ID>.wav after the manifest IDs"
        )
        raise EvalError(cannot(f"find {what} audio in", source, problem))
    return found


def add_eval_tts_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--generated", required=True, help="folder of generated audio named <ID>.wav, or a manifest of it (text column)"
    )
    parser.add_argument(
        "--data",
        default=None,
        help="manifest of the sentences: text, ground-truth audio in path, optional "
        "prompt_path column; generated files are matched by ID",
    )
    parser.add_argument(
        "--texts",
        default=None,
        help="instead of --data: text file, one sentence a line, in the order of the generated files sorted by name",
    )
    parser.add_argument("--prompt", default=None, help="voice prompt used for every item (speaker similarity)")
    parser.add_argument("--codec", default=None, help="codec for the decode(encode(ground truth)) ceiling")
    parser.add_argument("--no-reference", action="store_true", help="skip the ground-truth rows")
    parser.add_argument(
        "--transcriber",
        default=None,
        help="also CER through tokens by this transcriber (e.g. asr-semantic-16k-25, `speechtok transcribe`'s)",
    )
    parser.add_argument("--out", required=True, help="output folder for results.json/.md")
    parser.add_argument("--split", default=None, help="only manifest rows of this split, e.g. dev")
    parser.add_argument("--limit", type=int, default=None, help="evaluate at most N items")
    parser.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS")
    parser.add_argument("--device", default="cpu", help="device for the codec")
    return parser


def _tts_inputs(args) -> dict:
    if args.data and args.texts:
        raise EvalError("give either --data or --texts, not both")
    if args.data:
        data = load_items(args.data, args.split, args.limit)
        gen = _match(data, args.generated, "generated")
        texts, refs = [u.text for u in data], None if args.no_reference else [u.path for u in data]
        prompt_paths = [u.extra.get("prompt_path") or args.prompt for u in data]
        speakers = [u.speaker for u in data] if all(u.speaker for u in data) else None
    else:
        if args.codec:
            raise EvalError("--codec (resynthesis ceiling) needs --data with ground-truth audio")
        gen = load_items(args.generated, args.split, None if args.texts else args.limit)
        if args.texts:
            texts = [t.strip() for t in Path(args.texts).read_text(encoding="utf-8").splitlines() if t.strip()]
            if len(texts) != len(gen):
                problem = f"{len(texts)} sentences but {len(gen)} generated files in {args.generated}"
                raise EvalError(cannot("read sentences from", args.texts, problem))
            gen, texts = gen[: args.limit], texts[: args.limit]
        else:
            texts = [u.text for u in gen]
        refs, prompt_paths = None, [u.extra.get("prompt_path") or args.prompt for u in gen]
        speakers = None
    empty = [u.ID for u, t in zip(gen, texts) if not t.strip()]
    if empty:
        raise EvalError(f"no text for {len(empty)} items (e.g. {', '.join(empty[:3])}); WER needs a transcript")
    loaded = {p: load_pair(p) for p in dict.fromkeys(p for p in prompt_paths if p)}  # a shared prompt once
    return {
        "generated": [load_pair(u.path) for u in gen],
        "texts": texts,
        "ids": [u.ID for u in gen],
        "speakers": speakers,
        "prompts": [loaded[p] if p else None for p in prompt_paths],
        "references": None if refs is None else [load_pair(p) for p in refs],
    }


def run_eval_tts(args: argparse.Namespace) -> int:
    return report_command("eval-tts", lambda: _eval_tts(args))


def _eval_tts(args: argparse.Namespace) -> dict[str, Path]:
    inputs = _tts_inputs(args)
    codec = load_codec(args.codec, args.device) if args.codec else None
    transcriber = None
    if args.transcriber:
        from speechtok.asr import load_transcriber

        transcriber = load_transcriber(args.transcriber, device=args.device)
    result = evaluate_tts(**inputs, codec=codec, dnsmos=not args.no_dnsmos, transcriber=transcriber, progress=True)
    meta = {"generated": str(args.generated), "data": args.data, "texts": args.texts, "split": args.split}
    return write_report(args.out, result, meta)


def _band_edges(spec: str) -> list[float]:
    try:
        edges = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated dB values, got '{spec}'") from None
    if not edges:
        raise argparse.ArgumentTypeError("need at least one band edge")
    return edges


def add_eval_enhance_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--data",
        required=True,
        help="manifest of noisy pairs (path = noisy audio, clean_path and snr_db columns, "
        "optional text for WER), as written by the noisy-corpus maker",
    )
    parser.add_argument(
        "--enhanced", required=True, help="folder (or manifest) of enhanced audio named <ID>.wav after the manifest IDs"
    )
    parser.add_argument("--codec", default=None, help="codec for the decode(encode(clean)) ceiling row")
    parser.add_argument("--out", required=True, help="output folder for results.json/.md")
    parser.add_argument(
        "--bands",
        type=_band_edges,
        default=list(BAND_EDGES),
        help="SNR band edges in dB (default 0,10: bands <0, 0-10, >=10)",
    )
    parser.add_argument("--split", default=None, help="only manifest rows of this split, e.g. dev")
    parser.add_argument("--limit", type=int, default=None, help="evaluate at most N pairs")
    parser.add_argument("--no-wer", action="store_true", help="skip Whisper WER even where text is given")
    parser.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS")
    parser.add_argument("--device", default="cpu", help="device for the codec")
    return parser


def run_eval_enhance(args: argparse.Namespace) -> int:
    return report_command("eval-enhance", lambda: _eval_enhance(args))


def _eval_enhance(args: argparse.Namespace) -> dict[str, Path]:
    data = load_items(args.data, args.split, args.limit)
    bad = [u.ID for u in data if not u.extra.get("clean_path") or not u.extra.get("snr_db")]
    if bad:
        problem = f"rows without clean_path/snr_db columns (e.g. {', '.join(bad[:3])}); expected a noisy-pair manifest"
        raise EvalError(cannot("evaluate enhancement on", args.data, problem))
    enhanced = _match(data, args.enhanced, "enhanced")
    texts = None if args.no_wer else [u.text or None for u in data]
    codec = load_codec(args.codec, args.device) if args.codec else None
    result = evaluate_enhancement(
        [load_pair(u.path) for u in data],
        [load_pair(u.path) for u in enhanced],
        [load_pair(u.extra["clean_path"]) for u in data],
        [float(u.extra["snr_db"]) for u in data],
        codec=codec,
        transcripts=texts,
        ids=[u.ID for u in data],
        band_edges=args.bands,
        dnsmos=not args.no_dnsmos,
        progress=True,
    )
    return write_report(args.out, result, {"data": str(args.data), "enhanced": str(args.enhanced), "split": args.split})
