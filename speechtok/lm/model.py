"""TokenLM: a decoder-only LM that continues a source sequence with audio tokens.

Each row is laid out as

    [source tokens] [separator] [prompt audio steps] [target audio steps] [end]

The source is text/phoneme ids [B, L] or, for enhancement, codec codes [B, Ks, L]; each
stream has its own embedding table (the audio one holds one table per head, stored as one
`nn.Embedding` with per-head offsets, and a step's heads are summed). Audio frames (prompt
followed by target) go through the `Pattern` as one stream, so delayed codebooks cross the
prompt/target boundary correctly. The loss is cross-entropy over target cells only: prompt
frames, source, separator and pad cells are ignored; the end token (on head 0 at the step
where frame T would start) is a target.

With `aligned_positions`, rotary positions are not token indices: target step s sits at s,
prompt steps just before 0, and source token i at i * rate, where rate is the true target
steps per source token in training (1 for enhancement) and `default_rate` (or a caller's
estimate) in generation. A target step then finds the source tokens it renders at relative
distance ~0 - alignment by construction, which a small model cannot otherwise learn in a few
thousand steps (the idea of giving the total duration up front, as in E2/F5-TTS).

With `durations` (TTS), every source token has a length in frames (in training from the
aligner, `speechtok.tts.align`; in generation from the model's own duration predictor), source
token i sits at the centre of its frames on the timeline, and the target length is their sum.

With `aligned_source` the input that predicts target frame f also carries the source token of
that frame, summed in through its own embedding table: for enhancement (source and target
frames share one clock) noisy frame f, for TTS with durations the phoneme frame f renders. The
source still stands in front as context; the aligned token is simply handed to the step that
renders it instead of being looked up by attention, which a small model does imprecisely
(recipes/lm/README.md). The table starts at zero, so a model fine-tuned from one without it
starts out unchanged.

Batches are right-padded with explicit lengths. `generate` packs each row as
[source, separator, prompt] right-padded, prefills the KV cache, then decodes all rows in
lock-step, each at its own cache position (see `transformer.py`), so a row's output does not
depend on the other rows in the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from speechtok.lm.patterns import Pattern, make_pattern
from speechtok.lm.sampling import SamplingConfig, gate_end, sample, token_history
from speechtok.lm.transformer import KVCache, Transformer, TransformerConfig

IGNORE = -100
NOT_ENDED = torch.iinfo(torch.long).max  # end frame of a row still generating


@dataclass
class LMConfig:
    pattern: str = "delay"
    n_codebooks: int = 8
    codebook_size: int = 1024
    src_vocab: int = 256  # text/phoneme vocabulary, or the source codec's codebook size
    src_codebooks: int = 0  # 0: source is ids [B, L]; Ks > 0: source is codec codes [B, Ks, L]
    max_len_ratio: float = 20.0  # default generation budget: target frames per source token
    end_weight: float = 1.0  # loss weight of the end cell: one cell per row, so its signal is weak
    guided_attention: float = 0.0  # weight of the text-alignment prior (TTS); 0 = off
    guide_sigma: float = 0.2  # width of that prior's diagonal band (fraction of the utterance)
    aligned_positions: bool = False  # rotary positions put source token i at i * rate on the target's timeline
    frame_dropout: float = 0.0  # training: share of target input frames blanked, so the source must be used
    default_rate: float = 1.0  # target steps per source token at inference (training uses the true rate)
    aligned_source: bool = False  # each target step's input also sums in the source token of its frame
    durations: bool = False  # TTS: source tokens have lengths in frames (aligner in training, predictor in generation)
    duration_weight: float = 1.0  # weight of the duration predictor's loss (MSE of log(1 + frames))
    speaker_dim: int = 0  # TTS: a voice embedding [B, speaker_dim] (speechtok.tts.speaker) joins every audio input
    transformer: TransformerConfig = field(default_factory=TransformerConfig)

    def __post_init__(self) -> None:
        if isinstance(self.transformer, dict):  # from YAML / JSON
            self.transformer = TransformerConfig(**self.transformer)
        if self.aligned_source and self.src_codebooks == 0 and not self.durations:
            raise ValueError("aligned_source needs a codec source (src_codebooks > 0) or text with durations")
        if self.durations and self.src_codebooks:
            raise ValueError("durations are for text sources; a codec source shares the target's clock")


@dataclass
class LMOutput:
    loss: torch.Tensor  # the training objective: token loss plus the weighted auxiliary losses
    logits: torch.Tensor  # [B, S, H, V]: step s of the audio stream, predicted from what precedes it
    targets: torch.Tensor  # [B, S, H]: token ids, IGNORE where no loss is taken
    token_loss: torch.Tensor  # mean cross-entropy over target cells
    duration_loss: torch.Tensor | None = None  # MSE of the predicted log(1 + frames) per source token


class DurationPredictor(nn.Module):
    """log(1 + frames) of each source token from its embedding and its neighbours' (FastSpeech 2's
    convolutional predictor): the LM reads its source causally, but a phoneme's length also
    depends on what follows it."""

    def __init__(self, dim: int, kernel: int = 5, n_layers: int = 2) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, kernel, padding=kernel // 2) for _ in range(n_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(n_layers))
        self.out = nn.Linear(dim, 1)
        nn.init.constant_(self.out.bias, math.log1p(3.0))  # speech runs about 3 frames (50 Hz) per IPA symbol

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x [B, L, D], valid [B, L] -> [B, L]."""
        for conv, norm in zip(self.convs, self.norms):
            x = norm(F.relu(conv((x * valid[..., None]).transpose(1, 2))).transpose(1, 2))
        return self.out(x).squeeze(-1)


