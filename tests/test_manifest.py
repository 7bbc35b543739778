import pytest
from speechbrain.dataio.dataset import DynamicItemDataset

from speechtok.data.manifest import Utterance, read_manifest, write_manifest


def utts():
    return [
        Utterance("b", "/data/b.flac", 1.25, "spk2", 'Hello, "world"', "həloʊ wɜːld", "dev", {"snr_db": 5.0}),
        Utterance("a", "/data/a.flac", 2.5, "spk1", "A comma, here", "ɐ kɑːmə", "train", {"snr_db": -3.0}),
    ]


def test_round_trip(tmp_path):
    path = write_manifest(tmp_path / "m.csv", utts())
    back = read_manifest(path)
    assert [u.ID for u in back] == ["a", "b"]  # sorted, deterministic
    assert back[1].text == 'Hello, "world"' and back[1].phonemes == "həloʊ wɜːld"
    assert back[0].duration == 2.5 and back[0].extra == {"snr_db": "-3.0"}


def test_speechbrain_reads_it(tmp_path):
    path = write_manifest(tmp_path / "m.csv", utts())
    ds = DynamicItemDataset.from_csv(str(path))
    ds.set_output_keys(["id", "path", "duration", "text"])
    items = {it["id"]: it for it in ds}
    assert items["b"]["duration"] == 1.25 and items["b"]["text"] == 'Hello, "world"'


def test_duplicate_ids_rejected(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        write_manifest(tmp_path / "m.csv", utts() + utts()[:1])


def test_missing_columns(tmp_path):
    (tmp_path / "bad.csv").write_text("path,text\nx.wav,hi\n")
    with pytest.raises(ValueError, match="bad.csv.*ID"):
        read_manifest(tmp_path / "bad.csv")
