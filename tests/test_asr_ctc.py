"""ASR through tokens: CTC targets, greedy decoding, a head that learns, save/load, `speechtok transcribe`."""

import json

import pytest
import soundfile as sf
import torch
from conftest import harmonic_tone

from speechtok.asr import ALPHABET, ASRError, TokenCTC, Transcriber, load_transcriber, text_for_ctc
from speechtok.asr.data import CTCBatches, pad_batch, targets
from speechtok.cli import main
from speechtok.data.manifest import Utterance


def test_ctc_text_is_lowercase_letters_and_spaces():
    assert text_for_ctc("Don't stop -- believing, Mr. O'Neil!") == "dont stop believing mr oneil"
    assert text_for_ctc("UP") == "up"
    assert text_for_ctc("...") == ""


def test_greedy_merges_repeats_and_drops_blanks():
    cls = {c: ALPHABET.index(c) + 1 for c in "helo"}  # class 0 is the blank
    path = [0, cls["h"], cls["h"], 0, cls["e"], cls["l"], cls["l"], 0, cls["l"], cls["o"], cls["o"], 0]
    log_probs = torch.full((1, len(path), len(ALPHABET) + 1), -10.0)
    log_probs[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
    assert TokenCTC.greedy(log_probs) == ["hello"]
    assert TokenCTC.greedy(log_probs, torch.tensor([4])) == ["h"]


def toy_codes(word: str) -> torch.Tensor:
    """Two frames per letter, code = letter index (a 28-symbol 'codec'), a blank-ish code 0 between."""
    ids = [ALPHABET.index(c) + 1 for c in word]
    return torch.tensor([x for i in ids for x in (i, i, 0)])[None]


def test_head_learns_to_spell_a_toy_code(one_thread):
    words = ["go", "stop", "yes", "no", "left", "right", "up", "down", "on", "off"]
    utts = [Utterance(ID=w, path="", duration=1.0, speaker=w, text=w) for w in words]
    codes = {w: toy_codes(w) for w in words}
    batches = CTCBatches([utts], lambda u: codes[u.ID], n_batches=1, batch_size=10, seed=0)
    model = TokenCTC(1, 32, dim=64, heads=2, layers=1, conv_layers=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = pad_batch([(codes[w], targets(w)) for w in words])
    losses = []
    for step in range(150):
        b = batches[step] if step % 2 else batch
        log_probs = model(b["codes"], b["code_lengths"])
        loss = torch.nn.functional.ctc_loss(
            log_probs.transpose(0, 1), b["targets"], b["code_lengths"], b["target_lengths"], zero_infinity=True
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    model.eval()
    with torch.no_grad():
        assert TokenCTC.greedy(model(batch["codes"], batch["code_lengths"]), batch["code_lengths"]) == words


def test_batches_leave_out_text_longer_than_its_codes():
    short = Utterance(ID="a", path="", duration=0.1, text="a long sentence")
    fine = Utterance(ID="b", path="", duration=1.0, text="ok")
    batches = CTCBatches([[short, fine]], lambda u: torch.zeros(1, 5, dtype=torch.long), 2, 3)
    assert len(batches.rows) == 1 and batches[0]["target_lengths"].tolist() == [2, 2, 2]


@pytest.fixture(scope="module")
def transcriber(gl_codec, tmp_path_factory):
    """A random head over dmel-16k-gl codes (80 x 16), saved and loaded back as a user would."""
    model = TokenCTC(gl_codec.max_codebooks, gl_codec.codebook_size, dim=32, heads=2, layers=1, conv_layers=1)
    folder = Transcriber(gl_codec, model).save(tmp_path_factory.mktemp("asr") / "asr-tiny")
    return folder, load_transcriber(folder, codec=gl_codec)


def test_saved_transcriber_reloads_with_its_codec_name(transcriber, gl_codec):
    folder, asr = transcriber
    assert json.loads((folder / "config.json").read_text())["codec"] == "dmel-16k-gl"
    again = load_transcriber(folder)  # the codec comes by the name in config.json
    wav = torch.from_numpy(harmonic_tone(1.0))
    assert again.transcribe(wav) == asr.transcribe(wav)
    assert all(c in ALPHABET for c in asr.transcribe(wav))


def test_transcriber_refuses_a_folder_that_is_not_one(tmp_path):
    with pytest.raises(ASRError, match="no config.json"):
        load_transcriber(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"family": "dmel", "codec": "x", "alphabet": "", "model": {}}))
    with pytest.raises(ASRError, match="not a token-ctc model"):
        load_transcriber(tmp_path)


def test_cli_transcribes_a_folder_and_reports_bad_files(transcriber, tmp_path, capsys):
    folder, _ = transcriber
    clips = tmp_path / "clips"
    clips.mkdir()
    sf.write(clips / "one.wav", harmonic_tone(1.0), 16000)
    sf.write(clips / "two.flac", harmonic_tone(0.5, f0=200.0), 16000)
    (clips / "broken.wav").write_bytes(b"not audio")
    out = tmp_path / "out" / "text.tsv"
    assert main(["transcribe", str(clips), "--out", str(out), "--model", str(folder)]) == 1
    lines = out.read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["one", "two"]
    failed = (out.parent / "failed.tsv").read_text()
    assert "broken.wav" in failed and "broken.wav" in capsys.readouterr().err
    assert main(["transcribe", str(clips / "one.wav"), "--model", str(folder)]) == 0
    assert capsys.readouterr().out.startswith("one\t")


def test_code_noise_replaces_about_its_share():
    from speechtok.asr.data import corrupt_codes

    codes = torch.zeros(4, 1, 5000, dtype=torch.long)
    noisy = corrupt_codes(codes, 0.1, 1024)
    assert noisy.dtype == codes.dtype and 0.08 < (noisy != 0).float().mean() < 0.12  # 1/1024 draw 0 again
    assert torch.equal(corrupt_codes(codes, 0.0, 1024), codes)
