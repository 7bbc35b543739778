"""The Gradio demo behind `speechtok demo`: compare codecs by ear, run listening tests.

Tabs: Codec (any upload, recording or bundled example through one or more bundled codecs,
side by side with spectrograms, bitrate, tokens/s, PESQ-wb and STOI), TTS and Enhancement
(bundled token-LM checkpoints, or a note that none is bundled yet), Listening test (MUSHRA
and A/B tests defined by YAML, see `speechtok.demo.listening`) and Results (mean and 95% CI
per system, post-screening, CSV export). Handlers turn every failure into a message in the
page: user errors verbatim, anything else as one line (the traceback goes to the server log).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import types
import uuid
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home; must precede the import

import gradio as gr
import librosa
import numpy as np
import soundfile as sf
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from speechtok.codecs import CodecError, available_codecs
from speechtok.data.audio import AudioError, resample
from speechtok.demo import listening as L
from speechtok.eval.metrics import pesq_wb, stoi

log = logging.getLogger("speechtok.demo")
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # a source checkout holds examples/ and demo/


class DemoInputError(ValueError):
    """Missing or unusable input in a tab (no codec chosen, no text); shown as is."""


USER_ERRORS = (AudioError, CodecError, L.ListeningTestError, DemoInputError)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# --- codec comparison (no Gradio) ---------------------------------------------------------
def codec_choices(names: list[str] | None = None) -> list[tuple[str, str]]:
    """(label, value) per bundled codec setting; value is 'name' or 'name@K' (K codebooks)."""
    out = []
    for name in available_codecs() if names is None else names:
        try:
            codec = L.get_codec(name)
        except CodecError as exc:
            log.warning("skipping codec %s: %s", name, exc)
            continue
        ks = L.codebook_options(codec)
        for k in ks:
            rate = codec.bitrate_at(k) / 1000
            value = name if len(ks) == 1 else f"{name}@{k}"
            label = f"{name} ({rate:.1f} kbps)" if len(ks) == 1 else f"{name}, {k} codebooks ({rate:.1f} kbps)"
            out.append((label, value))
    return out


def spectrogram_image(wav: torch.Tensor, sr: int, title: str = "") -> np.ndarray:
    """RGB image [H, W, 3] of the log-magnitude spectrogram (dB, 80 dB range)."""
    x = wav.reshape(-1).double().numpy()
    n_fft = 512 if sr <= 16000 else 1024
    db = librosa.amplitude_to_db(np.abs(librosa.stft(x, n_fft=n_fft, hop_length=n_fft // 4)), ref=np.max, top_db=80)
    fig = Figure(figsize=(5.2, 2.4), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(db, origin="lower", aspect="auto", cmap="magma", extent=(0, x.size / sr, 0, sr / 2000))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("kHz")
    ax.set_title(title, fontsize=9)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _pcm16(wav: torch.Tensor, sr: int) -> tuple[int, np.ndarray]:
    """(sr, int16 samples) of a float waveform."""
    return sr, (wav.reshape(-1).clamp(-1, 1).numpy() * 32767).astype(np.int16)


SCRATCH = Path(tempfile.gettempdir()) / "speechtok-demo"


def scratch_dir(max_age: float = 3600.0) -> Path:
    """A new folder for one request's output files (folders older than `max_age` s are removed).

    Handlers return files rather than arrays: Gradio writes array outputs to a cache file named
    by content and rewrites it in place, so two sessions producing the same output at once (same
    example, same codec) can be served a half-written file; files are copied atomically instead.
    """
    SCRATCH.mkdir(parents=True, exist_ok=True)
    for old in SCRATCH.iterdir():
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > max_age:
                shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=SCRATCH))


def wav_file(folder: Path, name: str, audio: tuple[int, np.ndarray]) -> str:
    path = folder / f"{name.replace('/', '_')}.wav"
    sf.write(path, audio[1], audio[0], subtype="PCM_16")
    return str(path)


def png_file(folder: Path, name: str, image: np.ndarray) -> str:
    path = folder / f"{name.replace('/', '_')}.png"
    Image.fromarray(image).save(path)
    return str(path)


def _num(value: float, fmt: str = "{:.1f}") -> str:
    return "n/a" if math.isnan(value) else fmt.format(value)


@dataclass
class Reconstruction:
    label: str
    audio: tuple[int, np.ndarray]
    spectrogram: np.ndarray
    bitrate: float  # bit/s
    tokens_per_s: float
    pesq: float  # NaN when undefined (silent or too short input)
    stoi: float
    rtf: float  # encode + decode seconds per second of audio


@dataclass
class Comparison:
    message: str  # notes for the user (trimming), empty when none
    original: tuple[int, np.ndarray]
    spectrogram: np.ndarray
    duration: float
    results: list[Reconstruction] = field(default_factory=list)

    def table(self) -> list[list]:
        return [
            [
                r.label,
                f"{r.bitrate / 1000:.1f}",
                f"{r.tokens_per_s:g}",
                _num(r.pesq, "{:.2f}"),
                _num(r.stoi, "{:.3f}"),
                f"{r.rtf:.2f}",
            ]
            for r in self.results
        ]


TABLE_HEADERS = ["codec", "kbps", "tokens/s", "PESQ-wb", "STOI", "RTF"]


def compare_codecs(
    path: str | Path, settings: list[str], max_seconds: float = 30.0, name: str | None = None
) -> Comparison:
    """Run one audio file through each codec setting ('name' or 'name@K') and score it."""
    if not settings:
        raise DemoInputError("choose at least one codec")
    wav, sr, full = L.load_clip(path, max_seconds, name=name)
    message = ""
    if full > max_seconds:
        message = f"The input is {full:.1f} s long; only the first {max_seconds:g} s are used."
    out = Comparison(message, _pcm16(wav, sr), spectrogram_image(wav, sr, "original"), wav.shape[-1] / sr)
    for setting in settings:
        codec_name, _, k = setting.partition("@")
        codec = L.get_codec(codec_name)
        n_books = codec.check_n_codebooks(int(k) if k else None)
        ref = resample(wav, sr, codec.sample_rate)
        start = time.perf_counter()
        rec = L.run_codec(codec, ref, codec.sample_rate, n_books)
        rtf = (time.perf_counter() - start) / out.duration
        try:
            pesq = pesq_wb(ref, rec, codec.sample_rate)
        except ValueError:
            pesq = math.nan
        label = codec_name if not k else f"{codec_name}@{k}"
        out.results.append(
            Reconstruction(
                label,
                _pcm16(rec, codec.sample_rate),
                spectrogram_image(rec, codec.sample_rate, label),
                codec.bitrate_at(n_books),
                codec.frame_rate * n_books,
                pesq,
                stoi(ref, rec, codec.sample_rate),
                rtf,
            )
        )
    return out


def compare_view(path: str | None, selected: list[str] | None, n_codecs: int, max_seconds: float) -> list:
    """Codec-tab outputs: status, summary table, then (column, title, audio, image) for the
    original and `n_codecs` reconstruction slots (unused ones hidden)."""
    empty = [gr.update(visible=False), "", None, None] * (1 + n_codecs)
    if not path:
        return ["**Error:** upload, record or choose an audio clip first.", [], *empty]
    try:
        cmp = compare_codecs(path, selected or [], max_seconds, name=Path(path).name)
    except Exception as exc:  # noqa: BLE001 - shown in the page, never as a traceback
        return [error_text(exc, (path,)), [], *empty]
    folder = scratch_dir()
    slots = [
        gr.update(visible=True),
        f"**original**, {cmp.duration:.2f} s, {cmp.original[0] / 1000:g} kHz",
        wav_file(folder, "original", cmp.original),
        png_file(folder, "original", cmp.spectrogram),
    ]
    for i, r in enumerate(cmp.results):
        title = (
            f"**{r.label}**: {r.bitrate / 1000:.1f} kbps, {r.tokens_per_s:g} tokens/s, "
            f"PESQ-wb {_num(r.pesq, '{:.2f}')}, STOI {r.stoi:.3f}"
        )
        slots += [
            gr.update(visible=True),
            title,
            wav_file(folder, f"{i}-{r.label}", r.audio),
            png_file(folder, f"{i}-{r.label}", r.spectrogram),
        ]
    done = f"Done: {len(cmp.results)} codec(s), {cmp.duration:.2f} s of audio."
    return [f"{cmp.message} {done}".strip(), cmp.table(), *slots, *empty[len(slots) :]]


# --- TTS / enhancement checkpoints ----------------------------------------------------------
LM_TASKS = {"tts": "TTS", "enhance": "enhancement"}
_runners: dict[tuple[str, str], object] = {}
_runners_lock = threading.Lock()


def _inference():
    """The token-LM entry points (available_models, load_tts, load_enhancer), or None in versions
    without token-LM inference."""
    try:
        runner, tts, enhance = (importlib.import_module(f"speechtok.{m}") for m in ("lm.runner", "tts", "enhance"))
    except ImportError:
        return None
    return types.SimpleNamespace(
        available_models=runner.available_models, load_tts=tts.load_tts, load_enhancer=enhance.load_enhancer
    )


def lm_models(task: str) -> tuple[list[str], str]:
    """Bundled LM checkpoints for `task` ('tts' | 'enhance'), or a note saying why there are none."""
    inference = _inference()
    models = inference.available_models(task) if inference is not None else []
    if not models:
        return [], (
            f"No {LM_TASKS[task]} model is bundled yet. Once a trained checkpoint is added to "
            "`speechtok/pretrained/`, this tab will run it."
        )
    return models, ""


def lm_runner(task: str, model: str):
    """One loaded Synthesizer / Enhancer per model, shared by all sessions."""
    with _runners_lock:
        if (task, model) not in _runners:
            inference = _inference()
            _runners[(task, model)] = (inference.load_tts if task == "tts" else inference.load_enhancer)(model)
        return _runners[(task, model)]


def synthesize(
    model: str,
    text: str,
    prompt: str | None = None,
    prompt_text: str | None = None,
    seed: int = 0,
    max_seconds: float = 20.0,
) -> tuple[int, np.ndarray]:
    if not (text or "").strip():
        raise DemoInputError("enter some text to synthesise")
    tts = lm_runner("tts", model)
    wav = tts.tts(
        text.strip(),
        prompt or None,
        prompt_text=(prompt_text or "").strip() or None,
        seed=int(seed),
        max_seconds=max_seconds,
    )
    return _pcm16(wav, tts.sample_rate)


def enhance(model: str, path: str, max_seconds: float = 30.0) -> tuple[str, tuple, tuple]:
    """(note, noisy input, enhanced), both as (sr, int16) at the model's codec rate."""
    enhancer = lm_runner("enhance", model)
    wav, sr, full = L.load_clip(path, max_seconds, name=Path(path).name)
    wav = resample(wav, sr, enhancer.sample_rate)
    note = f"The input is {full:.1f} s long; only the first {max_seconds:g} s are used." if full > max_seconds else ""
    out = enhancer.enhance(wav, sr=enhancer.sample_rate)
    return note, _pcm16(wav, enhancer.sample_rate), _pcm16(out, enhancer.sample_rate)


