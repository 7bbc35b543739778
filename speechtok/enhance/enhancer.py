"""Speech enhancement with a token LM (`Enhancer`): encode the noisy waveform, generate clean codes of
the same length (long inputs in chunks that fit the model) and decode them, or apply them to the
noisy input as per-band gains (`render="mixture"`, `speechtok.enhance.filter`), optionally through
the model's gain refiner (`speechtok.enhance.refiner`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from speechtok.codecs import PRETRAINED_DIR
from speechtok.enhance.filter import BandGainFilter
from speechtok.enhance.refiner import GainRefiner
from speechtok.lm.runner import Audio, LMInputError, Runner, load_runner_parts


class Enhancer(Runner):
    """Noisy speech in, clean speech out, token to token.

    With `mean_levels` (the model's `render.mean_levels`, for codecs whose codes are ordinal
    levels and that offer `decode_levels`, i.e. dMel) the generated codes are decoded not as they
    are but as the model's expected level per channel, scored in one more parallel pass: a finer
    estimate than the 16-level codes (for the stage-4 enhancer on the 0-10 dB dev pairs: STOI
    +0.013, PESQ-wb +0.02; recipes/lm/README.md). `render.level_passes` / `level_blank` average
    that pass over several with frame dropout (`TokenLM.expected_codes`; stage 7, 0-10 dB: 4
    passes at 0.5 gave PESQ-wb +0.018, STOI +0.006). `render.input_gains_db` enhances each
    waveform also at other gains, a fraction of a level apart, and averages the outputs, each
    scaled back: the source codes quantise the input coarsely (dMel: 0.9 nat, 7.8 dB a level),
    and each gain rounds it differently, so the average sees it more finely than one set of codes
    does (test-time augmentation; the rows run as one batch). Token-file inputs are enhanced once.

    `render` (the model's `render.mode`) says how the clean tokens become audio: "codec"
    decodes them; "mixture" (dMel codecs, `BandGainFilter`) applies them as per-band
    gains to the noisy input itself, which keeps its phase and fine structure (stage-6 enhancer,
    0-10 dB: PESQ-wb 1.35 -> 1.54, STOI 0.807 -> 0.860). A token-file input has no waveform:
    it is decoded by the codec, with a warning unless "mixture" was asked for explicitly (an
    error then).

    A model folder may also hold a `GainRefiner` (`speechtok.enhance.refiner`): with "mixture" and mean
    levels, it turns the rows' levels at all input gains, beside the fine noisy log-mel, into the
    band gains at once, instead of averaging each row's filtered waveform (`refine=False` does
    that). Shipped stage 9, four draws of 0-10 dB pairs: PESQ-wb +0.402 -> +0.430 over the noisy
    input (recipes/lm/README.md)."""

    RENDERS = ("codec", "mixture")

    def __init__(self, lm, codec, meta: dict, path: Path | None = None) -> None:
        super().__init__(lm, codec, meta, path)
        self.render = self.render_defaults.get("mode", "codec")
        self.input_gains_db = [0.0]
        self.set_input_gains(self.render_defaults.get("input_gains_db"))
        refiner = meta.get("refiner")
        self.refiner = None if refiner is None else GainRefiner.load(path, refiner["config"]).to(codec.device)
        self._filter: BandGainFilter | None = None

    @property
    def band_filter(self) -> BandGainFilter:
        """The band-gain filter of the current codec (render "mixture")."""
        if self._filter is None or self._filter.codec is not self.codec:
            self._filter = BandGainFilter(self.codec)
        return self._filter

    def _use_refiner(self, refine: bool | None) -> bool:
        """Whether to filter through the gain refiner (the caller's choice, else whenever there is one)."""
        if refine and self.refiner is None:
            raise LMInputError(
                f"{self.path}: this model has no gain refiner (recipes/lm/enhance/train_refiner.py trains one)"
            )
        return self.refiner is not None if refine is None else refine

    def set_input_gains(self, gains_db: Sequence[float] | None) -> None:
        """Enhance each waveform at these gains (dB) and average the outputs, each scaled back
        (see the class docstring); [0.0] is the input as it is, None keeps the current gains."""
        if gains_db is None:
            return
        gains = [float(g) for g in gains_db]
        if not gains or not all(math.isfinite(g) and abs(g) <= 40 for g in gains):
            raise LMInputError(f"input gains must be a non-empty list of finite dB values within +-40, got {gains_db}")
        self.input_gains_db = gains

    def _use_render(self, render: str | None) -> str:
        """The caller's rendering, else the model's default; checked against the codec."""
        render = self.render if render is None else render
        if render not in self.RENDERS:
            raise LMInputError(f"render must be one of {', '.join(self.RENDERS)}, got {render!r}")
        if render == "mixture" and not BandGainFilter.supports(self.codec):
            raise LMInputError(
                f"render='mixture': codec '{self.codec.name}' cannot apply its tokens to a "
                "waveform (only dMel codecs can); use render='codec'"
            )
        return render

    @property
    def chunk_frames(self) -> int:
        """Source frames per chunk: what fits the model's positions, and no longer than the crops it
        was trained on (`training.crop_frames`): the aligned source frame then sits at a distance
        the model has seen."""
        p = self.lm.pattern
        fits = (self.lm.cfg.transformer.max_len - max(p.tail, 1)) // (1 + p.steps_per_frame) - 1
        return min(fits, int(self.meta.get("training", {}).get("crop_frames") or fits))

    @torch.inference_mode()
    def enhance_batch(
        self,
        wavs: Sequence[Audio],
        sr: int | None = None,
        seed: int | None = None,
        mean_levels: bool | None = None,
        render: str | None = None,
        refine: bool | None = None,
        **overrides,
    ) -> list[torch.Tensor]:
        """Enhanced waveforms [1, T] (same length as each input, at `sample_rate`); `mean_levels`,
        `render` and `refine` override the model's defaults (see the class docstring)."""
        mean_levels, chosen = self._use_levels(mean_levels), self._use_render(render)
        refine = self._use_refiner(refine) and chosen == "mixture" and mean_levels
        items = [
            self._read(w, sr, f"input {i}" if not isinstance(w, (str, Path)) else str(w)) for i, w in enumerate(wavs)
        ]
        for w, (_, _, mixture) in zip(wavs, items):
            if chosen == "mixture" and mixture is None:
                if render == "mixture":
                    raise LMInputError(
                        f"{w}: render='mixture' needs the noisy waveform, and a token file "
                        "has none; pass the audio file, or use render='codec'"
                    )
                warnings.warn(
                    f"{w}: a token file has no waveform to filter; decoding its clean tokens with the codec instead",
                    stacklevel=2,
                )
        results = []
        for item, runs in zip(items, self._generate_rows(items, seed, overrides, mean_levels)):
            if refine and item[2] is not None:
                results.append(self._refined(item, [self._targets(out, scale) for _, scale, out in runs]))
            else:  # each row rendered, scaled back, averaged
                wavs_back = [self._render(out, row, chosen, mean_levels) / scale for row, scale, out in runs]
                results.append(sum(wavs_back) / len(wavs_back))
        return results

    @torch.inference_mode()
    def refiner_inputs(
        self, wav: Audio, sr: int | None = None, seed: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What a `GainRefiner` reads for one noisy waveform: its log-mel [M, F] and the clean log-mel
        targets [R, M, F] of its rows at the R input gains, each in the unscaled input's terms
        (`recipes/lm/enhance/train_refiner.py` collects them)."""
        self._use_levels(True)
        item = self._read(wav, sr, str(wav) if isinstance(wav, (str, Path)) else "input")
        if item[2] is None:
            raise LMInputError(f"{wav}: the refiner reads the noisy waveform, and a token file has none")
        (runs,) = self._generate_rows([item], seed, {}, mean_levels=True)
        targets = torch.stack([self._targets(out, scale) for _, scale, out in runs])
        return self._noisy_log_mel(item[2], targets.shape[-1])[0], targets

    def _generate_rows(self, items: list, seed, overrides: dict, mean_levels: bool) -> list[list]:
        """Each input at each of the input gains as a row (token files once), all generated as one
        batch; per input its rows as (row, scale, codes or mean levels [K, F])."""
        rows, scales, origin = [], [], []
        for j, (codes, n, mix) in enumerate(items):
            for db in self.input_gains_db if mix is not None else [0.0]:
                scale = 10.0 ** (db / 20)
                louder = None if mix is None else mix * scale
                scaled = codes if scale == 1.0 else self.codec.encode(louder[None].to(self.codec.device))[0]
                rows.append((scaled.long().cpu(), n, louder))
                scales.append(scale)
                origin.append(j)
        src, src_len, owner = self._chunks([codes for codes, _, _ in rows])
        out, lengths = self._generate(src, src_len, None, None, seed, overrides, min_len=int(src_len.min()))
        out = out[..., : int(src_len.max())].cpu()
        out = F.pad(out, (0, int(src_len.max()) - out.shape[-1]))
        for i, (n, got) in enumerate(zip(src_len.tolist(), lengths.cpu().clamp(max=src_len).tolist())):
            if got < n:  # the row ended early: hold its last frame to keep the input's length
                out[i, :, got:n] = out[i, :, got - 1 : got] if got else 0
        if mean_levels:
            out = self._levels(src, out, src_len, src_len, seed=seed).cpu()
        per_input = [[] for _ in items]
        for r, (row, scale, j) in enumerate(zip(rows, scales, origin)):  # a row's chunks stitched back
            full = torch.cat([out[i, :, : src_len[i]] for i in range(len(owner)) if owner[i] == r], -1)
            per_input[j].append((row, scale, full))
        return per_input

    def _targets(self, levels: torch.Tensor, scale: float) -> torch.Tensor:
        """Mean levels [M, F] of a row as clean log-mel in the unscaled input's terms."""
        return self.codec.dequantize(levels.float().clamp(0, self.codec.codebook_size - 1)) - math.log(scale)

    def _noisy_log_mel(self, mixture: torch.Tensor, frames: int) -> torch.Tensor:
        """Log-mel [1, M, frames] of a waveform [1, T], framed as the codes are."""
        x = F.pad(mixture[None], (0, frames * self.codec.hop_length - mixture.shape[-1]))
        return self.codec.log_mel(x.to(self.codec.device)).cpu()

    def _refined(self, item, targets: list[torch.Tensor]) -> torch.Tensor:
        """One input's waveform [1, T] filtered by the refiner's gains over all its rows."""
        _, n_samples, mixture = item
        stacked = torch.stack(targets)[None]
        log_gain = self.refiner(self._noisy_log_mel(mixture, stacked.shape[-1]), stacked)
        wav = self.band_filter.apply(mixture[None].to(self.codec.device), log_gain.exp().to(self.codec.device))
        return wav[0].float().cpu()[:, :n_samples]

    def _chunks(self, sources: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Every input cut into equal chunks that fit (no short tail chunk with little context), as
        one batch [N, K, F] with lengths [N] and each chunk's input index."""
        pieces, owner = [], []
        for j, codes in enumerate(sources):
            n = codes.shape[-1]
            size = -(-n // -(-n // self.chunk_frames))  # ceil(n / number of chunks)
            for s in range(0, n, size):
                pieces.append(codes[:, s : s + size])
                owner.append(j)
        src_len = torch.tensor([p.shape[-1] for p in pieces])
        src = torch.zeros(len(pieces), pieces[0].shape[0], int(src_len.max()), dtype=torch.long)
        for row, p in zip(src, pieces):
            row[:, : p.shape[-1]] = p
        return src, src_len, owner

    def _render(self, full: torch.Tensor, item, chosen: str, mean_levels: bool) -> torch.Tensor:
        """A row's waveform [1, T] (item: its codes, length, waveform) from its codes or levels [K, F]."""
        _, n_samples, mixture = item
        dev = self.codec.device
        if chosen == "mixture" and mixture is not None:
            wav = self.band_filter.filter_mixture(mixture[None].to(dev), full[None].to(dev))[0].float().cpu()
        elif mean_levels:
            wav = self.codec.decode_levels(full[None].to(dev))[0].float().cpu()
        else:
            wav = self._decode(full[None], torch.tensor([full.shape[-1]]))[0]
        return F.pad(wav, (0, max(n_samples - wav.shape[-1], 0)))[:, :n_samples]

    def enhance(
        self,
        wav: Audio,
        sr: int | None = None,
        seed: int | None = None,
        mean_levels: bool | None = None,
        render: str | None = None,
        refine: bool | None = None,
        **overrides,
    ) -> torch.Tensor:
        """Enhance one waveform [T]/[1, T] (at `sample_rate`, or say `sr` to be checked), path or token file."""
        return self.enhance_batch(
            [wav], sr=sr, seed=seed, mean_levels=mean_levels, render=render, refine=refine, **overrides
        )[0]


def load_enhancer(
    name_or_path: str | Path | None = None,
    codec=None,
    device: str | torch.device = "cpu",
    folder: str | Path = PRETRAINED_DIR,
) -> Enhancer:
    """An Enhancer from a bundled name ('enhance-dmel-16k'), a folder, or (None) the model for `codec`
    (any bundled one when codec is None too). `codec` (name or Codec) overrides the decoder."""
    lm, meta, codec, path = load_runner_parts("enhance", name_or_path, codec, device, folder)
    return Enhancer(lm, codec, meta, path)


__all__ = ["Enhancer", "load_enhancer"]
