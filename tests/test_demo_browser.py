"""End to end: `python demo/app.py` on a free localhost port, driven by Playwright in headless
Debian Chromium (never a downloaded browser). Codec tab with a bundled example (trimmed), an
upload and a bad upload; the TTS/enhancement tabs; a MUSHRA and an A/B test whose ratings must
land in SQLite against the right systems; the results tab. Saves a screenshot of each tab to
bench/results/screenshots/. Skips without Chromium or playwright unless SPEECHTOK_REQUIRE_SHARED=1.
"""

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
from conftest import missing, require_modules

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SPEECHTOK_CHROMIUM", "/usr/bin/chromium")
SHOTS = REPO / "bench" / "results" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]  # a beeping microphone
CODEC = "dmel-16k-gl"


try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    sync_playwright = None
require_modules("gradio", hint="pip install -e '.[demo]'", module_level=True)

from speechtok.demo import app as A
from speechtok.demo import listening as L

pytestmark = pytest.mark.slow  # every test here trains a model or drives a browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if sync_playwright is None:
        missing("the playwright package is not installed")
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    data = tmp_path_factory.mktemp("demo-data")
    port = free_port()
    with open(data / "server.log", "w") as log:  # the child keeps its own copy of the handle
        proc = subprocess.Popen(
            [
                sys.executable,
                "demo/app.py",
                "--port",
                str(port),
                "--data-dir",
                str(data),
                "--codecs",
                CODEC,
                "--max-seconds",
                "2",
                "--tests",
                "demo/listening_tests",
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 150
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"demo server did not come up:\n{(data / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield url, data
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    assert "Traceback" not in (data / "server.log").read_text()  # every failure was handled


@pytest.fixture(scope="module")
def page(server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 900}, permissions=["microphone"])
        pg.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)
        pg.goto(server[0], wait_until="domcontentloaded")
        expect(pg.get_by_role("tab", name="Codec")).to_be_visible()
        yield pg
        browser.close()


def choose(page, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option).click()
    expect(page.locator(f"{dropdown} input")).to_have_value(option)


def upload(page, path: Path) -> None:
    clear = page.locator("#codec-input button[aria-label=Clear]")
    if clear.count():
        clear.first.click()
    page.locator("#codec-input").get_by_role("button", name="Upload file").click()
    page.locator("#codec-input input[type=file]").set_input_files(path)
    input_is(page, path.name)
    expect(page.locator("#codec-status")).to_have_text("")  # the last run's message is cleared


def input_is(page, name: str) -> None:
    """Wait until the input audio holds `name` (the example/upload round trip is asynchronous)."""
    expect(page.locator("#codec-input a[data-testid=download-link]")).to_have_attribute(
        "href", re.compile(re.escape(name))
    )


def run_codec(page) -> str:
    page.locator("#codec-run").click()
    status = page.locator("#codec-status")
    expect(status).to_contain_text("Done:")
    return status.inner_text()


def test_codec_tab(page, tmp_path):
    choose(page, "#codec-example", "espeak_en-us.flac")  # 4.7 s: trimmed to --max-seconds 2
    input_is(page, "espeak_en-us.flac")
    text = run_codec(page)
    assert "4.7 s long; only the first 2 s are used" in text
    expect(page.locator("#codec-table")).to_contain_text(CODEC)
    short = tmp_path / "my_upload.wav"
    wav, sr = sf.read(REPO / "examples" / "flite_slt.flac")
    sf.write(short, wav[: int(1.5 * sr)], sr)
    upload(page, short)
    text = run_codec(page)
    assert "trim" not in text and "only the first" not in text
    expect(page.get_by_text("original, 1.50 s, 16 kHz")).to_be_visible()
    expect(page.get_by_text("dmel-16k-gl: 16.0 kbps, 4000 tokens/s, PESQ-wb")).to_be_visible()
    expect(page.locator("#codec-spec-1 img")).to_be_visible()
    page.screenshot(path=SHOTS / "codec.png", full_page=True)


def test_record_from_microphone(page):
    page.locator("#codec-input button[aria-label=Clear]").first.click()
    page.locator("#codec-input").get_by_role("button", name="Record audio").click()
    page.locator("#codec-input button", has_text="Record").first.click()
    page.wait_for_timeout(1500)
    page.locator("#codec-input button", has_text="Stop").first.click()
    expect(page.locator("#codec-input a[data-testid=download-link]")).to_be_attached()
    expect(page.locator("#codec-status")).to_have_text("")
    text = run_codec(page)
    assert "Done: 1 codec(s)" in text
    expect(page.locator("#codec-table")).to_contain_text(CODEC)