# --- error handling ---------------------------------------------------------------------
def error_text(exc: BaseException, paths: tuple = ()) -> str:
    """One readable line for the page; temporary upload paths shortened to the file name."""
    msg = str(exc)
    for p in paths:
        if p:
            msg = msg.replace(str(p), Path(p).name)
    from speechtok.lm.checkpoint import CheckpointError
    from speechtok.lm.runner import LMInputError
    from speechtok.tokens import TokenFileError
    from speechtok.tts.text import TextError

    if isinstance(exc, USER_ERRORS + (LMInputError, CheckpointError, TextError, TokenFileError)):
        return f"**Error:** {msg}"
    log.exception("demo handler failed")
    return f"**Error:** unexpected {type(exc).__name__}: {msg} (details are in the server log)"


# --- listening-test views -------------------------------------------------------------------
class ListeningUI:
    """Per-session state is a plain dict {test, listener, trials: [[item, key, systems]], index,
    done}: `trials` are those still to rate, `done` how many were saved before (resumed runs)."""

    def __init__(self, tests: list[L.TestSpec], store: L.RatingStore, cache_dir: Path, export_dir: Path) -> None:
        self.tests = {t.name: t for t in tests}
        self.store, self.cache_dir, self.export_dir = store, cache_dir, export_dir
        self.slots = max((len(t.conditions) for t in tests), default=2)

    def _test(self, name: str | None) -> L.TestSpec:
        if name not in self.tests:
            raise L.ListeningTestError(f"unknown test {name!r}; choose one from the list")
        return self.tests[name]

    def describe(self, name: str | None) -> str:
        if not name:
            return ""
        t = self._test(name)
        how = (
            "Rate each sample against the reference from 0 (bad) to 100 (excellent). One sample is "
            "the reference itself: give it 100."
            if t.mode == "mushra"
            else "Listen to A and B and choose the one that sounds better."
        )
        return f"### {t.title}\n{t.instructions}\n\n{len(t.items)} items, {t.mode.upper()}. {how}"

    # outputs: state, status, setup, trial box, progress, reference, slots x (row, audio, slider), choice
    def n_outputs(self) -> int:
        return 6 + 3 * self.slots + 1

    def view(self, state: dict | None, status: str) -> list:
        """Component updates for the current trial of `state` (or the setup screen)."""
        hidden = [gr.update(visible=False), gr.update(value=None), gr.update(value=0)] * self.slots
        if not state or state["index"] >= len(state["trials"]):
            return [
                state,
                status,
                gr.update(visible=True),
                gr.update(visible=False),
                "",
                gr.update(value=None),
                *hidden,
                gr.update(value=None, visible=False),
            ]
        t = self.tests[state["test"]]
        item, _, systems = state["trials"][state["index"]]
        paths = L.prepare_stimuli(t, self.cache_dir)
        mushra = t.mode == "mushra"
        slots = []
        for k in range(self.slots):
            if k < len(systems):
                label = f"Sample {LETTERS[k]}" if mushra else LETTERS[k]
                slots += [
                    gr.update(visible=True),
                    gr.update(value=str(paths[(item, systems[k])]), label=label),
                    gr.update(value=0, label=f"Rating of {label}", visible=mushra),
                ]
            else:
                slots += hidden[:3]
        total = state["done"] + len(state["trials"])
        progress = (
            f"**{t.title}**: trial {state['done'] + state['index'] + 1} of {total} (listener `{state['listener']}`)"
        )
        ref = (
            gr.update(value=str(paths[(item, L.LABELLED)]), visible=True)
            if mushra
            else gr.update(value=None, visible=False)
        )
        return [
            state,
            status,
            gr.update(visible=False),
            gr.update(visible=True),
            progress,
            ref,
            *slots,
            gr.update(value=None, visible=not mushra),
        ]

    def start(self, name: str | None, listener: str | None) -> list:
        try:
            t = self._test(name)
            listener = L.check_listener(listener) if (listener or "").strip() else f"L{uuid.uuid4().hex[:8]}"
            saved = self.store.completed(t.name, listener)
            plan = L.plan_trials(t, listener)
            trials = [[tr.item, tr.key, list(tr.systems)] for tr in plan if (tr.item, tr.key) not in saved]
            if not trials:
                return self.view(None, f"Listener `{listener}` has already completed **{t.title}**. Thank you!")
            L.prepare_stimuli(t, self.cache_dir)
            done = len(plan) - len(trials)
            resumed = f" Resuming: {done} trial(s) were already saved." if done else ""
            return self.view(
                {"test": t.name, "listener": listener, "trials": trials, "index": 0, "done": done},
                f"Started **{t.title}** as listener `{listener}`.{resumed}",
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message in the page
            return self.view(None, error_text(exc))

    def submit(self, state: dict | None, *answers) -> list:
        if not state:
            return self.view(None, "**Error:** start a test first.")
        try:
            t = self.tests[state["test"]]
            item, key, systems = state["trials"][state["index"]]
            trial = L.Trial(item, key, tuple(systems))
            answer = answers[-1] if t.mode == "ab" else answers[: len(systems)]
            self.store.save(state["listener"], t.name, t.mode, item, key, L.trial_scores(t, trial, answer))
        except Exception as exc:  # noqa: BLE001
            return [state, error_text(exc), *[gr.update() for _ in range(self.n_outputs() - 2)]]
        state = {**state, "index": state["index"] + 1}
        if state["index"] >= len(state["trials"]):
            return self.view(
                None, f"All {state['done'] + len(state['trials'])} trials of **{t.title}** are saved. Thank you!"
            )
        return self.view(
            state, f"Saved trial {state['done'] + state['index']} of {state['done'] + len(state['trials'])}."
        )

    def results(self, name: str | None, exclude_flagged: bool):
        """Summary markdown, stats table, plot, screening table and CSV path for a test."""
        try:
            t = self._test(name)
            rows = self.store.rows(t.name)
            if not rows:
                return f"No ratings for **{t.title}** yet.", [], None, [], None
            screening = L.post_screen(rows)
            flagged = [s.listener for s in screening if s.flagged]
            stats = L.summarize(rows, exclude=flagged if exclude_flagged else ())
            if not stats:
                return "Every listener is flagged; untick the exclusion to see their ratings.", [], None, [], None
            self.export_dir.mkdir(parents=True, exist_ok=True)
            csv_path = self.store.export_csv(self.export_dir / f"{t.name}-ratings.csv", t.name)
            listeners = len({r["listener"] for r in rows})
            md = f"**{t.title}**: {len(rows)} ratings from {listeners} listener(s)."
            if t.mode == "mushra":
                md += (
                    f" Post-screening flags {len(flagged)} listener(s) rating the hidden reference below 90 "
                    f"on more than 15% of items" + (f": {', '.join(flagged)}." if flagged else ".")
                )
                if exclude_flagged and flagged:
                    md += " They are excluded below."
            else:
                md += " Scores are preference rates in % (50 = no preference)."
            table = [[s.system, s.n, s.listeners, _num(s.mean), _num(s.ci_low), _num(s.ci_high)] for s in stats]
            fig = L.plot_summary(stats, t.title, "MUSHRA score" if t.mode == "mushra" else "preferred (%)")
            scr = [[s.listener, s.items, s.low, f"{s.fraction:.0%}", "yes" if s.flagged else "no"] for s in screening]
            return md, table, fig, scr, str(csv_path)
        except Exception as exc:  # noqa: BLE001
            return error_text(exc), [], None, [], None


# --- the app ------------------------------------------------------------------------------
CSS = """
#codec-status p, #listen-status p { font-size: 1.05em; }
.stk-slot { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px; }
"""


def _theme():
    system = ["ui-sans-serif", "system-ui", "sans-serif"]  # no web fonts: the demo runs offline
    return gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])


