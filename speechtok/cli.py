"""The `speechtok` command line: batch encode audio to token files, decode them, inspect them.

Each subcommand is one function registered with `@command`: it adds its arguments to its
parser and returns the function that runs it (args -> exit code). Only the chosen
subcommand's function runs, so subcommands backed by optional modules (eval) import them
lazily and the rest of the CLI works without them.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
import torch
from tqdm import tqdm

from speechtok import __version__
from speechtok.codecs import EXTERNAL, PRETRAINED_DIR, CodecError, available_codecs, load_codec, read_config
from speechtok.data.audio import AudioError, load_audio, load_audio_with_sr, resample, save_audio_stream
from speechtok.data.manifest import Utterance, write_manifest
from speechtok.errors import cannot, problem_of
from speechtok.tokens import (
    TokenFile,
    TokenFileError,
    codec_hash,
    iter_tokens,
    load_shard,
    load_tokens,
    read_shard,
    save_shard,
    save_tokens,
)

AUDIO_EXTENSIONS = frozenset(
    {"." + f.lower() for f in sf.available_formats()} - {".raw", ".wavex"} | {".aif", ".oga", ".opus", ".sph"}
)
FILES_PER_SHARD = 1000

Runner = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Runner]]] = {}


class CLIError(Exception):
    """A user-facing error: printed as `speechtok: error: ...`, exits with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def command(name: str, help: str):
    def register(setup: Callable[[argparse.ArgumentParser], Runner]):
        COMMANDS[name] = (help, setup)
        return setup

    return register


# --- distributed (torchrun) -------------------------------------------------------------
class Dist:
    """RANK/WORLD_SIZE from torchrun; a gloo group (when available) to gather failure reports."""

    def __init__(self) -> None:
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.group = False
        if self.world > 1 and torch.distributed.is_available() and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("gloo")
            self.group = True

    def gather(self, obj) -> list:
        """Every rank's `obj`, on every rank (just ours without a process group)."""
        if not self.group:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.group:
            torch.distributed.destroy_process_group()


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.lstrip("-").isdigit() or int(text) < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got '{text}'")
        return int(text)

    return parse


def _device(name: str) -> str:
    if name.startswith("cuda") and ":" not in name and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return name


def _error_reason(exc: Exception, path: Path) -> str:
    """The reason column of a failure report: the message's problem, without 'cannot ... path: '."""
    if isinstance(exc, OSError) and exc.strerror:  # e.g. "permission denied", not "[Errno 13] ..."
        return exc.strerror[:1].lower() + exc.strerror[1:]
    known = isinstance(exc, (AudioError, CodecError, TokenFileError))  # these already say what went wrong
    return problem_of(str(exc) if known else f"{type(exc).__name__}: {exc}", path)


def _report(failed: list[tuple[str, str]], report_dir: Path | None, what: str, item: str = "file") -> int:
    """Print the failures, mirror them to report_dir/failed.tsv (a stale one is removed); exit code.
    Files are listed sorted by path (ranks finish in any order), other items (`item="input"`:
    lines of a text file) in the order given. The one failure report of every batch command."""
    tsv = report_dir / "failed.tsv" if report_dir else None
    if not failed:
        if tsv and tsv.exists():
            tsv.unlink()
        return 0
    failed = sorted(failed) if item == "file" else list(failed)
    print(f"speechtok: {len(failed)} {item}(s) failed to {what}:", file=sys.stderr)
    for path, reason in failed:
        print(f"  {path}\t{reason}", file=sys.stderr)
    if tsv:
        tsv.parent.mkdir(parents=True, exist_ok=True)
        column = "path" if item == "file" else item
        tsv.write_text(f"{column}\treason\n" + "".join(f"{p}\t{r}\n" for p, r in failed))
        print(f"speechtok: failures listed in {tsv}", file=sys.stderr)
    return 1


# --- encode -----------------------------------------------------------------------------
@dataclass
class Job:
    src: Path
    uid: str  # relative path without extension: the output name and manifest ID
    out: Path | None = None


