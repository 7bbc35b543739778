"""Streaming encode and decode for causal codecs (`Codec.streaming`): `codec.stream_encoder()` takes
audio chunks of any size and returns the codes of every frame they complete; `codec.stream_decoder()`
takes codes and returns the samples that are final. Both equal the offline `encode` / `decode` of
the same model (tests feed random chunk sizes). A frame's codes are out when its hop of samples is
in; its audio is out `stream_lookahead` samples later: `algorithmic_latency_ms` in all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class StreamEncoder(ABC):
    """Audio in, codes out, as it arrives (one stream, batch 1)."""

    def __init__(self, codec, n_codebooks: int | None = None) -> None:
        self.codec, self.k = codec, codec.check_n_codebooks(n_codebooks)
        self.pending = torch.zeros(1, 1, 0, device=codec.device)

    @abstractmethod
    def frames(self, wav: torch.Tensor) -> torch.Tensor:
        """Codes [1, max_codebooks, m] of the next m frames, for their samples [1, 1, m*hop]."""

    @torch.inference_mode()
    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """Codes [1, K, m] of the m frames this chunk ([T], [1, T] or [1, 1, T]) completes (m may be 0)."""
        chunk = torch.as_tensor(chunk).reshape(1, 1, -1)
        if chunk.shape[-1]:
            chunk = self.codec.validate_wav(chunk, "stream chunk").to(self.pending)
        x = torch.cat([self.pending, chunk], dim=-1)
        m = x.shape[-1] // self.codec.hop_length
        self.pending = x[..., m * self.codec.hop_length :]
        if m == 0:
            return torch.zeros(1, self.k, 0, dtype=torch.long, device=x.device)
        return self.frames(x[..., : m * self.codec.hop_length])[:, : self.k]

    @torch.inference_mode()
    def flush(self) -> torch.Tensor:
        """The codes of a last partial frame (zero-padded, as `encode` pads the end); then the stream is done."""
        if not self.pending.shape[-1]:
            return torch.zeros(1, self.k, 0, dtype=torch.long, device=self.pending.device)
        x = nn.functional.pad(self.pending, (0, self.codec.hop_length - self.pending.shape[-1]))
        self.pending = self.pending[..., :0]
        return self.frames(x)[:, : self.k]


class StreamDecoder(ABC):
    """Codes in, audio out, as they arrive (one stream, batch 1)."""

    def __init__(self, codec) -> None:
        self.codec = codec

    @abstractmethod
    def samples(self, codes: torch.Tensor) -> torch.Tensor:
        """Final samples [1, 1, n] after the next codes [1, K, m] (checked)."""

    @abstractmethod
    def end(self) -> torch.Tensor:
        """The samples still held back at the end of the stream."""

    @torch.inference_mode()
    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """The samples [1, 1, n] that are final once these codes [1, K, m] are in."""
        return self.samples(self.codec.check_codes(codes))

    @torch.inference_mode()
    def flush(self) -> torch.Tensor:
        """The rest: all pushes and the flush together are `decode` of all the codes."""
        return self.end()
