"""Load: 8 simultaneous gradio_client sessions against one in-process demo server, each running
the codec tab and a whole MUSHRA test; none may fail, and every rating must land in SQLite
under its own listener with the scores that listener sent."""

import socket
import threading
from pathlib import Path

import pytest
import soundfile as sf
from conftest import require_modules

_, gradio_client = require_modules("gradio", "gradio_client", hint="pip install -e '.[demo]'", module_level=True)

from speechtok.demo import app as A
from speechtok.demo import listening as L

REPO = Path(__file__).resolve().parents[1]
SESSIONS = 8
CODEC = "dmel-16k-gl"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("load")
    wav, sr = sf.read(REPO / "examples" / "flite_slt.flac", dtype="float32")
    clip = tmp / "clip.wav"
    sf.write(clip, wav[:sr], sr)  # 1 s keeps eight Griffin-Lim runs short
    (tmp / "t.yaml").write_text(
        f"name: load\nmode: mushra\nmax_seconds: 1.0\nitems: [{{id: a, path: {clip}}}, {{id: b, path: {clip}}}]\n"
        f"systems: [{{name: codec, codec: {CODEC}}}, {{name: lp, lowpass_hz: 5000}}]\n"
    )
    spec = L.load_test(tmp / "t.yaml")
    store = L.RatingStore(tmp / "data" / "ratings.sqlite")
    L.prepare_stimuli(spec, tmp / "data" / "stimuli")
    demo = A.build_app([spec], store, tmp / "data", codecs=[CODEC])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.queue(default_concurrency_limit=2).launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        ssr_mode=False,
        allowed_paths=[str(tmp)],
    )
    yield f"http://127.0.0.1:{port}/", spec, store, clip
    demo.close()


def session(url: str, spec, clip: Path, i: int, errors: list) -> None:
    try:
        # own download folder: identical outputs of parallel sessions must not race on one file
        client = gradio_client.Client(
            url, verbose=False, analytics_enabled=False, download_files=clip.parent / f"downloads{i}"
        )
        out = client.predict(gradio_client.handle_file(str(clip)), [CODEC], api_name="/compare")
        assert out[0].startswith("Done: 1 codec(s)"), out[0]
        rec, sr = sf.read(out[6])  # the reconstruction's audio file
        assert sr == 16000 and len(rec) == 16000
        out = client.predict(spec.name, f"load{i}", api_name="/start_test")
        assert f"as listener `load{i}`" in out[0], out[0]
        for t, _ in enumerate(L.plan_trials(spec, f"load{i}")):
            out = client.predict(*[i * 10 + t + k for k in range(4)], None, api_name="/submit_trial")
        assert "Thank you" in out[0], out[0]
    except Exception as exc:  # noqa: BLE001 - collected and reported by the test
        errors.append(f"session {i}: {type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_eight_simultaneous_sessions(served):
    url, spec, store, clip = served
    errors: list[str] = []
    threads = [threading.Thread(target=session, args=(url, spec, clip, i, errors)) for i in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not errors, errors
    rows = store.rows(spec.name)
    assert len(rows) == SESSIONS * len(spec.items) * len(spec.conditions)
    for i in range(SESSIONS):
        mine = {(r["item"], r["system"]): r["score"] for r in rows if r["listener"] == f"load{i}"}
        want = {
            (t.item, s): float(i * 10 + n + k)
            for n, t in enumerate(L.plan_trials(spec, f"load{i}"))
            for k, s in enumerate(t.systems)
        }
        assert mine == want  # nothing lost, nothing mixed between sessions