def find_audio(root: Path, exclude: Path | None = None) -> list[Path]:
    """Audio files under root (recursive, by extension), skipping hidden files and `exclude`.
    Broken symbolic links are kept: loading them reports them as failed, not silently skipped."""
    files = []
    for p in root.rglob("*"):
        rel = p.relative_to(root).parts
        if p.suffix.lower() not in AUDIO_EXTENSIONS or any(s.startswith(".") for s in rel):
            continue
        if exclude is not None and p.is_relative_to(exclude):
            continue
        if p.is_file() or (p.is_symlink() and not p.exists()):
            files.append(p)
    return sorted(files)


def plan_jobs(inp: Path, out: Path, sharded: bool) -> tuple[list[Job], Path | None]:
    """Jobs sorted by ID and the folder for failed.tsv/shards (None for a file -> file.npz run)."""
    if inp.is_file():
        if out.suffix == ".npz" and not sharded:
            return [Job(inp, inp.stem, out)], None
        jobs = [Job(inp, inp.stem)]
    elif inp.is_dir():
        inside = out.resolve().is_relative_to(inp.resolve())  # output folder inside the input tree
        files = find_audio(inp, exclude=inp / out.resolve().relative_to(inp.resolve()) if inside else None)
        if not files:
            problem = f"no audio files found (extensions: {' '.join(sorted(AUDIO_EXTENSIONS))})"
            raise CLIError(cannot("encode", inp, problem))
        rels = [f.relative_to(inp) for f in files]
        stems = [r.with_suffix("").as_posix() for r in rels]
        clash = {s for s, n in Counter(stems).items() if n > 1}  # a.wav and a.flac -> keep the extension
        jobs = [Job(f, r.as_posix() if s in clash else s) for f, r, s in zip(files, rels, stems)]
    else:
        raise CLIError(cannot("encode", inp, "no such file or folder"))
    for j in jobs:
        j.out = out / f"{j.uid}.npz"
    return sorted(jobs, key=lambda j: j.uid), out


class _AudioBatches(torch.utils.data.Dataset):
    """Item i = batch i of files, read and resampled (in DataLoader workers); errors as strings."""

    def __init__(self, batches: list[list[Job]], sample_rate: int) -> None:
        self.batches, self.sample_rate = batches, sample_rate

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> list[tuple[Job, torch.Tensor | None, int, str | None]]:
        out = []
        for job in self.batches[i]:
            try:
                wav, sr = load_audio_with_sr(job.src)
                out.append((job, resample(wav, sr, self.sample_rate)[0], sr, None))
            except Exception as exc:  # reported per file; the run goes on
                out.append((job, None, 0, _error_reason(exc, job.src)))
        return out


def _identity(x):
    return x


def _length_batches(jobs: list[Job], sample_rate: int, batch_size: int, max_samples: int) -> list[list[Job]]:
    """Group files of similar length (from headers) so padding stays small."""
    if batch_size <= 1:
        return [[j] for j in jobs]
    lengths = {}
    for j in jobs:
        try:
            info = sf.info(str(j.src))
            lengths[j.uid] = math.ceil(info.frames * sample_rate / info.samplerate)
        except Exception:
            lengths[j.uid] = -1  # unreadable: encoded alone, where loading reports why
    batches: list[list[Job]] = []
    for j in sorted(jobs, key=lambda j: (lengths[j.uid], j.uid)):
        last = batches[-1] if batches else None
        if (
            last
            and lengths[j.uid] > 0
            and len(last) < batch_size
            and lengths[last[0].uid] > 0
            and (len(last) + 1) * lengths[j.uid] <= max_samples
        ):
            last.append(j)
        else:
            batches.append([j])
    return batches


