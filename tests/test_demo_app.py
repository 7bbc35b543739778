"""The demo's functions without a browser: codec comparison, bad and long uploads, listening-test
definitions, stimuli, per-listener randomisation, the SQLite store under concurrent writers,
statistics and post-screening, and the TTS/enhancement tabs with and without checkpoints."""

import math
import multiprocessing
import sqlite3
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import require_modules

require_modules("gradio", hint="pip install -e '.[demo]'", module_level=True)

from speechtok.data.audio import AudioError, rms_db
from speechtok.demo import app as A
from speechtok.demo import listening as L

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
CODEC = "dmel-16k-gl"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """1.5 s of a bundled example at 16 kHz (short keeps Griffin-Lim fast)."""
    wav, sr = sf.read(EXAMPLES / "flite_slt.flac", dtype="float32")
    path = tmp_path_factory.mktemp("clip") / "clip.wav"
    sf.write(path, wav[: int(1.5 * sr)], sr)
    return path


def write_test(tmp: Path, clip: Path, mode: str = "mushra", **extra) -> Path:
    systems = [{"name": "codec", "codec": CODEC}, {"name": "lp", "lowpass_hz": 5000}]
    if mode == "ab":
        systems.append({"name": "orig", "original": True})
    spec = {
        "name": f"t-{mode}",
        "mode": mode,
        "max_seconds": 1.0,
        "sample_rate": 16000,
        "items": [{"id": "a", "path": str(clip)}, {"id": "b", "path": str(clip)}],
        "systems": systems,
        **extra,
    }
    import yaml

    path = tmp / f"{mode}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# --- codec tab ----------------------------------------------------------------------------
def test_compare_codecs_outputs_and_trimming(clip):
    cmp = A.compare_codecs(clip, [CODEC], max_seconds=1.0)
    assert "1.5 s long" in cmp.message and "first 1 s" in cmp.message
    sr, orig = cmp.original
    assert sr == 16000 and orig.dtype == np.int16 and orig.size == 16000
    (r,) = cmp.results
    assert r.label == CODEC and r.bitrate == 16000 and r.tokens_per_s == 4000  # 80 codebooks x 50 Hz
    assert r.audio[0] == 16000 and r.audio[1].size == 16000
    assert r.pesq > 1.2 and r.stoi > 0.75 and r.rtf > 0  # Griffin-Lim on real speech: PESQ-wb ~1.5, STOI ~0.88
    assert r.spectrogram.dtype == np.uint8 and r.spectrogram.ndim == 3 and r.spectrogram.shape[2] == 3
    assert cmp.table()[0][:3] == [CODEC, "16.0", "4000"]
    assert A.compare_codecs(clip, [CODEC], max_seconds=5.0).message == ""  # short input: no note


def test_codec_choices_list_bundled_codecs():
    values = [v for _, v in A.codec_choices()]
    assert CODEC in values
    label = {v: lab for lab, v in A.codec_choices([CODEC])}[CODEC]
    assert "16.0 kbps" in label


@pytest.mark.parametrize("content", [b"", b"this is not audio at all", "corrupt"])
def test_bad_uploads_give_readable_errors(tmp_path, content):
    path = tmp_path / "upload.wav"
    if content == "corrupt":  # a real FLAC cut short inside the first frame
        path = tmp_path / "upload.flac"
        path.write_bytes((EXAMPLES / "flite_slt.flac").read_bytes()[:60])
    else:
        path.write_bytes(content)
    with pytest.raises(AudioError, match="upload"):
        A.compare_codecs(path, [CODEC])
    out = A.compare_view(str(path), [CODEC], n_codecs=1, max_seconds=30)
    assert out[0].startswith("**Error:**") and path.name in out[0]
    assert str(tmp_path) not in out[0] and "Traceback" not in out[0]
    assert out[1] == [] and out[2]["visible"] is False  # nothing stale shown


def test_compare_view_never_shows_a_traceback(monkeypatch, clip):
    def boom(*a, **k):
        raise RuntimeError("kaput")

    monkeypatch.setattr(A, "compare_codecs", boom)
    msg = A.compare_view(str(clip), [CODEC], 1, 30)[0]
    assert msg.startswith("**Error:** unexpected RuntimeError: kaput") and "Traceback" not in msg
    assert A.compare_view(None, [CODEC], 1, 30)[0].startswith("**Error:** upload")
    monkeypatch.undo()
    assert "choose at least one codec" in A.compare_view(str(clip), [], 1, 30)[0]


