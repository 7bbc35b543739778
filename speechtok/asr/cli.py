"""`speechtok transcribe FILE_OR_DIR [--out FILE.tsv]`: text of each audio file through a codec's tokens."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechtok.asr.ctc import ASRError, load_transcriber
from speechtok.cli import CLIError, _error_reason, _report, find_audio
from speechtok.codecs import CodecError
from speechtok.data.audio import AudioError, load_audio
from speechtok.errors import cannot


def add_transcribe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, help="audio file, or folder of them (recursive)")
    p.add_argument("--out", type=Path, help="write the <file stem><TAB><text> lines to this TSV instead of stdout")
    p.add_argument("--model", default="asr-semantic-16k-25", help="transcriber: bundled name or folder")
    p.add_argument("--device", default="cpu")


def run_transcribe(args: argparse.Namespace) -> int:
    inp = args.input
    if inp.is_dir():
        files = find_audio(inp)
        if not files:
            raise CLIError(cannot("transcribe", inp, "no audio files found"))
    elif inp.is_file() or inp.is_symlink():
        files = [inp]
    else:
        raise CLIError(cannot("transcribe", inp, "no such file or folder"))
    asr = load_transcriber(args.model, device=args.device)
    lines, failed = [], []
    for path in files:
        try:
            text = asr.transcribe(load_audio(path, asr.codec.sample_rate).to(args.device))
        except (AudioError, CodecError, ASRError) as exc:
            failed.append((str(path), _error_reason(exc, path)))
            continue
        lines.append(f"{path.stem}\t{text}")
        if args.out is None:
            print(lines[-1], flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(line + "\n" for line in lines))
        print(f"speechtok: {len(lines)} transcript(s) in {args.out}", file=sys.stderr)
    return _report(failed, args.out.parent if args.out else None, "transcribe")
