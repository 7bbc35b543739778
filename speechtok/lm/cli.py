"""`speechtok tts` and `speechtok enhance`: argument set-up and runners for the main CLI.

The main CLI registers the subcommands and calls `add_*_arguments(parser)`, then `run_*(args)`,
which return an exit code: 0 on success, 1 when some inputs of a batch failed (listed on
stderr and in OUT/failed.tsv), 2 for a bad model, codec or input that stops the whole run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import soundfile as sf

from speechtok.cli import _error_reason, _report, find_audio
from speechtok.codecs import CodecError
from speechtok.data.audio import AudioError, file_problem, save_audio, save_audio_stream
from speechtok.data.manifest import read_manifest
from speechtok.enhance import Enhancer, load_enhancer
from speechtok.errors import cannot
from speechtok.lm.checkpoint import CheckpointError
from speechtok.lm.runner import LMInputError
from speechtok.tokens import TokenFileError
from speechtok.tts import load_tts
from speechtok.tts.text import TextError

ERRORS = (TextError, LMInputError, CheckpointError, CodecError, AudioError, TokenFileError)


def _common(p: argparse.ArgumentParser, task: str) -> None:
    p.add_argument("--model", help=f"bundled {task} model name or model folder (default: the one for --codec)")
    p.add_argument("--codec", help="codec to use (picks the bundled model trained on it)")
    p.add_argument("--seed", type=int, help="random seed: same seed, same output")
    p.add_argument("--device", default="cpu")
    p.add_argument("--temperature", type=float, help="sampling temperature (0: greedy); default from the model")
    p.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, help="nucleus sampling threshold")
    p.add_argument(
        "--mean-levels",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decode the model's expected level per channel rather than the generated codes "
        "(dMel codecs; default from the model)",
    )


def _fail(exc: Exception) -> int:
    print(f"speechtok: error: {exc}", file=sys.stderr)
    return 2


def _sampling(args) -> dict:
    return {
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "end_threshold": getattr(args, "end_threshold", None),
    }


# --- tts ---------------------------------------------------------------------------------
def add_tts_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "text",
        nargs="?",
        help="text to speak (or use --text-file); text too long for the model is "
        "spoken in pieces cut at sentences, clauses, then words",
    )
    p.add_argument("-o", "--output", type=Path, help="output .wav (one text)")
    p.add_argument(
        "--text-file",
        type=Path,
        help="batch mode: one sentence a line (written as 0001.wav, ...), or a manifest .csv "
        "(text column; written as <ID>.wav; a prompt_path column gives each row its voice)",
    )
    p.add_argument("--out-dir", type=Path, help="batch mode output folder")
    p.add_argument("--prompt", help="reference clip (~3 s) of the voice to use: audio file or token file (.npz)")
    p.add_argument("--prompt-text", help="transcript of --prompt: continue the clip instead (VALL-E style)")
    p.add_argument("--batch-size", type=int, default=8, help="sentences generated together in batch mode")
    p.add_argument("--max-seconds", type=float, help="longest output per sentence (per piece of a long text)")
    p.add_argument(
        "--end-threshold",
        type=float,
        help="stop when the model's end probability reaches this (default from the model; "
        "unset: the stop is sampled like any token)",
    )
    _common(p, "tts")


def run_tts(args: argparse.Namespace) -> int:
    if (args.text is None) == (args.text_file is None):
        return _fail("give either a text or --text-file")
    if args.text is not None and args.output is None:
        return _fail("say where to write the audio: -o out.wav")
    if args.text_file is not None and args.out_dir is None:
        return _fail("batch mode needs --out-dir")
    try:
        synth = load_tts(args.model, codec=args.codec, device=args.device)
        kw = dict(
            prompt_wav=args.prompt,
            prompt_text=args.prompt_text,
            seed=args.seed,
            max_seconds=args.max_seconds,
            mean_levels=args.mean_levels,
            **_sampling(args),
        )
        if args.text is not None:
            t0 = time.perf_counter()
            wav = synth.tts(args.text, **kw)
            save_audio(args.output, wav, synth.sample_rate)
            _speed(wav.shape[-1] / synth.sample_rate, time.perf_counter() - t0, args.output)
            return 0
        jobs = _tts_jobs(args.text_file, args.prompt)
    except ERRORS + (ValueError, FileNotFoundError) as exc:  # bad manifest too
        return _fail(exc)
    return _tts_batch(synth, jobs, args, kw)


def _tts_jobs(text_file: Path, prompt: str | None) -> list[tuple[str, str, str, str | None]]:
    """(output name, name in error reports, text, voice prompt) per sentence of a text file or manifest."""
    if text_file.suffix.lower() == ".csv":
        rows = read_manifest(text_file)
        jobs = [(u.ID, u.ID, u.text.strip(), u.extra.get("prompt_path") or prompt) for u in rows]
        missing = [u.ID for u in rows if not u.text.strip()]
        if missing:
            problem = f"no text for {len(missing)} rows (e.g. {', '.join(missing[:3])})"
            raise TextError(cannot("read sentences from", text_file, problem))
    else:
        lines = [line.strip() for line in text_file.read_text(encoding="utf-8").splitlines()]
        width = max(4, len(str(len(lines))))
        jobs = [(f"{i:0{width}d}", f"line {i}", line, prompt) for i, line in enumerate(lines, 1) if line]
    if not jobs:
        problem = "no sentences (one a line, or a manifest with a text column)"
        raise TextError(cannot("read sentences from", text_file, problem))
    return jobs


def _tts_batch(synth, jobs, args, kw) -> int:
    """Batches of up to --batch-size sentences that share a voice prompt; bad lines are named, not fatal."""
    failed, seconds, t0 = [], 0.0, time.perf_counter()
    batches = []
    for name, label, text, prompt in jobs:
        if batches and batches[-1][0] == prompt and len(batches[-1][1]) < max(args.batch_size, 1):
            batches[-1][1].append((name, label, text))
        else:
            batches.append((prompt, [(name, label, text)]))
    for prompt, chunk in batches:
        opts = {**kw, "prompt_wav": prompt}
        try:
            wavs = synth.tts_batch([t for _, _, t in chunk], **opts)
        except (TextError, LMInputError, AudioError):  # one bad line or prompt: go line by line to name it
            wavs = []
            for _, label, text in chunk:
                try:
                    wavs.append(synth.tts(text, **opts))
                except (TextError, LMInputError, AudioError) as exc:
                    wavs.append(None)
                    failed.append((label, str(exc)))
        except ERRORS as exc:
            return _fail(exc)
        for (name, _, _), wav in zip(chunk, wavs):
            if wav is not None:
                save_audio(args.out_dir / f"{name}.wav", wav, synth.sample_rate)
                seconds += wav.shape[-1] / synth.sample_rate
    _speed(seconds, time.perf_counter() - t0, args.out_dir)
    return _report(failed, args.out_dir, "synthesize", item="input")


# --- enhance -----------------------------------------------------------------------------
def add_enhance_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, help="noisy audio file, token file (.npz) or folder (searched recursively)")
    p.add_argument("output", type=Path, help="output .wav for one file, or a folder mirroring the input tree")
    _common(p, "enhance")
    p.add_argument(
        "--render",
        choices=Enhancer.RENDERS,
        help="codec: decode the clean tokens; mixture: apply them as per-band gains to the noisy "
        "input (dMel codecs; token-file inputs are decoded); default from the model",
    )
    p.add_argument("--level-passes", type=int, help="mean levels: average this many passes (default from the model)")
    p.add_argument(
        "--level-blank",
        type=float,
        help="mean levels: share of frames each pass blanks at random, in [0, 1) (default from the model)",
    )
    p.add_argument(
        "--input-gains-db",
        type=float,
        nargs="+",
        metavar="DB",
        help="enhance the input also at these gains and average the outputs, scaled back, "
        "e.g. 0 for the input as it is (default from the model)",
    )
    p.add_argument(
        "--gain-floor",
        type=float,
        help="mixture render: the lowest band gain, in (0, 1]; higher keeps more noise and more words "
        "(default from the model, else 0.05; a gain refiner never goes below its own 0.05)",
    )
    p.add_argument(
        "--no-refiner",
        dest="refine",
        action="store_false",
        default=None,
        help="average the filtered rows instead of the model's gain refiner (if it has one)",
    )


def run_enhance(args: argparse.Namespace) -> int:
    inp, out = args.input, args.output
    try:
        enhancer = load_enhancer(args.model, codec=args.codec, device=args.device)
        enhancer.set_level_dropout(args.level_passes, args.level_blank)
        enhancer.set_input_gains(args.input_gains_db)
        enhancer.set_gain_floor(args.gain_floor)
        kw = dict(
            seed=args.seed, mean_levels=args.mean_levels, render=args.render, refine=args.refine, **_sampling(args)
        )
        if inp.is_file():
            target = out if out.suffix.lower() == ".wav" else out / f"{inp.stem}.wav"
            t0 = time.perf_counter()  # written piece by piece: a long file is never whole in memory
            save_audio_stream(target, enhancer.enhance_stream(inp, **kw), enhancer.sample_rate)
            _speed(sf.info(str(target)).frames / enhancer.sample_rate, time.perf_counter() - t0, target)
            return 0
        if not inp.is_dir():
            return _fail(cannot("enhance", inp, "no such file or folder"))
        files = find_audio(inp, exclude=out if out.resolve().is_relative_to(inp.resolve()) else None)
        files += sorted(p for p in inp.rglob("*.npz") if not p.name.startswith("."))
        if not files:
            return _fail(cannot("enhance", inp, "no audio or token files found"))
    except ERRORS as exc:
        return _fail(exc)
    failed, seconds, t0 = [], 0.0, time.perf_counter()
    for f in files:
        problem = file_problem(f)  # a broken link or unreadable file, token files too
        if problem:
            failed.append((str(f), problem))
            continue
        target = out / f.relative_to(inp).with_suffix(".wav")
        try:
            save_audio_stream(target, enhancer.enhance_stream(f, **kw), enhancer.sample_rate)
        except (AudioError, TokenFileError, LMInputError, OSError) as exc:
            failed.append((str(f), _error_reason(exc, f)))
            continue
        seconds += sf.info(str(target)).frames / enhancer.sample_rate
    _speed(seconds, time.perf_counter() - t0, out)
    return _report(failed, out, "enhance")


# --- shared ------------------------------------------------------------------------------
def _speed(audio_s: float, wall_s: float, where) -> None:
    rtf = f", {audio_s / wall_s:.2f}x real time" if wall_s > 0 and audio_s > 0 else ""
    print(f"speechtok: wrote {audio_s:.1f} s of audio to {where} in {wall_s:.1f} s{rtf}", file=sys.stderr)


__all__ = ["add_enhance_arguments", "add_tts_arguments", "run_enhance", "run_tts"]
