"""TTS training data: transcripts phonemized once into a JSON cache (`symbols_cache`), utterances
read from the token cache as items (`tts_items`), phoneme durations from the aligner, cached
(`with_durations`), and batches of similar-length utterances, half of them behind a crop of
another utterance by the same speaker as prompt (`TTSBatches`, `with_prompt`). Items are dicts:
id, speaker, text, symbols, src (symbol ids [L]), codes [K, T] and, with durations, durations [L].
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from speechtok.data.manifest import read_manifest
from speechtok.data.segments import EpochSeeded, fixed_subset
from speechtok.errors import cannot
from speechtok.lm.data import audio_groups, collate, fixed_batches, load_codes, token_paths
from speechtok.tokens import codec_hash
from speechtok.tts.align import Aligner, durations, train_aligner
from speechtok.tts.speaker import VOICE_FRAMES
from speechtok.tts.text import TextFrontend, characters, phonemize_many


def transcript(utt) -> str:
    """The manifest text, or a pseudo-label column (e.g. from ASR) when there is no text."""
    return utt.text or utt.extra.get("pseudo_text", "")


def symbols_cache(texts: list[str], frontend: TextFrontend, cache: Path) -> dict[str, str]:
    """text -> symbol string ('' when unspeakable), computed once per front-end kind and language."""
    path = cache / f"symbols-{frontend.kind}-{frontend.language}.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    todo = sorted({t for t in texts if t not in known})
    if todo:
        new = phonemize_many(todo, frontend.language) if frontend.kind == "phonemes" else map(characters, todo)
        known.update(zip(todo, new))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, ensure_ascii=False, indent=0, sort_keys=True))
        tmp.replace(path)
    return known


def manifest_texts(manifests) -> list[str]:
    """The transcripts of the manifests' rows that have one."""
    return [transcript(u) for m in manifests for u in read_manifest(m) if transcript(u)]


def tts_items(manifests, codec, frontend: TextFrontend, cache: Path, codec_name: str | None = None) -> list[dict]:
    """An item per manifest row with a transcript, a speakable symbol string and a token file in
    `cache` (`speechtok.lm.data.encode_folders`; `codec_name` as given there)."""
    cache = Path(cache)
    utts = [u for m in manifests for u in read_manifest(m) if transcript(u)]
    tokens = token_paths(audio_groups("tts", manifests), codec_name or codec.name, cache)
    syms = symbols_cache([transcript(u) for u in utts], frontend, cache)
    items, want = [], codec_hash(codec)
    for u in utts:
        s = syms[transcript(u)]
        codes = load_codes(tokens[u.path], want) if u.path in tokens and s else None
        if codes is None:
            continue
        ids = [frontend.index[c] for c in s if c in frontend.index]
        items.append(
            {
                "id": u.ID,
                "path": u.path,
                "speaker": u.speaker or u.ID,
                "text": transcript(u),
                "symbols": s,
                "src": torch.tensor(ids),
                "codes": codes,
            }
        )
    return items


def durations_path(cache: Path, codec_name: str, text_kind: str, language: str) -> Path:
    """Where `with_durations` keeps the aligner's durations: per codec and the front-end asked for
    (kind and language as configured), beside the tokens."""
    return Path(cache) / Path(codec_name).name / f"durations-{text_kind}-{language}.json"


def aligner_path(durations_file: Path) -> Path:
    """Where `with_durations` keeps the aligner that made the durations in `durations_file`."""
    return Path(durations_file).with_suffix(".aligner.pt")


def _keep_aligner(model: Aligner, path: Path, n_symbols: int, codebook_size: int) -> None:
    sizes = {"n_symbols": n_symbols, "n_codebooks": model.offset.numel(), "codebook_size": codebook_size}
    torch.save({"sizes": sizes, "dim": model.emb.embedding_dim, "state": model.state_dict()}, path)


