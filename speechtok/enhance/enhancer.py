"""Speech enhancement with a token LM (`Enhancer`): encode the noisy waveform, generate clean codes of
the same length (long inputs in chunks that fit the model) and decode them, or apply them to the
noisy input as per-band gains (`render="mixture"`, `speechtok.enhance.filter`), optionally through
the model's gain refiner (`speechtok.enhance.refiner`). Long inputs go a block of chunks at a time,
each rendered with its context (`Enhancer.enhance_stream`), so memory does not grow with the length.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from speechtok.codecs import PRETRAINED_DIR
from speechtok.enhance.filter import GAIN_FLOOR, BandGainFilter
from speechtok.enhance.refiner import GainRefiner
from speechtok.errors import cannot
from speechtok.lm.runner import Audio, LMInputError, Runner, load_runner_parts


class Enhancer(Runner):
    """Noisy speech in, clean speech out, token to token.

    With `mean_levels` (the model's `render.mean_levels`, for codecs whose codes are ordinal
    levels and that offer `decode_levels`, i.e. dMel) the generated codes are decoded not as they
    are but as the model's expected level per channel, scored in one more parallel pass: a finer
    estimate than the 16-level codes. `render.level_passes` / `level_blank` average that pass
    over several with frame dropout (`TokenLM.expected_codes`). `render.input_gains_db` enhances each
    waveform also at other gains, a fraction of a level apart, and averages the outputs, each
    scaled back: the source codes quantise the input coarsely (dMel: 0.9 nat, 7.8 dB a level),
    and each gain rounds it differently, so the average sees it more finely than one set of codes
    does (test-time augmentation; the rows run as one batch). Token-file inputs are enhanced once.

    `render` (the model's `render.mode`) says how the clean tokens become audio: "codec"
    decodes them; "mixture" (dMel codecs, `BandGainFilter`) applies them as per-band
    gains to the noisy input itself, which keeps its phase and fine structure. A token-file input has no waveform:
    it is decoded by the codec, with a warning unless "mixture" was asked for explicitly (an
    error then).

    A model folder may also hold a `GainRefiner` (`speechtok.enhance.refiner`): with "mixture" and mean
    levels, it turns the rows' levels at all input gains, beside the fine noisy log-mel, into the
    band gains at once, instead of averaging each row's filtered waveform (`refine=False` does
    that). What each of these gains is measured in recipes/lm/README.md."""

    RENDERS = ("codec", "mixture")
    batch_rows = 8
    """Rows (LM chunks x input gains) generated at once: what bounds a long input's memory
    (`enhance_stream`); all of an input's gains for a chunk always go together. Each row costs
    about 35 MB while generating (its source's 80 codebook embeddings, [80, L, dim], before they
    are summed): 8 rows keep a long file under 2 GB peak RSS, 32 rows took 2.5 GB."""

    def __init__(self, lm, codec, meta: dict, path: Path | None = None) -> None:
        super().__init__(lm, codec, meta, path)
        self.render = self.render_defaults.get("mode", "codec")
        self.input_gains_db = [0.0]
        self.set_input_gains(self.render_defaults.get("input_gains_db"))
        self.gain_floor = GAIN_FLOOR
        self.set_gain_floor(self.render_defaults.get("gain_floor"))
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
                cannot(
                    "refine with",
                    self.path,
                    "this model has no gain refiner (recipes/lm/enhance/train_refiner.py trains one)",
                )
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

    def set_gain_floor(self, floor: float | None) -> None:
        """The lowest band gain "mixture" renders apply, in (0, 1]: higher keeps more of the noise
        and more of the words a wrong gain would cut (recipes/lm/README.md measures the trade). A
        gain refiner's gains stay within its own trained floor, so a lower one acts on the plain
        render only. None keeps the current floor."""
        if floor is None:
            return
        if not (math.isfinite(floor) and 0 < floor <= 1):
            raise LMInputError(f"gain floor must be in (0, 1], got {floor}")
        self.gain_floor = float(floor)

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
        `render` and `refine` override the model's defaults (see the class docstring). Each input is
        enhanced on its own, as `enhance_stream` does it, and its pieces joined."""
        streams = self._streams(wavs, sr, seed, mean_levels, render, refine, overrides)
        return [torch.cat(list(pieces), -1) for pieces in streams]

    def enhance_stream(
        self,
        wav: Audio,
        sr: int | None = None,
        seed: int | None = None,
        mean_levels: bool | None = None,
        render: str | None = None,
        refine: bool | None = None,
        **overrides,
    ) -> Iterator[torch.Tensor]:
        """`enhance(wav)` as consecutive waveform pieces [1, n] (together the input's length),
        computed one at a time so that memory is bounded by a block, not by the input: at most
        `batch_rows` rows (LM chunks x input gains) are generated at once, and each block is
        rendered (band gains, refiner or codec) with `render_margin` frames of real context on each
        side, cropped. The rendering is frame-local, so the pieces equal whole-file enhancement up
        to float rounding (a codec that decodes with a crossfade, Griffin-Lim, only approximately).
        The input is checked and read now; `speechtok.data.audio.save_audio_stream` writes the
        pieces as they come."""
        (pieces,) = self._streams([wav], sr, seed, mean_levels, render, refine, overrides)
        return pieces

    def _streams(self, wavs, sr, seed, mean_levels, render, refine, overrides) -> list[Iterator[torch.Tensor]]:
        """Each input checked and read (waveform, or a token file's codes), with the generator of its pieces."""
        mean_levels, chosen = self._use_levels(mean_levels), self._use_render(render)
        refine = self._use_refiner(refine) and chosen == "mixture" and mean_levels
        items = [
            self._input(w, sr, f"input {i}" if not isinstance(w, (str, Path)) else str(w)) for i, w in enumerate(wavs)
        ]
        for w, (_, _, _, mixture) in zip(wavs, items):
            if chosen == "mixture" and mixture is None:
                if render == "mixture":
                    raise LMInputError(
                        cannot(
                            "enhance",
                            w,
                            "render='mixture' needs the noisy waveform, and a token file has none; "
                            "pass the audio file, or use render='codec'",
                        )
                    )
                warnings.warn(
                    f"{w}: a token file has no waveform to filter; decoding its clean tokens with the codec instead",
                    stacklevel=3,
                )
        return [self._stream(item, seed, overrides, mean_levels, chosen, refine) for item in items]

    def _input(
        self, audio: Audio, sr: int | None, what: str
    ) -> tuple[torch.Tensor | None, int, int, torch.Tensor | None]:
        """(codes [K, F] of a token file or None, frames F, samples, waveform [1, T] or None): a
        waveform is encoded block by block as it is enhanced, not here."""
        if isinstance(audio, (str, Path)) and Path(audio).suffix == ".npz":
            codes = self._codes_from_file(Path(audio), what)
            return codes, codes.shape[-1], codes.shape[-1] * self.codec.hop_length, None
        wav = self._audio(audio, sr, what)
        return None, self.codec.n_frames(wav.shape[-1]), wav.shape[-1], wav

    @torch.inference_mode()
    def refiner_inputs(
        self, wav: Audio, sr: int | None = None, seed: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What a `GainRefiner` reads for one noisy waveform: its log-mel [M, F] and the clean log-mel
        targets [R, M, F] of its rows at the R input gains, each in the unscaled input's terms
        (`recipes/lm/enhance/train_refiner.py` collects them)."""
        self._use_levels(True)
        codes, n, _, mixture = self._input(wav, sr, str(wav) if isinstance(wav, (str, Path)) else "input")
        if mixture is None:
            raise LMInputError(cannot("refine", wav, "the refiner reads the noisy waveform, and a token file has none"))
        scales = self._scales(mixture)
        blocks = [rows for _, _, rows in self._blocks(codes, n, mixture, scales, seed, {}, mean_levels=True)]
        rows = [torch.cat([b[r] for b in blocks], -1) for r in range(len(scales))]
        targets = torch.stack([self._targets(row, scale) for row, scale in zip(rows, scales)])
        return self._noisy_log_mel(mixture, n)[0], targets

    def _scales(self, mixture: torch.Tensor | None) -> list[float]:
        """The input gains as factors (a token file: once, as it is)."""
        return [10.0 ** (db / 20) for db in self.input_gains_db] if mixture is not None else [1.0]

    def _chunk_size(self, n: int) -> int:
        """Frames per LM chunk of an n-frame input: equal chunks that fit (no short tail chunk with little context)."""
        return -(-n // -(-n // self.chunk_frames))  # ceil(n / number of chunks)

    def _blocks(
        self, codes, n: int, mixture, scales: list[float], seed, overrides: dict, mean_levels: bool
    ) -> Iterator[tuple[int, int, list[torch.Tensor]]]:
        """The input's clean codes or mean levels, a block of LM chunks at a time: (first frame, end
        frame, each row's [K, end - first]), a row per input gain. A block holds as many chunks as
        `batch_rows` allows, each at all the gains; the waveform is encoded a block at a time.
        Generation is seeded per block (`seed` + its first chunk) and the mean levels' frame
        dropout per chunk (`seed` + the chunk), so neither depends on how chunks are grouped; all
        rows are generated to at least the shortest chunk's length, as when one batch held them."""
        size = self._chunk_size(n)
        starts = list(range(0, n, size))
        per_block, min_len = max(1, self.batch_rows // len(scales)), n - starts[-1]
        for b in range(0, len(starts), per_block):
            cols = starts[b : b + per_block]
            f0, f1 = cols[0], min(cols[-1] + size, n)
            rows = [codes[:, f0:f1] if mixture is None else self._encode_span(mixture, f0, f1, s) for s in scales]
            pieces = [row[:, s - f0 : s - f0 + size] for row in rows for s in cols]  # row-major, as before
            src_len = torch.tensor([p.shape[-1] for p in pieces])
            src = torch.zeros(len(pieces), pieces[0].shape[0], int(src_len.max()), dtype=torch.long)
            for row, p in zip(src, pieces):
                row[:, : p.shape[-1]] = p
            block_seed = None if seed is None else seed + b
            out, lengths = self._generate(src, src_len, None, None, block_seed, overrides, min_len=min_len)
            out = out[..., : int(src_len.max())].cpu()
            out = F.pad(out, (0, int(src_len.max()) - out.shape[-1]))
            for i, (m, got) in enumerate(zip(src_len.tolist(), lengths.cpu().clamp(max=src_len).tolist())):
                if got < m:  # the row ended early: hold its last frame to keep the input's length
                    out[i, :, got:m] = out[i, :, got - 1 : got] if got else 0
            found = [out[i, :, :m] for i, m in enumerate(src_len.tolist())]
            if mean_levels:  # a chunk's rows at a time, its dropout seeded by the chunk
                for c in range(len(cols)):
                    idx = torch.arange(c, len(pieces), len(cols))
                    m = int(src_len[idx].max())
                    s, lens = src[idx, :, :m], src_len[idx]
                    seed_c = (0 if seed is None else seed) + b + c
                    levels = self._levels(s, out[idx, :, :m], lens, lens, seed=seed_c).cpu()
                    for i, lv in zip(idx.tolist(), levels):
                        found[i] = lv[:, : src_len[i]]
            c = len(cols)
            yield f0, f1, [torch.cat(found[r * c : (r + 1) * c], -1) for r in range(len(scales))]

    def _span(self, mixture: torch.Tensor, a: int, b: int) -> torch.Tensor:
        """Samples [1, (b - a) * hop] of frames a..b of a waveform [1, T], zeros outside it."""
        hop = self.codec.hop_length
        lo, hi = a * hop, b * hop
        piece = mixture[:, max(lo, 0) : max(min(hi, mixture.shape[-1]), 0)]
        return F.pad(piece, (max(-lo, 0), hi - lo - piece.shape[-1] - max(-lo, 0)))

    def _encode_span(self, mixture: torch.Tensor, f0: int, f1: int, scale: float) -> torch.Tensor:
        """Codes [K, f1 - f0] of frames f0..f1 of the waveform at `scale`, as encoding it whole gives
        them (encoding is frame-local within `context_frames`)."""
        codec, ctx = self.codec, self.codec.context_frames
        piece = self._span(mixture, f0 - ctx, f1 + ctx) * scale
        return codec.encode(piece[None].to(codec.device))[0, :, ctx : ctx + f1 - f0].long().cpu()

    @property
    def render_margin(self) -> int:
        """Frames of context each side of a rendered block: the band-gain filter's STFT frames reach
        `context_frames` each way, and its gains read frames as far again (their mixture log-mel),
        the refiner its `context_frames`, a codec decoder its own `decode_context_frames`."""
        refiner = 0 if self.refiner is None else self.refiner.context_frames
        ctx = self.codec.context_frames
        return 2 * ctx + 1 + refiner + int(self.codec.decode_context_frames)

    @torch.inference_mode()  # on a generator: active while it runs, not while the caller holds a piece
    def _stream(
        self, item, seed, overrides: dict, mean_levels: bool, chosen: str, refine: bool
    ) -> Iterator[torch.Tensor]:
        """One input's enhanced pieces [1, n]: each block of clean rows is rendered as soon as the
        next one has come (`render_margin` frames of it are the right-hand context); only the frames
        a render still needs are kept. A codec that decodes with a crossfade
        (`decode_crossfade_frames`) gets it between blocks, as `Codec.decode_stream` does."""
        codes, n, n_samples, mixture = item
        hop, margin, scales = self.codec.hop_length, self.render_margin, self._scales(mixture)
        filtered = chosen == "mixture" and mixture is not None
        fade = 0 if filtered else int(self.codec.decode_crossfade_frames)
        kept, start, done, tail = None, 0, 0, None
        for _, f1, rows in self._blocks(codes, n, mixture, scales, seed, overrides, mean_levels):
            kept = rows if kept is None else [torch.cat([k, r], -1) for k, r in zip(kept, rows)]
            end = n if f1 == n else f1 - margin - fade
            if end <= done:
                continue
            upto = n if f1 == n else end + fade
            lo, hi = max(done - margin, 0), min(upto + margin, n)
            part = [k[:, lo - start : hi - start] for k in kept]
            wav = self._render_span(part, scales, mixture, lo, hi, n_samples, chosen, mean_levels, refine)
            wav = wav[:, (done - lo) * hop : (upto - lo) * hop]
            if tail is not None and tail.shape[-1]:  # equal-power crossfade, as Codec._decode_chunked
                k = tail.shape[-1]
                ramp = (torch.arange(k, dtype=wav.dtype) + 0.5) * (torch.pi / (2 * k))
                wav = torch.cat([tail * ramp.cos() + wav[:, :k] * ramp.sin(), wav[:, k:]], -1)
            body = min(end * hop, n_samples) - done * hop
            tail = wav[:, body:]
            yield wav[:, :body]
            done, cut = end, max(end - margin, 0)
            kept, start = [k[:, cut - start :] for k in kept], cut

    def _render_span(self, rows, scales, mixture, lo: int, hi: int, n_samples: int, chosen, mean_levels, refine):
        """The waveform [1, T'] of frames lo..hi (the input's own samples there) from each row's codes or
        levels [K, hi - lo]: refined, or each row rendered, scaled back and averaged."""
        hop = self.codec.hop_length
        length = min(hi * hop, n_samples) - lo * hop
        local = None if mixture is None else self._span(mixture, lo, hi)[:, :length]
        if refine and local is not None:
            return self._refined((None, length, local), [self._targets(r, s) for r, s in zip(rows, scales)])
        wavs = [
            self._render(r, (None, length, None if local is None else local * s), chosen, mean_levels) / s
            for r, s in zip(rows, scales)
        ]
        return sum(wavs) / len(wavs)

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
        gain = log_gain.exp().clamp(min=self.gain_floor).to(self.codec.device)
        wav = self.band_filter.apply(mixture[None].to(self.codec.device), gain)
        return wav[0].float().cpu()[:, :n_samples]

    def _render(self, full: torch.Tensor, item, chosen: str, mean_levels: bool) -> torch.Tensor:
        """A row's waveform [1, T] (item: its codes, length, waveform) from its codes or levels [K, F]."""
        _, n_samples, mixture = item
        dev = self.codec.device
        if chosen == "mixture" and mixture is not None:
            wav = self.band_filter.filter_mixture(mixture[None].to(dev), full[None].to(dev), self.gain_floor)
            wav = wav[0].float().cpu()
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