def test_compare_view_fills_original_and_codec_slots(clip):
    out = A.compare_view(str(clip), [CODEC], n_codecs=2, max_seconds=30)
    assert out[0].startswith("Done: 1 codec(s)")
    slots = [out[2 + 4 * i : 6 + 4 * i] for i in range(3)]
    assert slots[0][0]["visible"] and "original" in slots[0][1] and sf.info(slots[0][2]).frames == 24000
    assert slots[1][0]["visible"] and "16.0 kbps, 4000 tokens/s, PESQ-wb" in slots[1][1]
    assert sf.info(slots[1][2]).samplerate == 16000 and slots[1][3].endswith(".png")
    assert Path(slots[1][2]).parent != Path(A.compare_view(str(clip), [CODEC], 2, 30)[8]).parent  # fresh files
    assert slots[2][0]["visible"] is False  # unused slot stays hidden


# --- test definitions and stimuli ------------------------------------------------------------
def test_example_tests_parse():
    tests = L.find_tests([REPO / "demo" / "listening_tests"])
    by_name = {t.name: t for t in tests}
    assert by_name["example-mushra"].mode == "mushra" and by_name["example-ab"].mode == "ab"
    names = [s.name for s in by_name["example-mushra"].conditions]
    assert names[:2] == [L.REFERENCE, L.ANCHOR] and "dmel-gl" in names
    assert all(it.path.is_file() for t in tests for it in t.items)


@pytest.mark.parametrize(
    "patch, error",
    [
        ({"colour": 1}, "unknown keys"),
        ({"mode": "abx"}, "'mode'"),
        ({"items": [{"path": "missing.wav"}]}, "does not exist"),
        ({"systems": [{"name": "x", "codec": "no-such-codec"}]}, "unknown codec"),
        ({"systems": [{"name": "x", "codec": CODEC, "bitrate": 6000}]}, "no setting at 6000"),
        ({"systems": [{"name": "x", "lowpass_hz": 3000, "codec": CODEC}]}, "exactly one of"),
        ({"systems": [{"name": "x", "lowpass_hz": 3000}, {"name": "x", "original": True}]}, "unique"),
        ({"systems": [{"name": "reference", "original": True}]}, "added by MUSHRA"),
    ],
)
def test_bad_test_definitions_name_the_file(tmp_path, clip, patch, error):
    path = write_test(tmp_path, clip, **{k: v for k, v in patch.items() if k not in ("items", "systems")})
    import yaml

    spec = yaml.safe_load(path.read_text())
    spec.update({k: v for k, v in patch.items() if k in ("items", "systems")})
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(L.ListeningTestError, match=error) as info:
        L.load_test(path)
    assert str(path) in str(info.value)


def test_codec_system_at_a_bitrate(tmp_path, clip):
    path = write_test(tmp_path, clip)
    spec = L.load_test(path)
    import yaml

    raw = yaml.safe_load(path.read_text())
    raw["systems"][0]["bitrate"] = 16000
    path.write_text(yaml.safe_dump(raw))
    assert L.load_test(path).systems[0].n_codebooks == 80
    assert spec.systems[0].kind == "codec"


def test_stimuli_rendered_once_and_anonymous(tmp_path, clip):
    spec = L.load_test(write_test(tmp_path, clip))
    paths = L.prepare_stimuli(spec, tmp_path / "cache")
    assert set(paths) == {(i, s.name) for i in ("a", "b") for s in spec.conditions} | {
        ("a", L.LABELLED),
        ("b", L.LABELLED),
    }
    ref, sr = sf.read(paths[("a", L.REFERENCE)])
    assert sr == 16000 and len(ref) == 16000  # cut to max_seconds
    np.testing.assert_allclose(sf.read(paths[("a", L.LABELLED)])[0], ref)  # same audio as the hidden one
    assert paths[("a", L.LABELLED)].read_bytes() != paths[("a", L.REFERENCE)].read_bytes()  # different URL

    def hf_energy(x):  # fraction of energy above 4.5 kHz
        spec_ = np.abs(np.fft.rfft(x)) ** 2
        return spec_[int(4500 / 8000 * len(spec_)) :].sum() / spec_.sum()

    anchor = sf.read(paths[("a", L.ANCHOR)])[0]
    assert hf_energy(ref) > 1e-4 and hf_energy(anchor) < 0.01 * hf_energy(ref)  # ~35 dB down
    for (_, system), p in paths.items():
        assert system not in p.name  # file names do not give the condition away
    mtimes = {k: p.stat().st_mtime_ns for k, p in paths.items()}
    again = L.prepare_stimuli(spec, tmp_path / "cache")
    assert again == paths and {k: p.stat().st_mtime_ns for k, p in again.items()} == mtimes