def encode_jobs(
    codec, jobs: list[Job], args, progress: tqdm | None = None
) -> Iterator[tuple[Job, TokenFile | None, str | None]]:
    """(job, token file, None) or (job, None, reason) per job, in length-batched order; codes of
    the first `args.n_codebooks` codebooks (None: all)."""
    k = args.n_codebooks
    batches = _length_batches(jobs, codec.sample_rate, args.batch_size, int(args.max_batch_seconds * codec.sample_rate))
    loader = torch.utils.data.DataLoader(
        _AudioBatches(batches, codec.sample_rate),
        batch_size=None,
        num_workers=min(args.workers, len(batches)),
        collate_fn=_identity,
    )
    for batch in loader:
        for job, _, _, err in batch:
            if err is not None:
                yield job, None, err
        ok = [(job, wav, sr) for job, wav, sr, err in batch if err is None]
        if len(ok) > 1:
            lengths = torch.tensor([w.shape[-1] for _, w, _ in ok])
            padded = torch.nn.utils.rnn.pad_sequence([w for _, w, _ in ok], batch_first=True).unsqueeze(1)
            try:
                codes, frames = codec.encode(padded.to(codec.device), lengths.to(codec.device), n_codebooks=k)
                encoded = [codes[i, :, : frames[i]] for i in range(len(ok))]
            except Exception:  # isolate the bad item: fall back to one at a time
                encoded = [None] * len(ok)
        else:
            encoded = [None] * len(ok)
        for (job, wav, sr), codes in zip(ok, encoded):
            try:
                if codes is None:
                    codes = codec.encode(wav.view(1, 1, -1).to(codec.device), n_codebooks=k)[0]
                yield job, TokenFile.from_codec(codec, codes, wav.shape[-1], sr), None
            except Exception as exc:
                yield job, None, _error_reason(exc, job.src)
        if progress is not None:
            progress.update(len(batch))


def _done_file(path: Path, want_hash: str, k: int) -> bool:
    try:
        tf = load_tokens(path)
    except TokenFileError:
        return False
    return tf.codec_hash == want_hash and tf.n_codebooks == k


def _done_shard(path: Path, want_hash: str, k: int, jobs: list[Job]) -> list[tuple[str, str]] | None:
    """The failures recorded in a complete, matching shard; None when it must be (re)done."""
    try:
        items, bad = read_shard(path)
    except TokenFileError:
        return None
    src = {j.uid: str(j.src) for j in jobs}
    if set(items) | set(bad) != set(src) or any(
        t.codec_hash != want_hash or t.n_codebooks != k for t in items.values()
    ):
        return None
    return [(src[uid], reason) for uid, reason in bad.items()]


@command("encode", "encode audio files or folders to token files (.npz)")
def encode_command(p: argparse.ArgumentParser) -> Runner:
    p.add_argument("input", type=Path, help="audio file or folder (searched recursively)")
    p.add_argument("output", type=Path, help="output folder mirroring the input tree (or a .npz file for one input)")
    p.add_argument("--codec", required=True, help="bundled codec name (see `speechtok codecs`) or codec folder")
    p.add_argument(
        "--n-codebooks",
        type=_at_least(1),
        help="encode the first K codebooks only (a lower bitrate; codecs with a variable bitrate)",
    )
    p.add_argument("--workers", type=_at_least(0), default=2, help="DataLoader processes reading/resampling audio")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=_at_least(1), default=8, help="files of similar length encoded together")
    p.add_argument("--max-batch-seconds", type=float, default=600.0, help="cap on padded audio per batch")
    p.add_argument(
        "--layout",
        choices=["files", "sharded"],
        default="files",
        help="one .npz per input, or a few shard .npz files plus manifest.csv",
    )
    p.add_argument(
        "--shards",
        type=_at_least(1),
        help=f"number of shards (implies --layout sharded; default one per {FILES_PER_SHARD} files)",
    )
    return run_encode


