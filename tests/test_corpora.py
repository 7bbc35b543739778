"""Manifests of the shared real speech and noise: counts, splits, durations, unique IDs."""

from pathlib import Path

import pytest

from speechtok.data.corpora import (
    cathy_manifest,
    crowd_manifest,
    librispeech_manifest,
    noise_manifest,
    shared_manifests,
    split,
)
from speechtok.data.manifest import read_manifest, write_manifest


@pytest.fixture(scope="module")
def corpora(shared_data):
    return shared_manifests(shared_data)


def test_cathy_split_by_prompt(corpora):
    cathy = corpora["cathy"]
    dev, train = split(cathy, "dev"), split(cathy, "train")
    assert len(cathy) == 1620 and len(dev) == 131 and len(train) == 1489
    assert {u.speaker for u in cathy} == {"cathy"}
    assert all(u.extra["prompt_id"] >= "arctic_b0440" for u in dev)
    assert not {u.extra["prompt_id"] for u in dev} & {u.extra["prompt_id"] for u in train}
    assert all(u.ID.startswith("cathy_arctic_") and u.text for u in cathy)
    assert 80 < sum(u.duration for u in cathy) / 60 < 84


def test_librispeech_split_by_speaker(corpora):
    ls = corpora["librispeech"]
    dev, train = split(ls, "dev"), split(ls, "train")
    assert len(ls) == 251 and len({u.speaker for u in ls}) == 251
    assert len({u.speaker for u in dev}) == 25 and len({u.speaker for u in train}) == 226
    assert all(u.ID == f"ls_{Path(u.path).stem}" and u.ID.startswith(f"ls_{u.speaker}-") for u in ls)
    assert {u.extra["sex"] for u in ls} == {"F", "M"}  # from SPEAKERS.TXT
    assert sum(bool(u.text) for u in ls) == 14
    assert 50 < sum(u.duration for u in ls) / 60 < 55


def test_noise_split(corpora):
    noise = corpora["noise"]
    assert len(noise) == 10 and [u.ID for u in split(noise, "dev")] == ["noise_running_tap"]


def test_ids_unique_paths_absolute_durations_positive(corpora, tmp_path):
    utts = [u for us in corpora.values() for u in us]
    assert len({u.ID for u in utts}) == len(utts)
    assert all(Path(u.path).is_absolute() and Path(u.path).is_file() and u.duration > 0 for u in utts)
    back = read_manifest(write_manifest(tmp_path / "all.csv", utts))
    assert sorted((u.ID, round(u.duration, 4), u.split) for u in back) == sorted(
        (u.ID, round(u.duration, 4), u.split) for u in utts
    )


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "metadata.tsv")):
        cathy_manifest(tmp_path)
    (tmp_path / "metadata.tsv").write_text("path\tsplit\na.flac\ttest\n")
    with pytest.raises(ValueError, match=r"metadata.tsv: line 2: split 'test'"):
        noise_manifest(tmp_path)
    with pytest.raises(ValueError, match="missing columns"):
        librispeech_manifest(tmp_path)
    (tmp_path / "metadata.tsv").write_text("path\tsplit\na.flac\ttrain\n")
    with pytest.raises(Exception, match="a.flac"):
        noise_manifest(tmp_path)


def test_crowd_split_by_speaker_and_anonymous_clips_stand_alone(corpora):
    crowd = corpora["crowd"]
    dev, train = split(crowd, "dev"), split(crowd, "train")
    assert len(crowd) >= 7700 and len(dev) == 344  # one malformed clip in train is skipped with a message
    assert not {u.speaker for u in dev} & {u.speaker for u in train}  # dev voices are unseen
    anonymous = [u for u in train if u.extra["source"] in ("picovoice", "mycroft")]
    assert len({u.speaker for u in anonymous}) == len(anonymous)  # no speaker id: each clip its own voice
    assert 160 < sum(u.duration for u in crowd) / 60 < 170


def test_ambient_noise_and_rooms(corpora):
    ambient, rir = corpora["noise_ambient"], corpora["rir"]
    assert len(ambient) == 92 and len(split(ambient, "dev")) == 15
    assert len({u.extra["category"] for u in ambient}) == 11
    assert len(rir) == 14 and len(split(rir, "dev")) == 3


def test_an_unreadable_clip_is_skipped_and_named(tmp_path, capsys):
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio/bad.ogg").write_bytes(b"OggS" + bytes(100))
    (tmp_path / "metadata.tsv").write_text("path\tsource\tspeaker\tsplit\ttext\naudio/bad.ogg\tx\ts\ttrain\thi\n")
    assert crowd_manifest(tmp_path) == []
    assert "bad.ogg" in capsys.readouterr().err
