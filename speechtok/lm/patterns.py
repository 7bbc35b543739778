"""Multi-codebook patterns: how codes [B, K, T] become a stream of LM steps [B, S, H].

At each step the LM reads and predicts `n_heads` (H) tokens, one per output head, each from
a vocabulary of `vocab_size` ids: the codebook's content ids, then `pad_id` (a cell that holds
no code) and `end_id` (end of audio; the model emits it on head 0). A pattern is fully
described by its layout: which frame and which codebook every (step, head) cell holds. From
that one table come `interleave`, its exact inverse `deinterleave`, the loss mask over prompt
frames and the decoding constraints in `speechtok.lm.model`, so they cannot disagree.

- `single`   K=1: one token per step, step t = frame t.
- `flatten`  K codebooks frame-major in one stream (K*T steps, one head). Token ids are
             offset per codebook (codebook k, code c -> k*codebook_size + c), so a single
             embedding table and head know which codebook a token belongs to.
- `delay`    MusicGen delay: codebook k is shifted right by k frames (pad-filled), K heads
             predict the K tokens of a step; T + K - 1 steps.
- `parallel` all K codebooks of a frame in one step (embeddings summed), K heads; T steps.
             This is what dMel's 80 independent channels x 16 bins need (as in the dMel paper).
"""

from __future__ import annotations

import torch


class Pattern:
    """Base class; subclasses set `name`, `n_heads`, `steps_per_frame`, `tail` and `layout`."""

    name: str
    steps_per_frame: int = 1  # steps until head 0 starts the next frame
    tail: int = 0  # extra steps after the last frame (delay: K - 1)

    def __init__(self, n_codebooks: int, codebook_size: int) -> None:
        if n_codebooks < 1 or codebook_size < 1:
            raise ValueError(
                f"{self.name} pattern: need n_codebooks >= 1 and codebook_size >= 1, got {n_codebooks}, {codebook_size}"
            )
        self.n_codebooks, self.codebook_size = n_codebooks, codebook_size

    @property
    def n_heads(self) -> int:
        return self.n_codebooks

    @property
    def n_content(self) -> int:
        """Content ids per head (before pad and end)."""
        return self.codebook_size

    @property
    def pad_id(self) -> int:
        return self.n_content

    @property
    def end_id(self) -> int:
        return self.n_content + 1

    @property
    def vocab_size(self) -> int:
        return self.n_content + 2

    def offset(self, book: torch.Tensor) -> torch.Tensor:
        """First id of each codebook in its head's vocabulary."""
        return torch.zeros_like(book)

    def layout(self, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(frame, book), both long [n_steps, H]: the cell's frame (< 0: always pad) and codebook."""
        raise NotImplementedError

    def n_steps(self, n_frames):
        """Steps holding `n_frames` frames (int or long tensor)."""
        return n_frames * self.steps_per_frame + self.tail * (n_frames > 0)

    def n_frames(self, n_steps: int) -> int:
        return max(n_steps - self.tail, 0) // self.steps_per_frame

    def frame_step(self, frame):
        """The step at which head 0 starts `frame`; the end token goes there after the last frame."""
        return frame * self.steps_per_frame

    def interleave(self, codes: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, K, T] -> steps [B, n_steps(T), H]; frames >= lengths[b] become pad."""
        if codes.dim() != 3 or codes.shape[1] != self.n_codebooks:
            raise ValueError(
                f"{self.name} pattern: expected codes [B, {self.n_codebooks}, T], got {tuple(codes.shape)}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(
                f"{self.name} pattern: codes must lie in [0, {self.codebook_size}), "
                f"got [{int(codes.min())}, {int(codes.max())}]"
            )
        B, _, T = codes.shape
        frame, book = (t.to(codes.device) for t in self.layout(self.n_steps(T)))
        valid = (frame >= 0) & (frame < T)
        seq = codes.new_full((B, *frame.shape), self.pad_id)
        seq[:, valid] = codes[:, book[valid], frame[valid]] + self.offset(book[valid])
        if lengths is not None:
            seq = seq.masked_fill(frame[None] >= lengths.to(codes.device)[:, None, None], self.pad_id)
        return seq

    def deinterleave(self, seq: torch.Tensor, n_frames: int | None = None) -> torch.Tensor:
        """steps [B, S, H] -> codes [B, K, T], T = n_frames or as many as S steps hold."""
        if seq.dim() != 3 or seq.shape[2] != self.n_heads:
            raise ValueError(f"{self.name} pattern: expected steps [B, S, {self.n_heads}], got {tuple(seq.shape)}")
        B, S, _ = seq.shape
        T = self.n_frames(S) if n_frames is None else n_frames
        if self.n_steps(T) > S:
            raise ValueError(f"{self.name} pattern: {T} frames need {self.n_steps(T)} steps, got {S}")
        frame, book = (t.to(seq.device) for t in self.layout(S))
        valid = (frame >= 0) & (frame < T)
        codes = seq.new_zeros(B, self.n_codebooks * T)
        codes[:, book[valid] * T + frame[valid]] = seq[:, valid] - self.offset(book[valid])
        return codes.view(B, self.n_codebooks, T)


class Single(Pattern):
    name = "single"

    def __init__(self, n_codebooks: int, codebook_size: int) -> None:
        if n_codebooks != 1:
            raise ValueError(f"single pattern: needs n_codebooks == 1, got {n_codebooks}")
        super().__init__(n_codebooks, codebook_size)

    def layout(self, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        frame = torch.arange(n_steps)[:, None]
        return frame, torch.zeros_like(frame)


class Flatten(Pattern):
    name = "flatten"

    def __init__(self, n_codebooks: int, codebook_size: int) -> None:
        super().__init__(n_codebooks, codebook_size)
        self.steps_per_frame = n_codebooks

    @property
    def n_heads(self) -> int:
        return 1

    @property
    def n_content(self) -> int:
        return self.n_codebooks * self.codebook_size

    def offset(self, book: torch.Tensor) -> torch.Tensor:
        return book * self.codebook_size

    def layout(self, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.arange(n_steps)[:, None]
        return s // self.n_codebooks, s % self.n_codebooks


class Delay(Pattern):
    name = "delay"

    def __init__(self, n_codebooks: int, codebook_size: int) -> None:
        super().__init__(n_codebooks, codebook_size)
        self.tail = n_codebooks - 1

    def layout(self, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = torch.arange(self.n_codebooks)[None]
        return torch.arange(n_steps)[:, None] - k, k.expand(n_steps, -1)


class Parallel(Pattern):
    name = "parallel"

    def layout(self, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = torch.arange(self.n_codebooks)[None]
        return torch.arange(n_steps)[:, None].expand(-1, self.n_codebooks), k.expand(n_steps, -1)


PATTERNS: dict[str, type[Pattern]] = {p.name: p for p in (Single, Flatten, Delay, Parallel)}


def make_pattern(name: str, n_codebooks: int, codebook_size: int) -> Pattern:
    if name not in PATTERNS:
        raise ValueError(f"unknown pattern {name!r}; choose from {sorted(PATTERNS)}")
    return PATTERNS[name](n_codebooks, codebook_size)