def test_files_system_and_loudness_alignment(tmp_path, clip):
    (tmp_path / "out").mkdir()
    wav, sr = sf.read(clip, dtype="float32")
    sf.write(tmp_path / "out" / "a.wav", 0.1 * wav, sr)
    (tmp_path / "t.yaml").write_text(
        f"name: f\nmode: ab\nnormalize_db: -23\nmax_seconds: 1\nitems: [{{id: a, path: {clip}}}]\n"
        "systems: [{name: gen, files: 'out/{item}.wav'}, {name: orig, original: true}]\n"
    )
    spec = L.load_test(tmp_path / "t.yaml")
    paths = L.prepare_stimuli(spec, tmp_path / "cache")
    for system in ("gen", "orig"):  # 20 dB apart on disk, equally loud as stimuli
        x = torch.from_numpy(sf.read(paths[("a", system)], dtype="float32")[0])
        assert float(rms_db(x)) == pytest.approx(-23, abs=0.1)
    (tmp_path / "out" / "a.wav").unlink()
    with pytest.raises(L.ListeningTestError, match="no file .*a.wav for item 'a'"):
        L.prepare_stimuli(spec, tmp_path / "cache2")


# --- randomisation ----------------------------------------------------------------------------
def test_mushra_order_is_random_per_listener_and_item_but_repeatable(tmp_path, clip):
    spec = L.load_test(write_test(tmp_path, clip))
    conditions = {s.name for s in spec.conditions}
    plan = L.plan_trials(spec, "alice")
    assert plan == L.plan_trials(spec, "alice")
    assert sorted(t.item for t in plan) == ["a", "b"]
    assert all(set(t.systems) == conditions and len(t.systems) == 4 for t in plan)
    orders = {tuple(t.systems) for listener in range(20) for t in L.plan_trials(spec, f"l{listener}")}
    assert len(orders) > 10  # 24 possible orders
    firsts = {L.plan_trials(spec, f"l{i}")[0].systems[0] for i in range(30)}
    assert L.REFERENCE in firsts and len(firsts) == 4  # the hidden reference is not always in one place


def test_ab_plan_covers_all_pairs_with_both_sides(tmp_path, clip):
    spec = L.load_test(write_test(tmp_path, clip, mode="ab"))
    plan = L.plan_trials(spec, "bob")
    assert len(plan) == 2 * 3  # items x pairs of 3 systems
    assert {(t.item, t.key) for t in plan} == {(i, k) for i in "ab" for k in ("codec|lp", "codec|orig", "lp|orig")}
    sides = {t.systems for listener in range(10) for t in L.plan_trials(spec, f"x{listener}") if t.key == "codec|lp"}
    assert sides == {("codec", "lp"), ("lp", "codec")}
    assert L.trial_scores(spec, plan[0], "A") == {plan[0].systems[0]: 100.0, plan[0].systems[1]: 0.0}
    assert set(L.trial_scores(spec, plan[0], "No preference").values()) == {50.0}
    with pytest.raises(L.ListeningTestError):
        L.trial_scores(spec, plan[0], None)


def test_listener_ids_and_scores_are_checked(tmp_path, clip):
    spec = L.load_test(write_test(tmp_path, clip))
    trial = L.plan_trials(spec, "c")[0]
    for bad in ("", "two words", "x" * 65, "semi;colon"):
        with pytest.raises(L.ListeningTestError, match="listener id"):
            L.plan_trials(spec, bad)
    with pytest.raises(L.ListeningTestError, match="0..100"):
        L.trial_scores(spec, trial, [50, 50, 50, 101])
    with pytest.raises(L.ListeningTestError, match="expected 4"):
        L.trial_scores(spec, trial, [50, 50])


# --- storage ------------------------------------------------------------------------------------
def _write_many(db: str, listener: str, n: int) -> None:
    store = L.RatingStore(db)
    for i in range(n):
        store.save(listener, "t", "mushra", f"item{i}", "mushra", {"s1": i % 101, "s2": (7 * i) % 101})


def _check_store(db: Path, listeners: list[str], n: int) -> None:
    rows = L.RatingStore(db).rows("t")
    assert len(rows) == 2 * n * len(listeners)
    for who in listeners:
        mine = {(r["item"], r["system"]): r["score"] for r in rows if r["listener"] == who}
        assert mine == {
            (f"item{i}", s): float(v) for i in range(n) for s, v in (("s1", i % 101), ("s2", (7 * i) % 101))
        }


