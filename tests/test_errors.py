"""Error messages about files: what failed first, then the file, then why, on one line."""

import pytest

from speechtok.codecs import CodecError, load_codec
from speechtok.data.audio import AudioError, load_audio
from speechtok.data.manifest import read_manifest
from speechtok.demo.listening import load_clip
from speechtok.errors import cannot, problem_of
from speechtok.eval.harness import EvalError, load_items
from speechtok.lm.checkpoint import CheckpointError, read_lm_config
from speechtok.tokens import TokenFileError, load_tokens


def test_cannot_and_problem_of(tmp_path):
    path = tmp_path / "a b.npz"
    message = cannot("read token file", path, "codes: bad")
    assert message == f"cannot read token file {path}: codes: bad"
    assert problem_of(message, path) == "codes: bad"
    assert problem_of("something else: entirely", path) == "something else: entirely"


@pytest.mark.parametrize(
    "load, error, action",
    [
        (load_tokens, TokenFileError, "read token file"),
        (load_audio, AudioError, "read audio"),
        (read_manifest, FileNotFoundError, "read manifest"),
        (read_lm_config, CheckpointError, "load token LM from"),
        (load_items, EvalError, "load evaluation data"),
        (load_clip, AudioError, "read audio"),
    ],
)
def test_messages_start_with_what_failed_not_with_the_path(tmp_path, load, error, action):
    missing = tmp_path / "nowhere"
    with pytest.raises(error) as exc:
        load(missing)
    assert str(exc.value).startswith(f"cannot {action} {missing}: ") and "\n" not in str(exc.value)


def test_codec_folder_errors_name_the_folder(tmp_path):
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(CodecError, match=r"^cannot load codec from .*: config.json has invalid JSON"):
        load_codec(tmp_path)
