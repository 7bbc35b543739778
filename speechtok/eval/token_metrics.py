"""Token metrics for any codec (`speechtok eval --token-metrics`), after STAB and DASB.

Metrics, all on the codes alone (no decoding):

- **usage / perplexity** per codebook: the share of the codebook's codes that occur, and
  exp(entropy) of the code histogram (= codebook size when uniform, 1 when one code is used).
- **phone purity, cluster purity and PNMI** (HuBERT, Hsu et al. 2021, sec. IV-B) from the joint
  distribution of (code, phone) over frames: phone purity E_z[max_y p(y|z)], cluster purity
  E_y[max_z p(z|y)], PNMI = I(y; z) / H(y). Per codebook and on the frame's K-tuple (the tuple
  space is huge for many codebooks, so its purity/PNMI run towards 1 trivially: read codebook 1
  and the per-codebook mean instead).
- **invariance** (STAB, Vashishth et al. 2024): the normalised edit distance (NED) between the
  token sequences of an utterance and a changed version of it: (1) clean vs the same utterance
  with real ambient noise (`noise_ambient` dev recordings) at 10 dB SNR, a seeded noise file and
  offset per utterance; (2) original vs speed 0.9x and 1.1x (resampling: tempo and pitch change
  together, `speechtok.data.noise.change_speed`); (3) one synthetic voice vs another reading the
  same sentence (default flite's `rms` and `slt`: a male and a female 16 kHz CMU ARCTIC voice
  with the same text front-end; avoid 8 kHz voices such as `kal`, whose missing upper band
  alone changes nearly every token). NED = Levenshtein distance / max(len a, len b) (0 = identical, 1 = nothing in
  common; a length change such as a speed change is paid for by insertions/deletions), on the
  raw frame sequences, per codebook and on K-tuples (a frame's K codes as one symbol); the
  "dedup" variants first merge runs of a repeated symbol (as in unit-based LMs), which discounts
  pure duration changes.

**Phone labels.** The reference must not come from the codec under test and must be the same
for every codec. No offline phone recogniser or acoustic model for forced alignment ships with
the project (Whisper tiny.en gives word timestamps only), so the labels come from the project's
unsupervised monotonic aligner (`speechtok.tts.align`, RAD-TTS forward-sum + monotonic search)
over espeak-ng phonemes of the transcripts (`speechtok.tts.text.phonemize_many`). It is trained
once, on the dmel-16k codes (80 binned log-mel bands, i.e. a quantised spectrogram, a codec-
agnostic acoustic feature) of every transcribed row of the evaluated manifest, with a fixed seed,
and the alignment is cached as phone intervals in seconds (JSON under `--cache`); each codec's
frames then take the phone at their centre time, at the codec's own frame rate. The aligner
sees dmel-16k's codes, so for that one codec the labels are not fully independent (it is a
quantised mel spectrogram, which any acoustic aligner would read). Symbols become phones thus:
stress marks give their frames to the next phone, length and other modifiers join the previous
phone (`iː`), word gaps and punctuation are `sil`; diphthongs stay two phones (espeak's IPA
letters). The alignment is unsupervised: it is plausible, not hand-checked.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from speechtok.codecs import Codec, CodecError, load_codec
from speechtok.data.audio import load_audio
from speechtok.data.manifest import Utterance, read_manifest
from speechtok.eval import metrics as M

DEFAULT_NOISE = "work_data/manifests/noise_ambient_dev.csv"
DEFAULT_VOICES = ("flite:rms", "flite:slt")
DEFAULT_CACHE = "work_data/token_metrics"
ALIGN_CODEC = "dmel-16k"
STRESS = "ˈˌ"
MODIFIERS = "ːˑ̩̪̯̃̊͡ʰʲʷ˞ˠˤ"
SILENCE = "sil"


# --- pure metrics -------------------------------------------------------------------------
def usage_perplexity(codes, codebook_size: int) -> dict[str, np.ndarray]:
    """Per-codebook share of codes used and perplexity from codes [K, F] (or [F], or a list of
    [K, F_i] arrays pooled over utterances)."""
    if isinstance(codes, list | tuple):
        codes = np.concatenate([np.atleast_2d(np.asarray(c)) for c in codes], axis=1)
    codes = np.atleast_2d(np.asarray(codes))
    return M.codebook_usage(M.code_histogram(torch.from_numpy(codes.astype(np.int64)), codebook_size))


def _ids(values) -> np.ndarray:
    """Any hashables [N] -> dense ints [N]."""
    values = list(values)
    index: dict = {}
    return np.array([index.setdefault(v, len(index)) for v in values], dtype=np.int64)


def contingency(codes, labels) -> np.ndarray:
    """Counts [n_codes, n_labels] of (code, label) pairs over frames (codes/labels any hashables)."""
    z, y = _ids(_hashable(codes)), _ids(_hashable(labels))
    if len(z) != len(y):
        raise ValueError(f"codes ({len(z)}) and labels ({len(y)}) differ in length")
    if not len(z):
        raise ValueError("contingency: no frames")
    counts = np.zeros((z.max() + 1, y.max() + 1), dtype=np.float64)
    np.add.at(counts, (z, y), 1)
    return counts


def _hashable(seq):
    a = np.asarray(seq)
    return [tuple(r) for r in a.tolist()] if a.ndim == 2 else a.tolist()


def purity_pnmi(codes, labels) -> dict[str, float]:
    """Phone purity, cluster purity and PNMI (HuBERT) of codes [F] against phone labels [F];
    a row of a 2-D codes array [F, K] counts as one symbol (the K-tuple)."""
    p = contingency(codes, labels)
    p /= p.sum()
    pz, py = p.sum(1), p.sum(0)
    h_y = -float((py[py > 0] * np.log(py[py > 0])).sum())
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / (pz[:, None] * py[None, :])[nz])).sum())
    return {
        "phone_purity": float(p.max(1).sum()),
        "cluster_purity": float(p.max(0).sum()),
        "pnmi": mi / h_y if h_y > 0 else math.nan,
    }


def dedup(seq: Sequence) -> list:
    """Runs of a repeated symbol merged: [1, 1, 2, 2, 1] -> [1, 2, 1]."""
    seq = list(seq)
    return [s for i, s in enumerate(seq) if i == 0 or s != seq[i - 1]]


def normalized_edit_distance(a: Sequence, b: Sequence) -> float:
    """Levenshtein distance (unit insert/delete/substitute) / max(len a, len b); 0 for two empty."""
    from rapidfuzz.distance import Levenshtein

    a, b = _hashable(a), _hashable(b)
    n = max(len(a), len(b))
    return Levenshtein.distance(a, b) / n if n else 0.0


def invariance(codes_a, codes_b) -> dict[str, float | list[float]]:
    """NED of two code arrays [K, F_a], [K, F_b]: per codebook, on K-tuples, raw and deduplicated."""
    a, b = np.atleast_2d(np.asarray(codes_a)), np.atleast_2d(np.asarray(codes_b))
    ta, tb = [tuple(c) for c in a.T.tolist()], [tuple(c) for c in b.T.tolist()]
    return {
        "per_codebook": [normalized_edit_distance(x, y) for x, y in zip(a, b)],
        "tuple": normalized_edit_distance(ta, tb),
        "per_codebook_dedup": [normalized_edit_distance(dedup(x.tolist()), dedup(y.tolist())) for x, y in zip(a, b)],
        "tuple_dedup": normalized_edit_distance(dedup(ta), dedup(tb)),
    }


# --- phone labels --------------------------------------------------------------------------
def phones_from_durations(symbols: str, durations: Sequence[int], frame_rate: float) -> list[tuple[str, float, float]]:
    """(phone, start s, end s) from aligned symbols and their durations in frames (see module doc)."""
    out: list[list] = []
    carry, t = 0, 0
    for s, d in zip(symbols, durations, strict=True):
        d = int(d)
        if s in STRESS:
            carry += d
        elif s in MODIFIERS and out and out[-1][0] != SILENCE:
            out[-1][0] += s
            out[-1][2] += d
        else:
            label = SILENCE if not s.strip() or not s.isalpha() and s not in MODIFIERS else s
            if label == SILENCE and out and out[-1][0] == SILENCE and not carry:
                out[-1][2] += d
            else:
                out.append([label, t - carry, t + d])
            carry = 0
        t += d
    if carry and out:
        out[-1][2] += carry
    return [(lab, a / frame_rate, b / frame_rate) for lab, a, b in out]


def frame_labels(intervals: Sequence[tuple[str, float, float]], n_frames: int, frame_rate: float) -> list[str | None]:
    """The phone at each frame's centre time (None past the last interval)."""
    ends = np.array([b for _, _, b in intervals])
    centres = (np.arange(n_frames) + 0.5) / frame_rate
    idx = np.searchsorted(ends, centres, side="right")
    return [intervals[i][0] if i < len(intervals) else None for i in idx]


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def phone_alignments(
    items: Sequence[Utterance], cache_dir: str | Path, steps: int = 1500, seed: int = 0, progress: bool = False
) -> dict[str, list[tuple[str, float, float]]]:
    """Utterance path -> phone intervals (s) for every transcribed item, from the aligner trained
    over all of them on dmel-16k codes; cached by (items, texts, steps, seed)."""
    from speechtok.tts.align import durations, train_aligner
    from speechtok.tts.text import TextFrontend, phonemize_many

    items = [u for u in items if u.text.strip()]
    if not items:
        return {}
    key = _key(sorted((u.ID, str(u.path), u.text) for u in items), steps, seed, ALIGN_CODEC)
    path = Path(cache_dir) / f"phones-{key}.json"
    if path.exists():
        return {k: [tuple(x) for x in v] for k, v in json.loads(path.read_text())["phones"].items()}
    front = TextFrontend("phonemes")
    codec = load_codec(ALIGN_CODEC)
    syms = phonemize_many([u.text for u in items])
    pairs, keep = [], []
    for u, s in tqdm(list(zip(items, syms)), desc="aligner: encoding", disable=not progress, file=sys.stderr):
        # a word gap at each end takes the leading and trailing silence (else the first and last
        # phones would absorb it)
        s = " " + "".join(c for c in s if c in front.index).strip() + " "
        codes = _encode(codec, load_audio(u.path, codec.sample_rate), codec.n_codebooks)
        if s.strip() and codes.shape[-1] >= len(s):
            pairs.append((torch.tensor([front.index[c] for c in s]), torch.from_numpy(codes)))
            keep.append((u, s))
    print(f"training the phone aligner on {len(pairs)} utterances ({steps} steps)", file=sys.stderr, flush=True)
    model = train_aligner(pairs, front.vocab_size, codec.codebook_size, steps=steps, seed=seed, log_every=0)
    phones = {
        str(u.path): phones_from_durations(s, d, codec.frame_rate) for (u, s), d in zip(keep, durations(model, pairs))
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"aligner": "speechtok.tts.align", "codes": ALIGN_CODEC, "steps": steps, "seed": seed}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**meta, "phones": phones}, ensure_ascii=False))
    tmp.replace(path)
    return phones