def test_store_under_concurrent_threads(tmp_path):
    db = tmp_path / "r.sqlite"
    L.RatingStore(db)
    listeners = [f"thread{i}" for i in range(8)]
    threads = [threading.Thread(target=_write_many, args=(str(db), who, 25)) for who in listeners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check_store(db, listeners, 25)
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_under_concurrent_processes(tmp_path):
    db = tmp_path / "r.sqlite"
    listeners = [f"proc{i}" for i in range(4)]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(str(db), who, 25)) for who in listeners]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    _check_store(db, listeners, 25)


def test_store_resubmission_replaces_and_bad_writes_leave_nothing(tmp_path):
    store = L.RatingStore(tmp_path / "r.sqlite")
    store.save("ann", "t", "mushra", "a", "mushra", {"x": 10, "y": 20})
    store.save("ann", "t", "mushra", "a", "mushra", {"x": 30, "y": 40})
    assert {(r["system"], r["score"]) for r in store.rows("t")} == {("x", 30.0), ("y", 40.0)}
    with pytest.raises(L.ListeningTestError):
        store.save("bad id", "t", "mushra", "b", "mushra", {"x": 1})
    with pytest.raises(sqlite3.IntegrityError):  # the 2nd row breaks NOT NULL: the 1st is rolled back
        store.save("ann", "t", "mushra", "c", "mushra", {"x": 1, None: 2})
    assert len(store.rows("t")) == 2 and store.completed("t", "ann") == {("a", "mushra")}
    rows = tmp_path / "r.csv"
    store.export_csv(rows, "t")
    lines = rows.read_text().splitlines()
    assert lines[0] == ",".join(L.COLUMNS) and len(lines) == 3 and lines[1].startswith("ann,t,mushra,a,mushra,")


# --- statistics ---------------------------------------------------------------------------------
def test_mean_and_confidence_interval_on_known_numbers():
    mean, lo, hi = L.mean_ci([10, 20, 30, 40, 50])
    half = 2.7764451051977987 * math.sqrt(250) / math.sqrt(5)  # t(0.975, 4) * sd / sqrt(n)
    assert mean == 30 and hi - mean == pytest.approx(half) and mean - lo == pytest.approx(half)
    assert half == pytest.approx(19.6324, abs=1e-4)
    m1, lo1, hi1 = L.mean_ci([42])
    assert m1 == 42 and math.isnan(lo1) and math.isnan(hi1)
    rows = [
        {"listener": w, "system": s, "score": v}
        for w, s, v in [("a", "x", 80), ("b", "x", 90), ("a", "y", 20), ("b", "y", 40), ("c", "y", 60)]
    ]
    stats = L.summarize(rows)
    assert [(s.system, s.n, s.mean, s.listeners) for s in stats] == [("x", 2, 85, 2), ("y", 3, 40, 3)]
    assert [s.system for s in L.summarize(rows, exclude=["a", "b"])] == ["y"]
    fig = L.plot_summary(stats, "t")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["y", "x"]  # best on top


def test_post_screening_flags_listeners_over_15_percent():
    def rows(listener, ref_scores):
        return [
            {"listener": listener, "mode": "mushra", "system": L.REFERENCE, "item": f"i{i}", "score": s}
            for i, s in enumerate(ref_scores)
        ]

    data = (
        rows("good", [100] * 7)
        + rows("edge", [89] + [100] * 6)  # 1/7 = 14.3%: kept
        + rows("bad", [89, 50] + [100] * 5)  # 2/7 = 28.6%: flagged
        + rows("ninety", [90] * 7)  # exactly 90 is not below 90
        + [{"listener": "bad", "mode": "mushra", "system": "codec", "item": "i0", "score": 0}]
    )
    result = {s.listener: s for s in L.post_screen(data)}
    assert {k for k, s in result.items() if s.flagged} == {"bad"}
    assert result["edge"].fraction == pytest.approx(1 / 7) and result["bad"].items == 7
    assert L.post_screen([{"listener": "z", "mode": "ab", "system": L.REFERENCE, "score": 0}]) == []