def _kept_aligner(path: Path, n_symbols: int, n_codebooks: int, codebook_size: int) -> Aligner | None:
    """The aligner kept at `path`, or None when there is none; one for other sizes is an error
    (the cache would mix two aligners' durations)."""
    if not path.exists():
        return None
    kept = torch.load(path, weights_only=True)
    sizes = {"n_symbols": n_symbols, "n_codebooks": n_codebooks, "codebook_size": codebook_size}
    if kept["sizes"] != sizes:
        problem = f"it is for {kept['sizes']}, not {sizes}; delete it and its durations file"
        raise ValueError(cannot("use the kept aligner", path, problem))
    model = Aligner(n_symbols, n_codebooks, codebook_size, kept["dim"])
    model.load_state_dict(kept["state"])
    return model.eval()


def with_durations(
    items: list[dict], path: Path, codebook_size: int, n_symbols: int, aligner: dict, seed: int = 0
) -> list[dict]:
    """The items, each with its phoneme durations (frames per symbol) from the aligner
    (`speechtok.tts.align`, settings `aligner`), cached in `path` (`durations_path`); an item with
    fewer frames than symbols cannot be aligned and is left out. The aligner is unsupervised and
    reads all items, dev ones included: their durations only feed the dev loss. It is trained once
    and kept beside the cache (`aligner_path`), so utterances added later are aligned by the same
    aligner as the ones a model was trained on (a retrained one places boundaries differently)."""
    path = Path(path)
    items = [r for r in items if r["codes"].shape[-1] >= len(r["src"])]
    known = json.loads(path.read_text()) if path.exists() else {}

    def cached(r) -> bool:
        d = known.get(r["id"])
        return d is not None and len(d) == len(r["src"]) and sum(d) == r["codes"].shape[-1]

    todo = [r for r in items if not cached(r)]
    if todo:
        pair = lambda r: (r["src"].long(), r["codes"].long())  # noqa: E731
        model = _kept_aligner(aligner_path(path), n_symbols, items[0]["codes"].shape[0], codebook_size)
        if model is None:
            print(f"training the aligner on {len(items)} utterances ({dict(aligner)})", flush=True)
            model = train_aligner([pair(r) for r in items], n_symbols, codebook_size, seed=seed, **aligner)
            _keep_aligner(model, aligner_path(path), n_symbols, codebook_size)
        print(f"aligning {len(todo)} utterances", flush=True)
        known.update({r["id"]: d.tolist() for r, d in zip(todo, durations(model, [pair(r) for r in todo]))})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, sort_keys=True))
        tmp.replace(path)
    return [{**r, "durations": torch.tensor(known[r["id"]])} for r in items]


def by_speaker(items: list[dict]) -> dict[str, list[int]]:
    """Speaker -> the indices of their items."""
    out = defaultdict(list)
    for j, r in enumerate(items):
        out[r["speaker"]].append(j)
    return out


def with_prompt(items, speakers: dict[str, list[int]], j, rng, prompt_frames, use_prompt) -> dict:
    """Row j, preceded by a random crop (<= prompt_frames) of another utterance by the same speaker
    (`speakers`: `by_speaker(items)`); without `use_prompt` or another utterance, row j alone.
    Items with a `voice` (`with_voices`) give the row the voice of the prompt's utterance, or of
    another of the speaker's utterances (its own when there is none)."""
    row = items[j]
    others = [k for k in speakers[row["speaker"]] if k != j]
    extra = {"durations": row["durations"]} if "durations" in row else {}
    if not use_prompt or not others:
        if "voice" in row:  # the voice of another utterance of the speaker, as a prompt would give
            extra["voice"] = items[others[int(rng.integers(len(others)))]]["voice"] if others else row["voice"]
        return {"src": row["src"], "codes": row["codes"], "prompt_len": 0, **extra}
    pick = items[others[int(rng.integers(len(others)))]]
    other = pick["codes"]
    if "voice" in row:
        extra["voice"] = pick["voice"]
    P = min(prompt_frames, other.shape[-1])
    start = int(rng.integers(other.shape[-1] - P + 1))
    return {
        "src": row["src"],
        "codes": torch.cat([other[:, start : start + P], row["codes"]], -1),
        "prompt_len": P,
        **extra,
    }