# --- perturbed audio ------------------------------------------------------------------------
@cache
def _noise_audio(path: str) -> torch.Tensor:
    return load_audio(path, 16000)


def add_real_noise(wav: torch.Tensor, noise_files: Sequence[str], snr_db: float, seed: int) -> torch.Tensor:
    """[1, T] 16 kHz speech plus a seeded crop (looped if short) of one of `noise_files` at `snr_db`."""
    from speechtok.data.noise import mix_at_snr

    rng = np.random.default_rng(seed)
    noise = _noise_audio(str(noise_files[int(rng.integers(len(noise_files)))]))
    n = wav.shape[-1]
    if noise.shape[-1] < n:
        noise = noise.repeat(1, math.ceil(n / noise.shape[-1]))
    start = int(rng.integers(noise.shape[-1] - n + 1))
    return mix_at_snr(wav, noise[:, start : start + n], snr_db)[0]


def synth_pairs(texts: Sequence[str], voices: Sequence[str], cache_dir: str | Path) -> dict[str, list[Path]]:
    """text -> one 16 kHz FLAC per voice reading it (synthesised once, cached)."""
    from speechtok.data.synth import parse_voice, synthesize

    texts = list(dict.fromkeys(t for t in texts if t.strip()))
    out = {t: [] for t in texts}
    for spec in voices:
        voice = parse_voice(spec)
        paths = [Path(cache_dir) / "synth" / voice.id / f"{_key(t)}.flac" for t in texts]
        synthesize(voice, texts, paths)
        for t, p in zip(texts, paths):
            out[t].append(p)
    return out