# --- the listening UI flow (no browser) ---------------------------------------------------------
def test_listening_flow_saves_resumes_and_reports(tmp_path, clip):
    spec = L.load_test(write_test(tmp_path, clip))
    store = L.RatingStore(tmp_path / "r.sqlite")
    ui = A.ListeningUI([spec], store, tmp_path / "cache", tmp_path / "exports")
    out = ui.start(spec.name, "bad id")
    assert out[0] is None and "listener id" in out[1]
    out = ui.start(spec.name, "eve")
    state = out[0]
    assert state["listener"] == "eve" and len(state["trials"]) == 2 and out[3]["visible"] is True
    out = ui.submit(state, 90, 80, 70, 60, None)  # one trial, then "leave"
    assert "Saved trial 1 of 2" in out[1]
    out = ui.start(spec.name, "eve")  # resume: only the unrated item is left
    assert "Resuming" in out[1] and len(out[0]["trials"]) == 1 and "trial 2 of 2" in out[4]
    first = out[0]["trials"][0]
    out = ui.submit(out[0], 100, 50, 40, 30, None)
    assert "are saved. Thank you" in out[1] and out[0] is None
    rows = store.rows(spec.name)
    assert len(rows) == 8
    mine = {r["system"]: r["score"] for r in rows if r["item"] == first[0]}
    assert mine == dict(zip(first[2], [100.0, 50.0, 40.0, 30.0]))  # slider k -> the k-th presented system
    assert "already completed" in ui.start(spec.name, "eve")[1]
    md, table, fig, screening, csv_path = ui.results(spec.name, False)
    assert "8 ratings from 1 listener" in md and len(table) == 4 and fig is not None
    assert Path(csv_path).read_text().count("\n") == 9 and screening[0][0] == "eve"


def test_listening_submit_without_start_and_random_listener_id(tmp_path, clip):
    spec = L.load_test(write_test(tmp_path, clip, mode="ab"))
    ui = A.ListeningUI([spec], L.RatingStore(tmp_path / "r.sqlite"), tmp_path / "cache", tmp_path / "ex")
    assert "start a test first" in ui.submit(None, 0, 0, 0, "A")[1]
    out = ui.start(spec.name, "")
    assert out[0]["listener"].startswith("L") and out[-1]["visible"] is True  # the A/B choice is shown
    bad = ui.submit(out[0], 0, 0, 0, None)
    assert bad[0] == out[0] and bad[1].startswith("**Error:** choose one of")
    assert "unknown test" in ui.start("nope", "x")[1]
    assert ui.results(spec.name, False)[0].startswith("No ratings")


# --- TTS / enhancement tabs ---------------------------------------------------------------------
def test_lm_tabs_say_when_no_model_is_bundled(monkeypatch):
    monkeypatch.setattr(A, "_inference", lambda: None)
    assert A.lm_models("tts") == ([], A.lm_models("tts")[1])
    assert "No TTS model is bundled yet" in A.lm_models("tts")[1]
    assert "No enhancement model is bundled yet" in A.lm_models("enhance")[1]
    fake = types.SimpleNamespace(available_models=lambda task: [])
    monkeypatch.setattr(A, "_inference", lambda: fake)
    assert A.lm_models("tts")[0] == []


def test_lm_tabs_run_a_bundled_model(monkeypatch, clip):
    class Fake:
        sample_rate = 16000

        def tts(self, text, prompt, prompt_text=None, seed=0, max_seconds=None):
            return torch.full((1, 800), 0.5)

        def enhance(self, wav, sr=None):
            assert sr == 16000 and wav.shape == (1, 16000)
            return wav * 0

    fake = types.SimpleNamespace(
        available_models=lambda task: [f"{task}-fake"], load_tts=lambda m: Fake(), load_enhancer=lambda m: Fake()
    )
    monkeypatch.setattr(A, "_inference", lambda: fake)
    monkeypatch.setattr(A, "_runners", {})
    assert A.lm_models("tts") == (["tts-fake"], "")
    sr, wav = A.synthesize("tts-fake", "hello")
    assert sr == 16000 and wav.dtype == np.int16 and wav.size == 800 and wav.max() == 16383
    with pytest.raises(A.DemoInputError):
        A.synthesize("tts-fake", "  ")
    note, noisy, out = A.enhance("enhance-fake", str(clip), max_seconds=1.0)
    assert "first 1 s" in note and noisy[1].size == 16000 and not out[1].any()


# --- app and command line -----------------------------------------------------------------------
def test_build_app_and_cli_errors(tmp_path, clip, capsys):
    spec = L.load_test(write_test(tmp_path, clip))
    demo = A.build_app([spec], L.RatingStore(tmp_path / "r.sqlite"), tmp_path, [clip], codecs=[CODEC])
    api = {d.api_name for d in demo.fns.values()}
    assert {"compare", "start_test", "submit_trial", "results"} <= api
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmode: mushra\nitems: []\nsystems: []\n")
    assert A.main(["--tests", str(bad), "--data-dir", str(tmp_path / "d")]) == 2
    assert "no items" in capsys.readouterr().err