def test_bad_upload_shows_a_message(page, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    upload(page, bad)
    page.locator("#codec-run").click()
    expect(page.locator("#codec-status")).to_contain_text("notes.wav: not a readable audio file")
    assert "Traceback" not in page.content() and str(tmp_path) not in page.content()
    expect(page.locator("#codec-audio-1")).to_be_hidden()  # no stale reconstruction left on screen
    page.screenshot(path=SHOTS / "codec-bad-upload.png", full_page=True)


@pytest.mark.parametrize("tab, task", [("TTS", "tts"), ("Enhancement", "enhance")])
def test_lm_tabs(page, tab, task):
    """With a bundled model the tab runs it end to end; without one it says so."""
    page.get_by_role("tab", name=tab).click()
    models, note = A.lm_models(task)
    if not models:
        expect(page.locator(f"#{task}-unavailable")).to_contain_text(note.split(".")[0])
    elif task == "tts":
        page.locator("#tts-text textarea").fill("Good morning.")
        page.get_by_role("button", name="Synthesise").click()
    else:
        page.locator("#enhance-input").get_by_role("button", name="Upload file").click()
        page.locator("#enhance-input input[type=file]").set_input_files(REPO / "examples" / "flite_slt.flac")
        expect(page.locator("#enhance-input a[data-testid=download-link]")).to_be_attached()
        page.get_by_role("button", name="Enhance").click()
    if models:
        expect(page.locator(f"#{task}-audio a[data-testid=download-link]")).to_have_attribute(
            "href", re.compile(r"\.wav")
        )
        assert "Error" not in page.locator(f"#{task}-status").inner_text()
    page.screenshot(path=SHOTS / f"{task}.png", full_page=True)


def _ratings(data: Path, listener: str) -> list[tuple]:
    con = sqlite3.connect(data / "ratings.sqlite")
    try:
        return con.execute(
            "SELECT test, item, trial, system, score FROM ratings WHERE listener = ?", (listener,)
        ).fetchall()
    finally:
        con.close()


def _start(page, title: str, listener: str) -> None:
    page.get_by_role("tab", name="Listening test").click()
    choose(page, "#listen-test", title)
    page.locator("#listen-listener textarea, #listen-listener input").first.fill(listener)
    page.locator("#listen-start").click()
    expect(page.locator("#listen-status")).to_contain_text(f"as listener {listener}")


def _run_trials(page, plan, answer, screenshot: str) -> dict:
    """Answer every trial with answer(i, trial) -> {(item, system): score} and submit it; the
    scores the ratings table should now hold."""
    expected = {}
    for i, trial in enumerate(plan):
        expect(page.locator("#listen-progress")).to_contain_text(f"trial {i + 1} of {len(plan)}")
        expected.update(answer(i, trial))
        if i == 0:
            page.screenshot(path=SHOTS / screenshot, full_page=True)
        page.locator("#listen-submit").click()
        expect(page.locator("#listen-status")).to_contain_text(
            "Thank you" if i == len(plan) - 1 else f"Saved trial {i + 1}"
        )
    return expected


def test_mushra_test(page, server):
    spec = L.load_test(REPO / "demo" / "listening_tests" / "example_mushra.yaml")
    plan = L.plan_trials(spec, "pw-mushra")
    _start(page, spec.title, "pw-mushra")
    expect(page.locator("#listen-reference")).to_be_visible()

    def rate(i, trial) -> dict:
        scores = {}
        for k, system in enumerate(trial.systems):
            score = 100 if system == L.REFERENCE else 10 * (k + 1) + i
            box = page.locator(f"#listen-slider-{k} input[type=number]")
            box.fill(str(score))
            box.press("Enter")
            scores[(trial.item, system)] = float(score)
        return scores

    expected = _run_trials(page, plan, rate, "listening-mushra.png")
    rows = _ratings(server[1], "pw-mushra")
    assert {(item, system): score for _, item, _, system, score in rows} == expected
    assert {r[0] for r in rows} == {"example-mushra"} and len(rows) == len(spec.items) * len(spec.conditions)


def test_ab_test(page, server):
    spec = L.load_test(REPO / "demo" / "listening_tests" / "example_ab.yaml")
    plan = L.plan_trials(spec, "pw-ab")
    _start(page, spec.title, "pw-ab")
    expect(page.locator("#listen-reference")).to_be_hidden()

    def choose_side(i, trial) -> dict:
        answer = "A" if i % 2 == 0 else "No preference"
        page.locator("#listen-choice").get_by_label(answer, exact=True).check()
        return {(trial.item, s): v for s, v in L.trial_scores(spec, trial, answer).items()}

    expected = _run_trials(page, plan, choose_side, "listening-ab.png")
    rows = _ratings(server[1], "pw-ab")
    assert {(item, system): score for _, item, _, system, score in rows} == expected


def test_results_tab(page):
    page.get_by_role("tab", name="Results").click()
    choose(page, "#results-test", L.load_test(REPO / "demo" / "listening_tests" / "example_mushra.yaml").title)
    page.locator("#results-show").click()
    expect(page.locator("#results-summary")).to_contain_text("8 ratings from 1 listener")
    expect(page.locator("#results-table")).to_contain_text("reference")
    expect(page.locator("#results-screening")).to_contain_text("pw-mushra")
    link = page.locator("#results-csv a[href$='example-mushra-ratings.csv']")
    expect(link).to_be_visible()
    csv = page.request.get(link.get_attribute("href")).text().splitlines()
    assert csv[0] == ",".join(L.COLUMNS) and len(csv) == 9
    assert sum(r.startswith("pw-mushra,example-mushra,mushra,") for r in csv) == 8
    expect(page.locator("#results-plot img, #results-plot canvas, #results-plot svg").first).to_be_visible()
    page.screenshot(path=SHOTS / "results.png", full_page=True)
