"""Room impulse responses for reverberant training pairs: measured ones read from files, and
simulated shoebox rooms (image-source method, `pyroomacoustics`) written once as a pool.

Every RIR is returned in one convention, [1, L] float32 with its direct path at lag 0 and
peak 1, so convolving keeps the speech aligned with its dry target (`noise.reverberate`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from speechtok.data.audio import load_audio, save_audio
from speechtok.data.manifest import Utterance, read_manifest, write_manifest
from speechtok.errors import cannot

ROOM_SIZE = ((3.0, 10.0), (3.0, 8.0), (2.4, 4.0))  # metres: length, width, height
RT60_RANGE = (0.2, 0.9)  # seconds, Sabine target (the image-source tail measures a little longer)
WALL_GAP = 0.5  # metres between a wall and the talker or the microphone


def align_rir(rir: torch.Tensor) -> torch.Tensor:
    """[1, L] with everything before the direct path (the peak) dropped and the peak scaled to 1."""
    rir = rir.reshape(1, -1).float()
    peak = int(rir.abs().argmax())
    rir = rir[:, peak:]
    return rir / rir[0, 0]


def load_rir(path: str | Path, sample_rate: int) -> torch.Tensor:
    """A measured (or saved simulated) RIR file, mono, aligned (`align_rir`)."""
    rir = load_audio(path, sample_rate)
    if rir.numel() < 2 or float(rir.abs().max()) == 0.0:
        raise ValueError(cannot("use RIR", path, "it is silent or empty"))
    return align_rir(rir)


def simulate_rir(rng: np.random.Generator, sample_rate: int) -> tuple[torch.Tensor, dict]:
    """One shoebox room of random size and RT60 with a talker and a microphone at random places:
    its RIR (aligned) and what was drawn."""
    import pyroomacoustics as pra  # only data preparation needs it

    dims = [float(rng.uniform(lo, hi)) for lo, hi in ROOM_SIZE]
    rt60 = float(rng.uniform(*RT60_RANGE))
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption), max_order=max_order)
    place = lambda: [float(rng.uniform(WALL_GAP, d - WALL_GAP)) for d in dims]  # noqa: E731
    talker, mic = place(), place()
    room.add_source(talker)
    room.add_microphone(mic)
    room.compute_rir()
    rir = torch.from_numpy(np.asarray(room.rir[0][0], dtype=np.float32))
    distance = float(np.linalg.norm(np.subtract(talker, mic)))
    return align_rir(rir), {"rt60": rt60, "room": "x".join(f"{d:.1f}" for d in dims), "distance": distance}


def write_simulated_rirs(out_dir: str | Path, count: int, split: str, seed: int, sample_rate: int = 16000) -> Path:
    """`count` simulated rooms as `out_dir/<split>/room_<i>.flac` plus `out_dir/<split>.csv` (a
    manifest with rt60, room size and distance). Room i is drawn from (seed, split, i), so a larger
    count extends a pool, and rooms already in the manifest with their file are not simulated again."""
    out_dir = Path(out_dir).resolve()
    out = out_dir / split
    out.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / f"{split}.csv"
    done = {u.ID: u for u in read_manifest(manifest)} if manifest.is_file() else {}
    rows = []
    for i in range(count):
        uid, path = f"sim_{split}_{i:04d}", out / f"room_{i:04d}.flac"
        if uid in done and path.is_file():
            rows.append(done[uid])
            continue
        rng = np.random.Generator(np.random.PCG64([int(seed), sum(map(ord, split)), i]))
        rir, info = simulate_rir(rng, sample_rate)
        save_audio(path, 0.5 * rir, sample_rate)  # FLAC holds [-1, 1]; `load_rir` re-aligns to peak 1
        extra = {k: f"{v:.3f}" if isinstance(v, float) else v for k, v in info.items()}
        rows.append(Utterance(uid, str(path), rir.shape[-1] / sample_rate, split=split, extra=extra))
    write_manifest(manifest, rows)
    return manifest


def read_rir_list(paths: list[str | Path]) -> list[Utterance]:
    """The RIRs of several manifests (measured `rir_<split>.csv`, simulated pools) as one list."""
    out = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(cannot("read RIR list", p, "file does not exist"))
        out += read_manifest(p)
    return out