class TTSBatches(EpochSeeded):
    """Item i is a whole batch of utterances of similar length, drawn from (seed, epoch, i)."""

    def __init__(self, items, n_batches, max_batch_frames, max_batch_size, prompt_prob, prompt_frames, seed):
        super().__init__(n_batches, seed)
        self.items = sorted(items, key=lambda r: r["codes"].shape[-1])
        self.max_frames, self.max_size = max_batch_frames, max_batch_size
        self.prompt_prob, self.prompt_frames = prompt_prob, prompt_frames
        self.by_speaker = by_speaker(self.items)

    def __getitem__(self, i: int) -> dict:
        rng = self.rng(i)
        n = len(self.items)
        a = int(rng.integers(n))
        cost = self.items[a]["codes"].shape[-1] + self.prompt_frames * self.prompt_prob + len(self.items[a]["src"])
        size = int(np.clip(self.max_frames // cost, 1, self.max_size))
        lo, hi = max(0, a - 2 * size), min(n, a + 2 * size + 1)
        picks = rng.choice(np.arange(lo, hi), size=min(size, hi - lo), replace=False)
        return collate(
            [
                with_prompt(
                    self.items, self.by_speaker, int(j), rng, self.prompt_frames, rng.random() < self.prompt_prob
                )
                for j in picks
            ]
        )


def dev_batches(
    dev: list[dict], seen: set[str], n_dev: int, prompt_frames: int, max_batch_frames: int, seed: int
) -> list[dict]:
    """Fixed dev batches of a fixed subset of `n_dev` dev items, each behind a speaker prompt, in two
    groups: 'seen' (speakers in `seen`, the training speakers) and 'new' (held-out voices)."""
    rng = np.random.default_rng(seed)
    speakers = by_speaker(dev)
    rows = {"seen": [], "new": []}
    for j in fixed_subset(len(dev), n_dev, seed):
        row = with_prompt(dev, speakers, j, rng, prompt_frames, True)
        rows["seen" if dev[j]["speaker"] in seen else "new"].append(row)
    return [b for g, rs in rows.items() for b in fixed_batches(rs, g, max_batch_frames)]


@torch.no_grad()
def with_voices(items: list[dict], encoder, codec, max_frames: int = VOICE_FRAMES, batch_size: int = 32) -> list[dict]:
    """The items, each with `voice`: the speaker encoder's embedding [dim] of its own first
    `max_frames` codes (dMel levels, dequantised as the encoder reads them)."""
    encoder = encoder.eval()
    order = sorted(range(len(items)), key=lambda i: items[i]["codes"].shape[-1])
    voices = {}
    for s in range(0, len(order), batch_size):
        rows = [items[i]["codes"][:, :max_frames].long() for i in order[s : s + batch_size]]
        n = max(r.shape[-1] for r in rows)
        levels = torch.stack([torch.nn.functional.pad(r, (0, n - r.shape[-1])) for r in rows])
        lengths = torch.tensor([r.shape[-1] / n for r in rows])
        for i, v in zip(order[s : s + batch_size], encoder(codec.dequantize(levels), lengths)):
            voices[i] = v.float()
    return [{**r, "voice": voices[i]} for i, r in enumerate(items)]


def default_prompt(items, speaker: str, frame_rate: float, seconds=(2.0, 4.0)) -> dict | None:
    """A short utterance of `speaker` (the first by ID of 2-4 s) to be the model's default voice
    (its codes, text, symbols and audio path)."""
    mine = sorted((r for r in items if r["speaker"] == speaker), key=lambda r: r["id"])
    ok = [r for r in mine if seconds[0] * frame_rate <= r["codes"].shape[-1] <= seconds[1] * frame_rate] or mine
    if not ok:
        return None
    r = ok[0]
    keep = ("text", "symbols", "id", "path")
    return {"codes": r["codes"].long(), **{k: r[k] for k in keep}, "speaker": speaker}


__all__ = [
    "TTSBatches",
    "aligner_path",
    "by_speaker",
    "default_prompt",
    "dev_batches",
    "durations_path",
    "manifest_texts",
    "symbols_cache",
    "transcript",
    "tts_items",
    "with_durations",
    "with_prompt",
    "with_voices",
]