def _lengths(x: torch.Tensor, lengths: torch.Tensor | None, dim: int) -> torch.Tensor:
    if lengths is None:
        return torch.full((x.shape[0],), x.shape[dim], dtype=torch.long, device=x.device)
    return lengths.to(device=x.device, dtype=torch.long)


class TokenLM(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pattern: Pattern = make_pattern(cfg.pattern, cfg.n_codebooks, cfg.codebook_size)
        H, V, D = self.pattern.n_heads, self.pattern.vocab_size, cfg.transformer.dim
        self.src_emb = nn.Embedding(cfg.src_vocab * max(cfg.src_codebooks, 1), D)
        self.sep = nn.Parameter(torch.randn(D) * 0.02)
        self.audio_emb = nn.Embedding(H * V, D)
        if cfg.aligned_source:
            self.src_frame_emb = nn.Embedding(cfg.src_vocab * max(cfg.src_codebooks, 1), D)
            nn.init.zeros_(self.src_frame_emb.weight)
        if cfg.durations:
            self.duration = DurationPredictor(D)
        if cfg.speaker_dim:  # zero at first: a model warm-started without a voice starts as it was
            self.voice = nn.Linear(cfg.speaker_dim, D)
            nn.init.zeros_(self.voice.weight)
            nn.init.zeros_(self.voice.bias)
        self.transformer = Transformer(cfg.transformer)
        self.head = nn.Linear(D, H * V, bias=False)
        nn.init.normal_(self.src_emb.weight, std=0.02)
        nn.init.normal_(self.audio_emb.weight, std=0.02)
        nn.init.normal_(self.head.weight, std=0.02)
        self.register_buffer("head_offset", torch.arange(H) * V, persistent=False)

    # --- embedding and layout --------------------------------------------------------------
    def _embed_src(self, src: torch.Tensor, src_len: torch.Tensor, table: nn.Embedding | None = None) -> torch.Tensor:
        """[B, L, D] embeddings of the source (`table`: another per-codebook table than src_emb)."""
        Ks = self.cfg.src_codebooks
        if (src.dim() != 2) if Ks == 0 else (src.dim() != 3 or src.shape[1] != Ks):
            want = "[B, L]" if Ks == 0 else f"[B, {Ks}, L]"
            raise ValueError(f"source must be {want}, got {tuple(src.shape)}")
        valid = torch.arange(src.shape[-1], device=src.device) < src_len[:, None]
        if Ks:
            valid = valid[:, None]
        src = src.masked_fill(~valid, 0)
        if src.numel() and (int(src.min()) < 0 or int(src.max()) >= self.cfg.src_vocab):
            raise ValueError(
                f"source ids must lie in [0, {self.cfg.src_vocab}), got [{int(src.min())}, {int(src.max())}]"
            )
        if Ks == 0:
            return (self.src_emb if table is None else table)(src)
        offset = torch.arange(Ks, device=src.device)[None, :, None] * self.cfg.src_vocab
        return (self.src_emb if table is None else table)(src + offset).sum(1)

    def _embed_audio(self, steps: torch.Tensor) -> torch.Tensor:
        """Audio steps [B, S, H] -> [B, S, D] (sum of the heads' embeddings)."""
        return self.audio_emb(steps + self.head_offset).sum(-2)

    def _assemble(self, src, src_len, steps, n_steps, blank=None, aligned=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings [B, L, D] of [src_b, sep, steps_b[:n_steps_b]] per row, right-padded; lengths [B].
        Audio steps where `blank` [B, S] is set enter as zeros; `aligned` [B, S + 1, D] is added to
        the separator and the audio steps (the input that predicts step j gets aligned[:, j])."""
        xs, xa = self._embed_src(src, src_len), self._embed_audio(steps)
        if blank is not None:
            xa = xa.masked_fill(blank[..., None], 0.0)
        B, Ls = xs.shape[:2]
        xa = torch.cat([self.sep.to(xs.dtype).expand(B, 1, -1), xa], dim=1)
        if aligned is not None:
            xa = xa + aligned[:, : xa.shape[1]]
        cat = torch.cat([xs, xa], dim=1)
        lengths = src_len + 1 + n_steps
        p = torch.arange(int(lengths.max()), device=xs.device)[None]
        sl = src_len[:, None]
        # position p of a row is its source (p < sl), the separator (p == sl) or audio step p - sl - 1
        idx = torch.where(p < sl, p, Ls + p - sl).clamp(max=cat.shape[1] - 1)
        return cat.gather(1, idx[..., None].expand(-1, -1, cat.shape[-1])), lengths

    def _aligned_source(self, src, src_len, start, n_steps: int, durations=None) -> torch.Tensor | None:
        """[B, n_steps, D]: for each audio step, the source token of the frame it starts predicting
        (head 0; that frame's time on the source timeline, which begins at frame `start` [B]), zero
        where there is none. Codec sources are one token per frame; text tokens last `durations`
        frames. None unless `aligned_source`."""
        if not self.cfg.aligned_source:
            return None
        tokens = self._embed_src(src, src_len, self.src_frame_emb)  # [B, Ls, D]
        f = self.pattern.layout(n_steps)[0][:, 0].to(src.device)[None] - start[:, None]  # [B, n_steps]
        if durations is None:
            ok, idx = (f >= 0) & (f < src_len[:, None]), f
        else:
            ends = durations.cumsum(1)  # [B, Ls]: the first frame after each token
            ok = (f >= 0) & (f < ends[:, -1:])
            idx = torch.searchsorted(ends, f.clamp(min=0).contiguous(), right=True)
        idx = idx.clamp(0, tokens.shape[1] - 1)[..., None].expand(-1, -1, tokens.shape[-1])
        return tokens.gather(1, idx) * ok[..., None]

    def _with_voice(
        self, aligned: torch.Tensor | None, speaker, batch: int, n_steps: int, device
    ) -> torch.Tensor | None:
        """What `_assemble` adds to the separator and the audio steps [B, n_steps, D]: the aligned
        source, plus the projected voice embedding `speaker` [B, speaker_dim] on every step."""
        if not self.cfg.speaker_dim:
            if speaker is not None:
                raise ValueError("this model takes no speaker embedding (speaker_dim 0)")
            return aligned
        if speaker is None or tuple(speaker.shape) != (batch, self.cfg.speaker_dim):
            got = None if speaker is None else tuple(speaker.shape)
            raise ValueError(f"this model needs a speaker embedding [B={batch}, {self.cfg.speaker_dim}], got {got}")
        voice = self.voice(speaker.to(device=device, dtype=self.voice.weight.dtype))[:, None]
        return voice.expand(-1, n_steps, -1) if aligned is None else aligned + voice

    def _duration_positions(self, durations: torch.Tensor) -> torch.Tensor:
        """[B, Ls] timeline position (in steps) of each source token: the centre of its frames."""
        return (durations.cumsum(1) - durations / 2).float() * self.pattern.steps_per_frame

    def _log_durations(self, src, src_len) -> tuple[torch.Tensor, torch.Tensor]:
        """The duration predictor's log(1 + frames) [B, L] and the mask of real tokens [B, L]."""
        valid = torch.arange(src.shape[-1], device=src.device)[None] < src_len[:, None]
        return self.duration(self._embed_src(src, src_len), valid.float()), valid

    def predict_durations(self, src: torch.Tensor, src_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Frames [B, L] per source token (>= 1; 0 beyond each row's length) by the duration predictor."""
        if not self.cfg.durations:
            raise ValueError("this model has no duration predictor (durations: False)")
        pred, valid = self._log_durations(src, _lengths(src, src_lengths, -1))
        return (pred.exp() - 1).round().clamp(min=1).long() * valid

    def _positions(self, src_len, length: int, origin, rate, src_pos=None) -> torch.Tensor | None:
        """Rotary positions [B, length] of the assembled rows (None: token indices); `origin` [B]
        is the position of audio step 0 and source token i sits at i * rate [B] (target steps per
        source token) or, with durations, at src_pos [B, Ls]."""
        if not (self.cfg.aligned_positions or self.cfg.durations):
            return None
        i = torch.arange(length, device=src_len.device)[None].float()
        sl, origin = src_len[:, None].float(), origin[:, None].float()
        if src_pos is None:
            src_pos = i * rate[:, None].float()
        else:
            src_pos = F.pad(src_pos, (0, max(length - src_pos.shape[1], 0)))[:, :length]
        return torch.where(i < sl, src_pos, origin + i - sl - 1)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h).unflatten(-1, (self.pattern.n_heads, self.pattern.vocab_size))

    def steps_needed(self, n_frames):
        """Audio steps (an int, or a tensor for a tensor) that a row of `n_frames` target frames
        takes in the pattern's stream, the end token included: what a row costs in positions."""
        p = self.pattern
        return (
            torch.maximum(p.n_steps(n_frames), p.frame_step(n_frames) + 1)
            if torch.is_tensor(n_frames)
            else max(p.n_steps(n_frames), p.frame_step(n_frames) + 1)
        )

    def fits(self, n_src: int, n_frames: int) -> bool:
        """Whether a row (n_src source tokens, the separator, n_frames of audio (prompt included)
        and the end) fits the model's positions (`transformer.max_len`)."""
        return n_src + 2 + int(self.steps_needed(n_frames)) <= self.cfg.transformer.max_len

    # --- training --------------------------------------------------------------------------
    def forward(
        self,
        src: torch.Tensor,
        codes: torch.Tensor,
        src_lengths: torch.Tensor | None = None,
        code_lengths: torch.Tensor | None = None,
        prompt_lengths: torch.Tensor | None = None,
        blank_frames: torch.Tensor | None = None,
        src_durations: torch.Tensor | None = None,
        speaker: torch.Tensor | None = None,
    ) -> LMOutput:
        """Loss of audio `codes` [B, K, T] given `src`. Row b's codes are its prompt frames
        (the first prompt_lengths[b], no loss) followed by its target frames, code_lengths[b] in all;
        with `durations`, `src_durations` [B, L] are the target frames of each source token.
        `blank_frames` [B, T] (bool) blanks the input steps where those frames start (head 0), as
        frame dropout does in training: with one step per frame, what the model predicts without
        having seen them (e.g. a draft of the frame after). A model with `speaker_dim` takes the voice
        embedding `speaker` [B, speaker_dim] (`speechtok.tts.speaker.SpeakerEncoder` of a prompt)."""
        p = self.pattern
        src_len, T = _lengths(src, src_lengths, -1), _lengths(codes, code_lengths, -1)
        P = torch.zeros_like(T) if prompt_lengths is None else prompt_lengths.to(T)
        if bool((P > T).any()):
            raise ValueError("prompt_lengths must not exceed code_lengths")
        N = self.steps_needed(T)
        S = int(N.max())
        seq = p.interleave(codes, T)
        seq = F.pad(seq, (0, 0, 0, S - seq.shape[1]), value=p.pad_id)
        rows = torch.arange(len(T), device=T.device)
        seq[rows, p.frame_step(T), 0] = p.end_id
        frame = p.layout(S)[0].to(seq.device)  # [S, H]: the frame of each cell
        frame_in = frame[None, : S - 1, 0].expand(len(T), -1)  # frame of each input step (head 0)
        blank = torch.zeros_like(frame_in, dtype=torch.bool)
        if self.training and self.cfg.frame_dropout > 0:  # like Tacotron's prenet dropout: whole target frames
            drop = torch.rand(len(T), int(frame_in.max().clamp(min=0)) + 1, device=seq.device) < self.cfg.frame_dropout
            blank |= drop.gather(1, frame_in.clamp(min=0)) & (frame_in >= P[:, None])
        if blank_frames is not None:
            bf = blank_frames.to(seq.device, torch.bool)
            bf = F.pad(bf, (0, max(int(frame_in.max()) + 1 - bf.shape[-1], 0)))
            blank |= bf.gather(1, frame_in.clamp(min=0)) & (frame_in >= 0)
        dur = src_pos = None
        if self.cfg.durations:
            if src_durations is None:
                raise ValueError("a model with durations needs src_durations (frames per source token)")
            dur = _within(src_durations.to(device=src.device, dtype=torch.long), src_len)
            if bool((dur.sum(1) != T - P).any()):
                raise ValueError("src_durations must sum to each row's target frames (code - prompt lengths)")
            src_pos = self._duration_positions(dur)
        aligned = self._with_voice(self._aligned_source(src, src_len, P, S, dur), speaker, len(T), S, src.device)
        x, lengths = self._assemble(src, src_len, seq[:, : S - 1], N - 1, blank, aligned)
        guide = self.cfg.guided_attention > 0 and self.training
        rate = p.frame_step(T - P).float() / src_len.clamp(min=1).float()
        positions = self._positions(src_len, x.shape[1], -p.frame_step(P), rate, src_pos)
        scores = None
        if guide:  # head 0's attention scores of the probed blocks, for the alignment prior
            h, scores = self.transformer(x, positions=positions, probe_layers=self._probed())
        else:
            h = self.transformer(x, positions=positions)
        # the separator and each audio step predict the next audio step
        pos = (src_len[:, None] + torch.arange(S, device=h.device)).clamp(max=h.shape[1] - 1)
        logits = self._logits(h.gather(1, pos[..., None].expand(-1, -1, h.shape[-1])))
        keep = (seq != p.pad_id) & (frame[None] >= P[:, None, None])
        targets = seq.masked_fill(~keep, IGNORE)
        ce = F.cross_entropy(logits.float().flatten(0, 2), targets.flatten(), ignore_index=IGNORE, reduction="none")
        weight = keep.flatten().float()
        if self.cfg.end_weight != 1.0:
            weight = torch.where(targets.flatten() == p.end_id, self.cfg.end_weight, weight)
        token_loss = (ce * weight).sum() / weight.sum().clamp(min=1)
        loss, dur_loss = token_loss, None
        if scores is not None:
            loss = loss + self.cfg.guided_attention * self._guide_loss(scores, src_len, T, P)
        if dur is not None:
            pred, valid = self._log_durations(src, src_len)
            dur_loss = ((pred - torch.log1p(dur.float())) ** 2 * valid).sum() / valid.sum().clamp(min=1)
            loss = loss + self.cfg.duration_weight * dur_loss
        return LMOutput(loss, logits, targets, token_loss, dur_loss)

    def _probed(self) -> list[int]:
        """Indices of the blocks whose head 0 the alignment prior shapes: all but the first (its
        queries know little yet), or the only one."""
        n = len(self.transformer.blocks)
        return list(range(1, n)) or [0]

    def _guide_loss(self, scores: list[torch.Tensor], src_len, T, P) -> torch.Tensor:
        """Guided attention (Tachibana et al., DCTTS): head 0 of each probed layer, restricted to
        the source tokens, is pushed towards the diagonal - target frame n of N attends near source
        token n/N of the text. It gives a small model its text alignment within a few thousand
        steps instead of leaving it to emerge (or not) from the LM loss alone."""
        p, dev = self.pattern, src_len.device
        Ls, F_ = int(src_len.max()), int(T.max())
        frames = torch.arange(F_, device=dev)
        rows = (src_len[:, None] + p.frame_step(frames)[None]).clamp(max=scores[0].shape[1] - 1)  # query of frame f
        text = torch.arange(Ls, device=dev)[None, None] < src_len[:, None, None]  # [B, 1, Ls]
        n = (frames[None] - P[:, None]).float() / (T - P).clamp(min=1)[:, None].float()  # [B, F]
        t = torch.arange(Ls, device=dev)[None].float() / src_len[:, None].float()  # [B, Ls]
        far = 1 - torch.exp(-((n[..., None] - t[:, None]) ** 2) / (2 * self.cfg.guide_sigma**2))  # [B, F, Ls]
        valid = ((frames[None] >= P[:, None]) & (frames[None] < T[:, None])).float()  # target frames
        total = 0.0
        for s in scores:
            q = s.gather(1, rows[..., None].expand(-1, -1, s.shape[-1]))[..., :Ls]
            attn = q.masked_fill(~text, float("-inf")).softmax(-1)
            total = total + ((attn * far).sum(-1) * valid).sum() / valid.sum().clamp(min=1)
        return total / len(scores)

    # --- generation ------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor | None = None,
        prompt_codes: torch.Tensor | None = None,
        prompt_lengths: torch.Tensor | None = None,
        sampling: SamplingConfig | None = None,
        *,
        max_len: int | None = None,
        min_len: int = 0,
        rate=None,
        continue_prompt: bool = False,
        durations: torch.Tensor | None = None,
        speaker: torch.Tensor | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Continue each row's source (and optional audio prompt) with target audio.

        Inputs are right-padded: src [B, L] or [B, Ks, L] with src_lengths, prompt_codes
        [B, K, P] with prompt_lengths. Tokens are drawn as `sampling` says (`SamplingConfig`:
        temperature, top-k/top-p, repetition-aware redraw, end gate; default SamplingConfig()).
        Each row stops at its end token, or after `max_len` target frames (default:
        ceil(max_len_ratio * source length), capped by the model's max_len); no end before
        `min_len` frames. With aligned positions, `rate` (target steps per source token, a number or [B]; default
        cfg.default_rate) sets the expected length, and `continue_prompt` says the prompt is the
        start of the target itself (its transcript begins the source), not another clip. A model
        with `durations` renders each source token for `durations` [B, L] frames (default: its
        predictor's), counted from the prompt's start when continuing it, and ends exactly after
        them (`max_len` still caps the target length). `speaker`: the voice embedding of a model with
        `speaker_dim`. `seed` (or
        `generator`) makes sampling reproducible. Returns the target codes [B, K, T] (prompt
        not included; 0 beyond each row's length) and lengths [B].
        """
        was_training = self.training
        self.eval()
        try:
            return self._generate(
                src,
                src_lengths,
                prompt_codes,
                prompt_lengths,
                sampling or SamplingConfig(),
                max_len=max_len,
                min_len=min_len,
                rate=rate,
                continue_prompt=continue_prompt,
                durations=durations,
                speaker=speaker,
                seed=seed,
                generator=generator,
                use_cache=use_cache,
            )
        finally:
            self.train(was_training)

    def _generate(
        self,
        src,
        src_lengths,
        prompt_codes,
        prompt_lengths,
        sampling: SamplingConfig,
        *,
        max_len,
        min_len,
        rate,
        continue_prompt,
        durations,
        speaker,
        seed,
        generator,
        use_cache,
    ):
        p, dev = self.pattern, src.device
        B, V = src.shape[0], p.vocab_size
        src_len = _lengths(src, src_lengths, -1)
        if prompt_codes is None:
            prompt_codes, P = torch.zeros(B, p.n_codebooks, 0, dtype=torch.long, device=dev), torch.zeros_like(src_len)
        else:
            P = _lengths(prompt_codes, prompt_lengths, -1)
        if generator is None and seed is not None:
            generator = torch.Generator(device=dev).manual_seed(seed)

        # per-row frame budget, within the positions the model was built for
        src_pos = None
        if self.cfg.durations:  # the target is as long as its tokens' durations say
            dur = (
                self.predict_durations(src, src_len)
                if durations is None
                else _within(durations.to(dev).long(), src_len)
            )
            budget = dur.sum(1) - (P if continue_prompt else 0)
            if bool((budget < 1).any()):
                raise ValueError("durations leave no target frames (they must outlast the prompt)")
            if max_len is not None:
                budget = budget.clamp(max=max_len)
            min_len = budget
            src_pos = self._duration_positions(dur)
        elif max_len is None:
            budget = (src_len.double() * self.cfg.max_len_ratio).ceil().long().clamp(min=1)
        else:
            budget = torch.full_like(src_len, max_len)
        spf = p.steps_per_frame
        room = (self.cfg.transformer.max_len - src_len - max(p.tail, 1)).div(spf, rounding_mode="floor") - P
        if self.cfg.durations and bool((budget > room).any()):  # cutting it short would drop words
            raise ValueError(f"source + prompt + durations too long for max_len {self.cfg.transformer.max_len}")
        budget = torch.minimum(budget, room)
        if bool((budget < 1).any()):
            raise ValueError(f"source + prompt too long for max_len {self.cfg.transformer.max_len}")
        total = P + budget  # frames at which the end token is forced
        S = int(self.steps_needed(total).max())
        frame_tab, book_tab = (t.to(dev) for t in p.layout(S))

        # the audio stream so far: prompt cells, then whatever is generated
        steps = p.interleave(prompt_codes, P)
        steps = F.pad(steps, (0, 0, 0, S - steps.shape[1]), value=p.pad_id)
        step = p.frame_step(P)  # the next step each row predicts (steps before it are all prompt)
        start = torch.zeros_like(P) if continue_prompt else P  # frame where the source's timeline begins
        aligned = self._aligned_source(src, src_len, start, S + 1, dur if self.cfg.durations else None)
        aligned = self._with_voice(aligned, speaker, B, S + 1, dev)
        x, plen = self._assemble(src, src_len, steps, step, aligned=aligned)
        n_iter = int((self.steps_needed(total) - step).max())
        cap = x.shape[1] + n_iter
        rate = torch.as_tensor(self.cfg.default_rate if rate is None else rate, dtype=torch.float, device=dev)
        origin = torch.zeros_like(step) if continue_prompt else -step
        pos = self._positions(src_len, cap, origin, rate.expand(B), src_pos)
        if use_cache:
            cache = self.transformer.new_cache(B, cap, device=dev)
            h = self.transformer(x, cache=cache, lengths=plen, positions=None if pos is None else pos[:, : x.shape[1]])
        else:
            xbuf = x.new_zeros(B, cap, x.shape[-1])
            xbuf[:, : x.shape[1]] = x
            filled = x.shape[1]
            h = self.transformer(x, positions=None if pos is None else pos[:, :filled])
        rows = torch.arange(B, device=dev)
        last, cur = h[rows, plen - 1], plen.clone()

        vocab = torch.arange(V, device=dev)
        end_frame = torch.full_like(P, NOT_ENDED)  # frame at which each row emitted its end token
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        for _ in range(n_iter):
            s = step.clamp(max=S - 1)
            fr, bk = frame_tab[s], book_tab[s]  # [B, H]
            ended = end_frame != NOT_ENDED
            lo = p.offset(bk)[..., None]
            allowed = (vocab >= lo) & (vocab < lo + p.codebook_size)
            may_end = (bk[:, :1] == 0) & ~ended[:, None] & (fr[:, :1] >= (P + min_len)[:, None])
            allowed[:, :1] |= may_end[..., None] & (vocab == p.end_id)
            forced = torch.full_like(fr, -1)
            forced = torch.where((fr < 0) | (fr >= end_frame[:, None]), p.pad_id, forced)
            forced = torch.where((fr >= 0) & (fr < P[:, None]), steps[rows, s], forced)
            forced[:, 0] = torch.where(~ended & (fr[:, 0] == total), p.end_id, forced[:, 0])
            allowed = torch.where((forced >= 0)[..., None], vocab == forced[..., None], allowed)

            logits = self._logits(last).float().masked_fill(~allowed, float("-inf"))
            if sampling.end_threshold is not None:
                logits[:, 0] = gate_end(logits[:, 0], p.end_id, sampling.end_threshold, decide=forced[:, 0] < 0)
            history = token_history(steps, s, sampling.rep_window, spf)
            tok = sample(logits, sampling, history, generator)

            steps[rows, s] = torch.where(done[:, None], steps[rows, s], tok)
            new_end = ~done & ~ended & (tok[:, 0] == p.end_id)
            end_frame = torch.where(new_end, fr[:, 0], end_frame)
            done |= (end_frame != NOT_ENDED) & (step + 1 >= p.n_steps(end_frame.clamp(max=S)))
            if bool(done.all()):
                break
            xn = self._embed_audio(tok[:, None])
            if aligned is not None:  # the input that predicts step s + 1
                xn = xn + aligned[rows, s + 1][:, None]
            if use_cache:
                last = self.transformer(xn, cache=cache, positions=None if pos is None else pos[rows, cur][:, None])[
                    :, 0
                ]
            else:
                xbuf[rows, cur] = xn[:, 0]
                filled += 1
                last = self.transformer(xbuf[:, :filled], positions=None if pos is None else pos[:, :filled])[rows, cur]
            step, cur = step + 1, cur + 1

        lengths = end_frame.clamp(max=S) - P
        codes = p.deinterleave(steps, int((P + lengths).max()))
        T = int(lengths.max())
        idx = (P[:, None] + torch.arange(T, device=dev)).clamp(max=codes.shape[-1] - 1)
        codes = codes.gather(2, idx[:, None].expand(-1, p.n_codebooks, -1))
        return codes.masked_fill(torch.arange(T, device=dev)[None, None] >= lengths[:, None, None], 0), lengths

    # --- a source-free model as a prior over codes (speechtok.compress) ------------------------
    def prior_start(self, batch_size: int, n_steps: int) -> tuple[KVCache, torch.Tensor]:
        """A KV cache for `n_steps` audio steps of `batch_size` rows with no source, and the logits
        [B, H, V] of step 0 (read from the separator)."""
        cache = self.transformer.new_cache(batch_size, n_steps + 1, device=self.sep.device)
        h = self.transformer(self.sep.expand(batch_size, 1, -1), cache=cache)
        return cache, self._logits(h[:, -1])

    def prior_step(self, cache: KVCache, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one step's tokens [B, H] (pattern ids) and return the logits [B, H, V] of the next."""
        return self._logits(self.transformer(self._embed_audio(tokens[:, None]), cache=cache)[:, -1])

    @torch.no_grad()
    def expected_codes(
        self,
        src: torch.Tensor,
        codes: torch.Tensor,
        src_lengths: torch.Tensor | None = None,
        code_lengths: torch.Tensor | None = None,
        prompt_lengths: torch.Tensor | None = None,
        src_durations: torch.Tensor | None = None,
        speaker: torch.Tensor | None = None,
        *,
        blank_share: float = 0.0,
        passes: int = 1,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The model's mean code index [B, K, T] (float) of each frame of `codes` (e.g. its own
        greedy output), given the source and the codes before it (arguments as for `forward`).
        Meaningful for ordinal codebooks (dMel's quantised levels), where it is a finer estimate than
        any one code; a codec with `decode_levels` renders it.

        With `blank_share` > 0 it is the mean over `passes` passes that each blank that share of
        the target frames at random (drawn from `generator`), as frame dropout did in training:
        test-time dropout, an ensemble over contexts the model was trained on that leans less on
        its own, possibly wrong, previous frames."""
        if passes < 1 or not 0.0 <= blank_share < 1.0:
            raise ValueError(f"need passes >= 1 and 0 <= blank_share < 1, got {passes}, {blank_share}")
        T = _lengths(codes, code_lengths, -1)
        P = torch.zeros_like(T) if prompt_lengths is None else prompt_lengths.to(T)
        p, levels = self.pattern, torch.arange(self.pattern.codebook_size, device=codes.device)
        was_training = self.training
        self.eval()
        probs, n, ids = 0.0, passes if blank_share > 0 else 1, None
        try:
            for _ in range(n):
                blank = None
                if blank_share > 0:
                    draw = torch.rand(codes.shape[0], codes.shape[-1], generator=generator).to(codes.device)
                    blank = (draw < blank_share) & (torch.arange(codes.shape[-1], device=codes.device) >= P[:, None])
                logits = self.forward(
                    src,
                    codes,
                    src_lengths,
                    code_lengths,
                    prompt_lengths,
                    blank_frames=blank,
                    src_durations=src_durations,
                    speaker=speaker,
                ).logits
                if ids is None:  # each cell's codebook [1, S, H] and its level ids: the same every pass
                    lo = p.offset(p.layout(logits.shape[1])[1]).to(codes.device)[None]
                    ids = (lo[..., None] + levels).expand(logits.shape[0], -1, -1, -1)
                probs = probs + logits.float().gather(-1, ids).softmax(-1)  # the mean level is linear in them
        finally:
            self.train(was_training)
        return p.deinterleave((probs / n * levels).sum(-1) + lo, codes.shape[-1])  # deinterleave takes ids


def _within(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x [B, L] with the entries beyond each row's length zeroed."""
    return x * (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["IGNORE", "LMConfig", "LMOutput", "SamplingConfig", "TokenLM", "count_parameters"]