def build_app(
    tests: list[L.TestSpec],
    store: L.RatingStore,
    data_dir: Path,
    examples: list[Path] = (),
    max_seconds: float = 30.0,
    codecs: list[str] | None = None,
) -> gr.Blocks:
    choices = codec_choices(codecs)
    lt = ListeningUI(tests, store, data_dir / "stimuli", data_dir / "exports")

    with gr.Blocks(title="speechtok demo", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# speechtok demo\nSpeech tokenizers by ear: compare codecs, run listening tests.")
        with gr.Tabs():
            # ---------------------------------------------------------------- Codec
            with gr.Tab("Codec", id="codec"):
                gr.Markdown(
                    f"Upload or record speech (the first {max_seconds:g} s are used), or pick a "
                    "bundled example, then choose codecs."
                )
                with gr.Row():
                    with gr.Column():
                        audio_in = gr.Audio(
                            sources=["upload", "microphone"],
                            type="filepath",
                            label="Input audio",
                            elem_id="codec-input",
                        )
                        example = gr.Dropdown(
                            [(p.name, str(p)) for p in examples],
                            value=None,
                            label="Bundled example",
                            elem_id="codec-example",
                        )
                    with gr.Column():
                        settings = gr.CheckboxGroup(
                            choices, value=[v for _, v in choices[:3]], label="Codecs", elem_id="codec-settings"
                        )
                        run_btn = gr.Button("Encode and decode", variant="primary", elem_id="codec-run")
                codec_status = gr.Markdown(elem_id="codec-status")
                codec_table = gr.Dataframe(
                    headers=TABLE_HEADERS, label="Summary", interactive=False, elem_id="codec-table"
                )
                slot_outputs = []
                with gr.Row(equal_height=True):
                    for i in range(1 + len(choices)):
                        with gr.Column(visible=False, min_width=320, elem_classes="stk-slot") as col:
                            title = gr.Markdown()
                            audio = gr.Audio(
                                label="original" if i == 0 else "reconstruction",
                                interactive=False,
                                buttons=["download"],
                                elem_id=f"codec-audio-{i}",
                            )
                            image = gr.Image(
                                label="spectrogram", interactive=False, show_label=False, elem_id=f"codec-spec-{i}"
                            )
                        slot_outputs += [col, title, audio, image]

                def on_example(path):
                    return gr.update(value=path) if path else gr.update()

                example.change(on_example, example, audio_in, api_name=False)
                audio_in.change(lambda _: "", audio_in, codec_status, api_name=False)  # no stale message
                run_btn.click(
                    lambda p, sel: compare_view(p, sel, len(choices), max_seconds),
                    [audio_in, settings],
                    [codec_status, codec_table, *slot_outputs],
                    api_name="compare",
                    concurrency_limit=2,
                )

            # ---------------------------------------------------------------- TTS
            with gr.Tab("TTS", id="tts"):
                models, note = lm_models("tts")
                if not models:
                    gr.Markdown(f"**Not available.** {note}", elem_id="tts-unavailable")
                else:
                    with gr.Row():
                        with gr.Column():
                            tts_model = gr.Dropdown(models, value=models[0], label="Model")
                            tts_text = gr.Textbox(label="Text", lines=3, elem_id="tts-text")
                            with gr.Accordion("Voice prompt (optional)", open=False):
                                tts_prompt = gr.Audio(
                                    sources=["upload", "microphone"],
                                    type="filepath",
                                    label="About 3 s of the target voice",
                                )
                                tts_prompt_text = gr.Textbox(label="Its transcript (optional: continue the clip)")
                            tts_seed = gr.Number(0, precision=0, label="Seed")
                            tts_go = gr.Button("Synthesise", variant="primary")
                        with gr.Column():
                            tts_status = gr.Markdown(elem_id="tts-status")
                            tts_out = gr.Audio(
                                label="Synthesised speech", interactive=False, buttons=["download"], elem_id="tts-audio"
                            )

                    def on_tts(m, text, prompt, prompt_text, seed):
                        try:
                            return "", wav_file(
                                scratch_dir(), "tts", synthesize(m, text, prompt, prompt_text, seed or 0)
                            )
                        except Exception as exc:  # noqa: BLE001
                            return error_text(exc, (prompt,)), None

                    tts_go.click(
                        on_tts,
                        [tts_model, tts_text, tts_prompt, tts_prompt_text, tts_seed],
                        [tts_status, tts_out],
                        api_name="tts",
                        concurrency_limit=1,
                    )

            # ---------------------------------------------------------------- enhancement
            with gr.Tab("Enhancement", id="enhance"):
                models, note = lm_models("enhance")
                if not models:
                    gr.Markdown(f"**Not available.** {note}", elem_id="enhance-unavailable")
                else:
                    with gr.Row():
                        with gr.Column():
                            enh_model = gr.Dropdown(models, value=models[0], label="Model")
                            enh_in = gr.Audio(
                                sources=["upload", "microphone"],
                                type="filepath",
                                label="Noisy speech",
                                elem_id="enhance-input",
                            )
                            enh_go = gr.Button("Enhance", variant="primary")
                        with gr.Column():
                            enh_status = gr.Markdown(elem_id="enhance-status")
                            enh_noisy = gr.Audio(label="Input (as used)", interactive=False)
                            enh_out = gr.Audio(
                                label="Enhanced", interactive=False, buttons=["download"], elem_id="enhance-audio"
                            )

                    def on_enhance(m, path):
                        if not path:
                            return "**Error:** upload or record noisy speech first.", None, None
                        try:
                            note, noisy, clean = enhance(m, path, max_seconds)
                            folder = scratch_dir()
                            return note, wav_file(folder, "input", noisy), wav_file(folder, "enhanced", clean)
                        except Exception as exc:  # noqa: BLE001
                            return error_text(exc, (path,)), None, None

                    enh_go.click(
                        on_enhance,
                        [enh_model, enh_in],
                        [enh_status, enh_noisy, enh_out],
                        api_name="enhance",
                        concurrency_limit=1,
                    )

            # ---------------------------------------------------------------- listening test
            names = [(t.title, t.name) for t in tests]
            with gr.Tab("Listening test", id="listen"):
                if not tests:
                    gr.Markdown("**No listening tests are defined.** Start the demo with `--tests FILE.yaml`.")
                state = gr.State(None)
                with gr.Column(visible=bool(tests)) as setup:
                    test_dd = gr.Dropdown(
                        names, value=names[0][1] if names else None, label="Test", elem_id="listen-test"
                    )
                    test_info = gr.Markdown(lt.describe(names[0][1]) if names else "")
                    listener = gr.Textbox(
                        label="Listener id",
                        placeholder="e.g. your initials; empty = a random id",
                        elem_id="listen-listener",
                    )
                    start = gr.Button("Start", variant="primary", elem_id="listen-start")
                listen_status = gr.Markdown(elem_id="listen-status")
                with gr.Column(visible=False, elem_id="listen-trial") as trial_box:
                    progress = gr.Markdown(elem_id="listen-progress")
                    ref_audio = gr.Audio(label="Reference", interactive=False, buttons=[], elem_id="listen-reference")
                    slot_components = []
                    for k in range(lt.slots):
                        with gr.Row(visible=False, equal_height=True) as row:
                            a = gr.Audio(
                                label=f"Sample {LETTERS[k]}", interactive=False, buttons=[], elem_id=f"listen-audio-{k}"
                            )
                            s = gr.Slider(
                                0,
                                100,
                                value=0,
                                step=1,
                                label=f"Rating of Sample {LETTERS[k]}",
                                info="0-20 bad, 20-40 poor, 40-60 fair, 60-80 good, 80-100 excellent",
                                elem_id=f"listen-slider-{k}",
                            )
                        slot_components += [row, a, s]
                    choice = gr.Radio(
                        list(L.AB_CHOICES), label="Which sounds better?", visible=False, elem_id="listen-choice"
                    )
                    submit = gr.Button("Submit and continue", variant="primary", elem_id="listen-submit")
                views = [state, listen_status, setup, trial_box, progress, ref_audio, *slot_components, choice]
                sliders = slot_components[2::3]
                test_dd.change(lt.describe, test_dd, test_info, api_name=False)
                start.click(lt.start, [test_dd, listener], views, api_name="start_test", concurrency_limit=None)
                submit.click(
                    lt.submit, [state, *sliders, choice], views, api_name="submit_trial", concurrency_limit=None
                )

            # ---------------------------------------------------------------- results
            with gr.Tab("Results", id="results"):
                with gr.Row():
                    res_dd = gr.Dropdown(
                        names, value=names[0][1] if names else None, label="Test", elem_id="results-test"
                    )
                    exclude = gr.Checkbox(label="Exclude listeners flagged by post-screening", value=False)
                    show = gr.Button("Show results", variant="primary", elem_id="results-show")
                res_md = gr.Markdown(elem_id="results-summary")
                res_table = gr.Dataframe(
                    headers=["system", "ratings", "listeners", "mean", "95% CI low", "95% CI high"],
                    label="Per system",
                    interactive=False,
                    elem_id="results-table",
                )
                res_plot = gr.Plot(label="Mean and 95% confidence interval", elem_id="results-plot")
                res_screen = gr.Dataframe(
                    headers=["listener", "items", "reference < 90", "fraction", "flagged"],
                    label="MUSHRA post-screening",
                    interactive=False,
                    elem_id="results-screening",
                )
                res_csv = gr.File(label="CSV export", interactive=False, elem_id="results-csv")
                show.click(
                    lt.results,
                    [res_dd, exclude],
                    [res_md, res_table, res_plot, res_screen, res_csv],
                    api_name="results",
                    concurrency_limit=None,
                )
    return demo


# --- command line -----------------------------------------------------------------------------
def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(os.environ.get("SPEECHTOK_DEMO_DIR") or Path(base) / "speechtok" / "demo")


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for a LAN)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="ratings.sqlite, cached stimuli and CSV exports "
        "(default: $SPEECHTOK_DEMO_DIR or ~/.local/share/speechtok/demo)",
    )
    parser.add_argument(
        "--tests",
        nargs="*",
        type=Path,
        default=None,
        help="listening-test YAML files or folders (default: demo/listening_tests of a checkout)",
    )
    parser.add_argument(
        "--examples", type=Path, default=None, help="folder of example clips (default: examples/ of a checkout)"
    )
    parser.add_argument("--codecs", nargs="*", default=None, help="codecs offered (default: all bundled)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="longer uploads are trimmed to this")
    return parser


def run_demo(args: argparse.Namespace) -> int:
    data_dir = (args.data_dir or default_data_dir()).expanduser().resolve()
    test_paths = args.tests if args.tests is not None else [SOURCE_ROOT / "demo" / "listening_tests"]
    ex_dir = args.examples or SOURCE_ROOT / "examples"
    examples = sorted(p for p in ex_dir.glob("*") if p.suffix.lower() in {".wav", ".flac", ".ogg", ".mp3"})
    try:
        tests = L.find_tests([p for p in test_paths if p.exists() or args.tests is not None])
        store = L.RatingStore(data_dir / "ratings.sqlite")
        for t in tests:
            print(f"speechtok demo: preparing stimuli for test '{t.name}'", flush=True)
            L.prepare_stimuli(t, data_dir / "stimuli")
    except (L.ListeningTestError, CodecError, AudioError, OSError) as exc:
        print(f"speechtok demo: error: {exc}", file=sys.stderr)
        return 2
    demo = build_app(tests, store, data_dir, examples, args.max_seconds, args.codecs)
    print(f"speechtok demo: ratings in {store.path}", flush=True)
    demo.queue(default_concurrency_limit=2).launch(
        server_name=args.host,
        server_port=args.port,
        allowed_paths=[str(data_dir), str(ex_dir.resolve())],
        ssr_mode=False,
        show_error=False,
        max_file_size="200mb",
        theme=_theme(),
        css=CSS,
        footer_links=[],
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(prog="speechtok demo", description=__doc__.split("\n")[0])
    return run_demo(add_demo_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