# --- one codec setting --------------------------------------------------------------------------
def _encode(codec: Codec, wav: torch.Tensor, n_codebooks: int) -> np.ndarray:
    with torch.inference_mode():
        return codec.encode(wav.unsqueeze(0).to(codec.device), n_codebooks=n_codebooks)[0].cpu().numpy()


def _mean(rows: list[dict], key: str):
    vals = [r[key] for r in rows]
    return np.mean(np.array(vals, dtype=np.float64), axis=0).tolist() if vals else None


def token_metrics(
    codec: Codec,
    items: Sequence[Utterance],
    phones: dict[str, list],
    noise_files: Sequence[str],
    synth: dict[str, list[Path]],
    n_codebooks: int | None = None,
    snr_db: float = 10.0,
    speeds: Sequence[float] = (0.9, 1.1),
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """All token metrics of one codec setting over `items` (see the module doc)."""
    from speechtok.data.noise import change_speed

    K = codec.check_n_codebooks(n_codebooks)
    sr, fr = codec.sample_rate, codec.frame_rate
    label = f"{codec.name or codec.family} K={K}"
    all_codes, lab_codes, labels = [], [], []
    inv: dict[str, list[dict]] = {"noise": [], "speed": [], "speaker": []}
    for i, utt in enumerate(tqdm(items, desc=label, disable=not progress, file=sys.stderr)):
        wav = load_audio(utt.path, sr)
        codes = _encode(codec, wav, K)
        all_codes.append(codes)
        if str(utt.path) in phones:
            lab = frame_labels(phones[str(utt.path)], codes.shape[-1], fr)
            ok = [j for j, y in enumerate(lab) if y is not None]
            lab_codes.append(codes[:, ok])
            labels += [lab[j] for j in ok]
        if noise_files:
            noisy = add_real_noise(resample_to16(wav, sr), noise_files, snr_db, seed + i)
            inv["noise"].append(invariance(codes, _encode(codec, resample_from16(noisy, sr), K)))
        for s in speeds:
            inv["speed"].append(invariance(codes, _encode(codec, change_speed(wav, s, sr), K)))
    for paths in synth.values():
        a, b = (_encode(codec, load_audio(p, sr), K) for p in paths[:2])
        inv["speaker"].append(invariance(a, b))
    usage = usage_perplexity(all_codes, codec.codebook_size)
    result = {
        "codec": codec.name or codec.family,
        "n_codebooks": K,
        "codebook_size": codec.codebook_size,
        "frame_rate": fr,
        "bitrate": codec.bitrate_at(K),
        "n_utterances": len(items),
        "n_frames": int(sum(c.shape[-1] for c in all_codes)),
        "usage": usage["used_fraction"].tolist(),
        "perplexity": usage["perplexity"].tolist(),
    }
    if labels:
        lc = np.concatenate(lab_codes, axis=1)
        per_book = [purity_pnmi(lc[k], labels) for k in range(K)]
        result["phones"] = {
            "n_frames": len(labels),
            "n_phones": len(set(labels)),
            "per_codebook": per_book,
            "tuple": purity_pnmi(lc.T, labels),
            "mean": {k: float(np.mean([b[k] for b in per_book])) for k in per_book[0]},
        }
    result["invariance"] = {
        name: {"n_pairs": len(rows), **{k: _mean(rows, k) for k in (rows[0] if rows else {})}}
        for name, rows in inv.items()
    }
    return result


def resample_to16(wav: torch.Tensor, sr: int) -> torch.Tensor:
    from speechtok.data.audio import resample

    return wav if sr == 16000 else resample(wav, sr, 16000)


def resample_from16(wav: torch.Tensor, sr: int) -> torch.Tensor:
    from speechtok.data.audio import resample

    return wav if sr == 16000 else resample(wav, 16000, sr)


# --- report --------------------------------------------------------------------------------------
COLUMNS = [  # (header, getter, format)
    ("usage", lambda r: float(np.mean(r["usage"])), "{:.0%}"),
    ("ppl", lambda r: float(np.mean(r["perplexity"])), "{:.1f}"),
    ("phone purity (cb1)", lambda r: r["phones"]["per_codebook"][0]["phone_purity"], "{:.3f}"),
    ("PNMI (cb1)", lambda r: r["phones"]["per_codebook"][0]["pnmi"], "{:.3f}"),
    ("PNMI (mean cb)", lambda r: r["phones"]["mean"]["pnmi"], "{:.3f}"),
    ("NED noise (cb1)", lambda r: r["invariance"]["noise"]["per_codebook"][0], "{:.3f}"),
    ("NED speed (cb1)", lambda r: r["invariance"]["speed"]["per_codebook"][0], "{:.3f}"),
    ("NED speaker (cb1)", lambda r: r["invariance"]["speaker"]["per_codebook"][0], "{:.3f}"),
    ("NED noise (tuple)", lambda r: r["invariance"]["noise"]["tuple"], "{:.3f}"),
    ("NED speed (tuple)", lambda r: r["invariance"]["speed"]["tuple"], "{:.3f}"),
    ("NED speaker (tuple)", lambda r: r["invariance"]["speaker"]["tuple"], "{:.3f}"),
]


def _cell(run: dict, get, fmt: str) -> str:
    try:
        v = get(run)
    except (KeyError, IndexError, TypeError):
        return "–"
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def markdown_table(runs: Sequence[dict]) -> str:
    head = ["codec", "K", "kbps", *(h for h, _, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for r in runs:
        cells = [r["codec"], str(r["n_codebooks"]), f"{r['bitrate'] / 1000:.2f}"]
        lines.append("| " + " | ".join(cells + [_cell(r, g, f) for _, g, f in COLUMNS]) + " |")
    return "\n".join(lines) + "\n"


def _float_list(spec: str) -> list[float]:
    try:
        return [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{spec}'") from None


def add_token_metric_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("token metrics (--token-metrics)")
    g.add_argument(
        "--token-metrics",
        action="store_true",
        help="score the codes instead of the reconstructions: usage, perplexity, phone purity/PNMI, "
        "invariance to noise, speed and speaker (writes token_metrics.json/.md)",
    )
    g.add_argument("--noise", default=DEFAULT_NOISE, help="noise manifest CSV (or metadata.tsv) for the noise test")
    g.add_argument("--snr", type=float, default=10.0, help="SNR (dB) of the noise test")
    g.add_argument("--speeds", type=_float_list, default=[0.9, 1.1], help="speed factors of the speed test")
    g.add_argument(
        "--voices", default=",".join(DEFAULT_VOICES), help="two synthetic voices for the speaker test ('' to skip)"
    )
    g.add_argument("--align-steps", type=int, default=1500, help="phone-aligner training steps")
    g.add_argument("--cache", default=DEFAULT_CACHE, help="folder for the cached phone alignment and voices")
    g.add_argument("--seed", type=int, default=0, help="seed of the noise choice and the aligner")


def _settings(codec: Codec, requested: Sequence[int] | None) -> list[int]:
    """The codebook counts of `requested` this codec takes (all when none is asked for); one it
    cannot take is skipped with a note (a fixed-K codec taking none runs at its K), so one
    `--n-codebooks 1,8` serves codecs of any K."""
    out = []
    for n in requested or [None]:
        try:
            out.append(codec.check_n_codebooks(n))
        except CodecError as exc:
            print(f"speechtok eval: note: skipping K={n} for {codec.name}: {exc}", file=sys.stderr)
    if not out:  # a fixed-K codec (dmel): its own K
        out = [codec.check_n_codebooks(None)]
        print(f"speechtok eval: note: {codec.name} at its fixed K={out[0]}", file=sys.stderr)
    return list(dict.fromkeys(out))


def run_token_metrics(args: argparse.Namespace, items: list[Utterance]) -> dict[str, Path]:
    """`speechtok eval --token-metrics`: every --codec x --n-codebooks setting; JSON and Markdown."""
    from speechtok.data.noise import read_noise_list
    from speechtok.eval.harness import EvalError, _json_safe

    voices = [v.strip() for v in args.voices.split(",") if v.strip()]
    if voices and len(voices) != 2:
        raise EvalError(f"--voices needs two voices (or ''), got {len(voices)}")
    if any(s <= 0 for s in args.speeds):
        raise EvalError(f"--speeds must be positive, got {args.speeds}")
    noise = [str(u.path) for u in read_noise_list(args.noise)] if args.noise else []
    data = Path(args.data)
    corpus = read_manifest(data) if data.is_file() else items
    phones = phone_alignments(corpus, args.cache, args.align_steps, args.seed, progress=True)
    synth = synth_pairs([u.text for u in items], voices, args.cache) if voices else {}
    runs = []
    for name in args.codec:
        codec = load_codec(name, args.device)
        for n in _settings(codec, args.n_codebooks):
            runs.append(token_metrics(codec, items, phones, noise, synth, n, args.snr, args.speeds, args.seed, True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "data": str(args.data),
        "split": args.split,
        "limit": args.limit,
        "utterances": [u.ID for u in items],
        "noise": str(args.noise),
        "snr_db": args.snr,
        "speeds": args.speeds,
        "voices": voices,
        "seed": args.seed,
        "phone_labels": f"speechtok.tts.align over {ALIGN_CODEC} codes, {args.align_steps} steps",
        "edit_distance": "Levenshtein / max(len a, len b)",
    }
    paths = {"json": out / "token_metrics.json", "md": out / "token_metrics.md"}
    paths["json"].write_text(json.dumps(_json_safe({**meta, "runs": runs}), indent=2, ensure_ascii=False) + "\n")
    paths["md"].write_text(markdown_table(runs))
    return paths


__all__ = [
    "add_real_noise",
    "contingency",
    "dedup",
    "frame_labels",
    "invariance",
    "markdown_table",
    "normalized_edit_distance",
    "phone_alignments",
    "phones_from_durations",
    "purity_pnmi",
    "token_metrics",
    "usage_perplexity",
]