def _shards(jobs: list[Job], out_dir: Path, n: int | None) -> list[tuple[Path, list[Job]]]:
    """Contiguous runs of the sorted jobs, one per shard file."""
    n = n or max(1, math.ceil(len(jobs) / FILES_PER_SHARD))
    return [(out_dir / f"shard-{i:05d}.npz", jobs[i * len(jobs) // n : (i + 1) * len(jobs) // n]) for i in range(n)]


def _plan_rank(jobs, shards, want: str, k: int, rank: int, world: int):
    """This rank's share: work [(shard or None, jobs)], failures already recorded, files in its share."""
    if shards is None:
        mine = jobs[rank::world]
        return [(None, [j for j in mine if not _done_file(j.out, want, k)])], [], len(mine)
    work, failed = [], []
    for path, js in shards[rank::world]:
        done = _done_shard(path, want, k, js) if js else []
        if done is None:
            work.append((path, js))
        failed += done or []
    return work, failed, sum(len(js) for _, js in shards[rank::world])


def run_encode(args: argparse.Namespace) -> int:
    sharded = args.layout == "sharded" or args.shards is not None
    jobs, out_dir = plan_jobs(args.input, args.output, sharded)
    codec = load_codec(args.codec, device=_device(args.device))
    k = codec.check_n_codebooks(args.n_codebooks)
    dist = Dist()
    try:
        t0 = time.perf_counter()
        shards = _shards(jobs, out_dir, args.shards) if sharded else None
        work, failed, n_mine = _plan_rank(jobs, shards, codec_hash(codec), k, dist.rank, dist.world)
        n_todo = sum(len(js) for _, js in work)
        seconds, n_ok = 0.0, 0
        with tqdm(total=n_todo, unit="file", desc=f"encode {codec.name}", disable=True if dist.rank else None) as bar:
            for shard, group in work:
                items, bad = {}, {}
                for job, tf, err in encode_jobs(codec, group, args, bar):
                    if err is not None:
                        failed.append((str(job.src), err))
                        bad[job.uid] = err
                        continue
                    seconds, n_ok = seconds + tf.duration, n_ok + 1
                    if shard is None:
                        save_tokens(job.out, tf)
                    else:
                        items[job.uid] = tf
                if shard is not None and items:
                    save_shard(shard, items, bad)
                elif shard is not None and shard.exists():
                    shard.unlink()
        if dist.world > 1:
            print(
                f"speechtok: rank {dist.rank}/{dist.world}: encoded {n_ok} file(s), {len(failed)} failed",
                file=sys.stderr,
            )
        # all_gather doubles as the barrier: after it every rank's files are written
        stats = dist.gather((failed, seconds, n_ok, n_mine - n_todo, time.perf_counter() - t0))
        failed = [f for s in stats for f in s[0]]
        if dist.rank:
            return 1 if failed else 0
        if sharded:
            _write_manifest(out_dir, shards)
        seconds, n_ok, n_skip = (sum(s[i] for s in stats) for i in (1, 2, 3))
        wall = max(s[4] for s in stats)
        speed = f", {seconds / wall:.0f}x real time" if wall > 0 and seconds else ""
        print(
            f"speechtok: encoded {n_ok} file(s) ({seconds / 60:.1f} min of audio) in {wall:.1f} s{speed}; "
            f"skipped {n_skip} done before; {len(failed)} failed",
            file=sys.stderr,
        )
        return _report(failed, out_dir, "encode")
    finally:
        dist.close()


def _write_manifest(out_dir: Path, shards: list[tuple[Path, list[Job]]]) -> None:
    """manifest.csv (ID, path, duration, shard, n_frames) over all shards; drops stale shard files."""
    utts, planned = [], {path.name for path, _ in shards}
    for path, js in shards:
        if not path.exists():
            continue
        src = {j.uid: j.src for j in js}
        for uid, tf in load_shard(path).items():
            utts.append(
                Utterance(
                    ID=uid,
                    path=str(src[uid].resolve()),
                    duration=tf.duration,
                    split="",
                    extra={"shard": path.name, "n_frames": tf.n_frames},
                )
            )
    for old in out_dir.glob("shard-*.npz"):
        if old.name not in planned:
            old.unlink()
    write_manifest(out_dir / "manifest.csv", utts)


# --- decode -----------------------------------------------------------------------------
@command("decode", "decode token files (or a folder of them) back to wav")
def decode_command(p: argparse.ArgumentParser) -> Runner:
    p.add_argument("input", type=Path, help="token file (.npz), shard, or folder of them")
    p.add_argument("output", type=Path, help="output folder (or a .wav file for one single-utterance input)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--codec", help="codec name or folder to load instead of the one named in the file (its hash must still match)"
    )
    p.add_argument(
        "--n-codebooks",
        type=_at_least(1),
        help="decode the first K codebooks of each file only (codecs with a variable bitrate)",
    )
    p.add_argument(
        "--prompt",
        type=Path,
        help="voice prompt, about 3 s of the voice to speak with (codecs that decode with one: semantic)",
    )
    return run_decode


def _codec_for(tf: TokenFile, path: Path, cache: dict, override: str | None, device: str):
    name = override or tf.codec
    if name not in cache:
        cache[name] = load_codec(name, device=device)
    codec = cache[name]
    if codec_hash(codec) != tf.codec_hash:
        family = tf.codec_family
        differs = "config or weights" if family == codec.family else "family"
        raise TokenFileError(
            f"cannot decode {path}: token file made by another codec: '{tf.codec}' ({family}, hash {tf.codec_hash}) "
            f"and the loaded codec '{name}' ({codec.family}, hash {codec_hash(codec)}) differ in {differs}; "
            "decode with the codec that encoded it (--codec)"
        )
    return codec


def _codes_to_decode(tf: TokenFile, path: Path, codec, k: int | None) -> torch.Tensor:
    """The file's codes [1, K, F], or their first `k` codebooks (--n-codebooks)."""
    codes = tf.codes
    if k is not None:
        if k > tf.n_codebooks:
            raise TokenFileError(
                cannot("decode", path, f"it holds {tf.n_codebooks} codebooks, fewer than --n-codebooks {k}")
            )
        codes = codes[: codec.check_n_codebooks(k)]
    return torch.from_numpy(codes.astype("int64"))[None]


def _wav_name(path: Path) -> Path:
    """Append .wav (never with_suffix: IDs may hold dots, or a kept extension after a name clash)."""
    return path if path.suffix.lower() == ".wav" else path.with_name(path.name + ".wav")


def _decode_one(tf: TokenFile, path: Path, out: Path, cache: dict, args) -> None:
    """Decode one utterance to `out`; codec errors name the token file."""
    try:
        codec = _codec_for(tf, path, cache, args.codec, _device(args.device))
        tmp = out.with_name(f".{out.stem}.part{out.suffix}")
        prompt, key = None, ("prompt", codec.sample_rate)
        if args.prompt is not None:  # read once per sample rate, for every file
            if key not in cache:
                cache[key] = load_audio(args.prompt, codec.sample_rate)[None]
            prompt = cache[key]
        codes = _codes_to_decode(tf, path, codec, args.n_codebooks)
        # chunk by chunk into the file (`Codec.decode_stream`): memory does not grow with the length
        pieces = (wav[0] for wav in codec.decode_stream(codes, prompt))
        save_audio_stream(tmp, pieces, codec.sample_rate, n_samples=tf.n_samples)
    except CodecError as exc:
        raise CodecError(cannot("decode", path, str(exc))) from exc
    tmp.replace(out)


def run_decode(args: argparse.Namespace) -> int:
    inp, out = args.input, args.output
    cache: dict = {}
    if inp.is_file():
        entries = list(iter_tokens(inp))
        if entries[0][0] is None:  # single utterance: errors propagate as `speechtok: error`
            target = out if out.suffix.lower() in AUDIO_EXTENSIONS else out / f"{inp.stem}.wav"
            _decode_one(entries[0][1], inp, target, cache, args)
            return 0
        files, root = [inp], inp.parent
    elif inp.is_dir():
        files, root = sorted(p for p in inp.rglob("*.npz") if not p.name.startswith(".")), inp
        if not files:
            raise CLIError(cannot("decode", inp, "no token files (.npz) found"))
    else:
        raise CLIError(cannot("decode", inp, "no such file or folder"))
    failed = []
    for path in tqdm(files, unit="file", desc="decode", disable=None):
        rel = path.relative_to(root).with_suffix("")
        try:
            for uid, tf in iter_tokens(path):
                target = _wav_name(out / (rel.parent / uid if uid is not None else rel))
                _decode_one(tf, path, target, cache, args)
        except (TokenFileError, AudioError, CodecError) as exc:
            failed.append((str(path), _error_reason(exc, path)))
    return _report(failed, out, "decode")


# --- compress / decompress -------------------------------------------------------------
def _coding_command(p: argparse.ArgumentParser, what: str, src: str, dst: str) -> None:
    p.add_argument("input", type=Path, help=f"{src} file or folder of them")
    p.add_argument("output", type=Path, help=f"output folder (or a {dst} file for one input)")
    p.add_argument("--prior", help=f"prior name or folder (default: the bundled prior-<codec> {what})")


@command("compress", "entropy-code token files (.npz -> .stz, lossless) with a codec's prior")
def compress_command(p: argparse.ArgumentParser) -> Runner:
    _coding_command(p, "of the file's codec", ".npz", ".stz")
    return run_compress


@command("decompress", "decode .stz files back to the token files they were made from")
def decompress_command(p: argparse.ArgumentParser) -> Runner:
    _coding_command(p, "named in the file", ".stz", ".npz")
    return run_decompress


def _coding_jobs(inp: Path, out: Path, src: str, dst: str) -> list[tuple[Path, Path]]:
    if inp.is_file():
        return [(inp, out if out.suffix == dst else out / f"{inp.stem}{dst}")]
    if not inp.is_dir():
        raise CLIError(cannot("read", inp, "no such file or folder"))
    files = sorted(f for f in inp.rglob(f"*{src}") if not any(x.startswith(".") for x in f.relative_to(inp).parts))
    if not files:
        raise CLIError(cannot("read", inp, f"no {src} files found"))
    return [(f, out / f.relative_to(inp).with_suffix(dst)) for f in files]


def _run_coding(args: argparse.Namespace, compress: bool) -> int:
    from speechtok import compress as stz  # constriction is imported only here

    src, dst = (".npz", ".stz") if compress else (".stz", ".npz")
    jobs = _coding_jobs(args.input, args.output, src, dst)
    priors: dict[str, stz.TokenPrior] = {}
    chosen = stz.TokenPrior.load(args.prior) if args.prior else None
    failed = []
    for path, target in tqdm(jobs, unit="file", desc="compress" if compress else "decompress", disable=None):
        try:
            if compress:
                tf = load_tokens(path)
                if target.is_file() and stz.is_compressed_from(target, tf, chosen):
                    continue  # resumed: done before with the same prior
                prior = chosen or priors.get(tf.codec_hash) or stz.TokenPrior.for_codec(tf)
                priors[tf.codec_hash] = prior
                stz.write_atomic(target, stz.compress_tokens(tf, prior))
            else:
                stz.decompress_file(path, target, chosen, priors)
        except (TokenFileError, ValueError, OSError) as exc:
            if len(jobs) == 1:
                verb = "compress" if compress else "decompress"
                raise CLIError(f"cannot {verb} {path}: {_error_reason(exc, path)}") from exc
            failed.append((str(path), _error_reason(exc, path)))
    return _report(failed, args.output if args.output.suffix != dst else None, "compress" if compress else "decompress")


def run_compress(args: argparse.Namespace) -> int:
    return _run_coding(args, compress=True)


def run_decompress(args: argparse.Namespace) -> int:
    return _run_coding(args, compress=False)


# --- info / codecs ----------------------------------------------------------------------
@command("info", "show what a token file holds")
def info_command(p: argparse.ArgumentParser) -> Runner:
    p.add_argument("file", type=Path)
    return run_info


def run_info(args: argparse.Namespace) -> int:
    entries = list(iter_tokens(args.file))
    tf = entries[0][1]
    frames = sum(t.n_frames for _, t in entries)
    seconds = sum(t.duration for _, t in entries)
    rows = [("file", str(args.file)), ("codec", f"{tf.codec} (hash {tf.codec_hash})")]
    if entries[0][0] is not None:
        rows.append(("utterances", str(len(entries))))
    rows += [
        ("shape", f"{tf.n_codebooks} x {frames} (K x F), {tf.codes.dtype}"),
        (
            "bitrate",
            f"{tf.bitrate:.0f} b/s ({tf.n_codebooks} x {math.log2(tf.codebook_size):g} bits "
            f"x {tf.frame_rate:g} frames/s)",
        ),
        ("duration", f"{seconds:.3f} s ({sum(t.n_samples for _, t in entries)} samples)"),
        (
            "sample rate",
            f"{tf.sample_rate} Hz (source {', '.join(sorted({str(t.orig_sample_rate) for _, t in entries}))} Hz)",
        ),
        ("frame rate", f"{tf.frame_rate:g} Hz"),
        ("format", str(tf.format_version)),
    ]
    for key, value in rows:
        print(f"{key + ':':<13}{value}")
    return 0


@command("codecs", "list the bundled codecs, and the wrapped pretrained ones whose weights are here")
def codecs_command(p: argparse.ArgumentParser) -> Runner:
    return run_codecs


def run_codecs(args: argparse.Namespace) -> int:
    header = ("name", "family", "sample_rate", "frame_rate", "K", "codebook_size", "bitrate")
    rows = []
    for name in available_codecs():
        if name in EXTERNAL:  # no config.json: the wrapper's own architecture says it
            c = EXTERNAL[name][0]()
            m = {"family": c.family, "sample_rate": c.sample_rate, "frame_rate": c.frame_rate}
            m.update(n_codebooks=c.max_codebooks, codebook_size=c.codebook_size)
        else:
            m = read_config(PRETRAINED_DIR / name)
        k, size, fr = m["n_codebooks"], m["codebook_size"], m["frame_rate"]
        rows.append((name, m["family"], m["sample_rate"], f"{fr:g}", k, size, f"{k * math.log2(size) * fr:.0f}"))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


# --- subcommands backed by other modules ------------------------------------------------
def _delegate(module: str, add_arguments: str, run: str) -> Callable[[argparse.ArgumentParser], Runner]:
    """A subcommand whose arguments and runner live in `module`, imported only when chosen."""

    def setup(p: argparse.ArgumentParser) -> Runner:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise CLIError(
                f"`speechtok {p.prog.split()[-1]}` needs {module}, which cannot be imported ({exc})"
            ) from exc
        getattr(mod, add_arguments)(p)
        return getattr(mod, run)

    return setup


for _name, _help, _module, _add, _run in [
    (
        "eval",
        "evaluate a codec (reconstruction metrics) on a manifest or folder",
        "speechtok.eval.harness",
        "add_eval_arguments",
        "run_eval",
    ),
    (
        "eval-tts",
        "score generated speech: WER (Whisper), speaker similarity, DNSMOS, with ceilings",
        "speechtok.eval.generation",
        "add_eval_tts_arguments",
        "run_eval_tts",
    ),
    (
        "eval-enhance",
        "score enhanced speech per SNR band against noisy input and codec ceiling",
        "speechtok.eval.generation",
        "add_eval_enhance_arguments",
        "run_eval_enhance",
    ),
    (
        "transcribe",
        "print the text of audio files (or a folder), read by a CTC head from a codec's tokens",
        "speechtok.asr.cli",
        "add_transcribe_arguments",
        "run_transcribe",
    ),
    (
        "tts",
        "speak text with a bundled or trained token-LM (optionally in the voice of a prompt)",
        "speechtok.lm.cli",
        "add_tts_arguments",
        "run_tts",
    ),
    (
        "enhance",
        "clean noisy speech token-to-token with an enhancement LM (file or folder)",
        "speechtok.lm.cli",
        "add_enhance_arguments",
        "run_enhance",
    ),
    (
        "demo",
        "start the browser demo (codec comparison, TTS, enhancement, listening tests)",
        "speechtok.demo.app",
        "add_demo_arguments",
        "run_demo",
    ),
]:
    command(_name, _help)(_delegate(_module, _add, _run))


# --- entry point ------------------------------------------------------------------------
def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """All subcommands listed; only `selected` gets its arguments (and imports what it needs)."""
    parser = argparse.ArgumentParser(prog="speechtok", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"speechtok {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help, setup) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        if name == selected:
            p.set_defaults(run=setup(p))
    return parser


def _cli_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as the CLI's own lines: what happened, not where in the library it was raised."""
    return f"speechtok: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    library_format, warnings.formatwarning = warnings.formatwarning, _cli_warning
    try:
        return _main(argv)
    finally:
        warnings.formatwarning = library_format


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    selected = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(selected).parse_args(argv)
        return int(args.run(args) or 0)
    except SystemExit as exc:  # argparse: usage errors (2), --help (0)
        return exc.code if isinstance(exc.code, int) else 1
    except CodecError as exc:
        print(f"speechtok: error: {exc}", file=sys.stderr)
        return 2
    except (CLIError, TokenFileError, AudioError, OSError) as exc:
        print(f"speechtok: error: {exc}", file=sys.stderr)
        return exc.code if isinstance(exc, CLIError) else 1
    except KeyboardInterrupt:
        print("speechtok: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
