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


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path):
    (tmp_path / "pack/manifests").mkdir(parents=True)
    (tmp_path / "pack/manifests/m.csv").write_text("ID,path,duration\nx,../audio/x.ogg,1.0\n")
    (utt,) = read_manifest(tmp_path / "pack/manifests/m.csv")
    assert utt.path == str((tmp_path / "pack/audio/x.ogg").resolve())


@pytest.mark.slow
def test_training_pack_is_portable(tmp_path):
    import subprocess
    import sys

    import numpy as np
    import soundfile as sf

    from speechtok.data import load_audio

    src = tmp_path / "src"
    src.mkdir()
    utts = []
    for i in range(2):
        sf.write(src / f"u{i}.flac", (0.3 * np.sin(np.arange(16000) * 0.05 * (i + 1))).astype("float32"), 16000)
        utts.append(Utterance(f"u{i}", str(src / f"u{i}.flac"), 1.0, "spk", "hi", "", "train"))
    write_manifest(tmp_path / "m/toy_train.csv", utts)
    out = tmp_path / "pack"
    cmd = [
        sys.executable,
        "recipes/data/pack.py",
        "--manifests",
        str(tmp_path / "m"),
        "--names",
        "toy",
        "--splits",
        "train",
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    subprocess.run(cmd, check=True, capture_output=True, cwd=__import__("pathlib").Path(__file__).parents[1])
    moved = tmp_path / "moved"
    out.rename(moved)  # the pack works from anywhere
    back = read_manifest(moved / "manifests/toy_train.csv")
    assert [u.ID for u in back] == ["u0", "u1"] and back[0].text == "hi"
    wav = load_audio(back[1].path, 16000)
    assert back[1].path.endswith(".ogg") and abs(wav.shape[-1] - 16000) < 400
