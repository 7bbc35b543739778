"""Decoder-only Transformer over embeddings: pre-norm RMSNorm, RoPE, SwiGLU, SDPA, KV cache.

Batches are right-padded. A full forward is plain causal attention: a row's padding comes
after its tokens, so it is never attended to. Incremental decoding keeps a pre-allocated
`KVCache` with its own position per row, so rows of different lengths decode in lock-step
without left-padding or position shifts; the attention mask hides each row's unused slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TransformerConfig:
    dim: int = 512
    n_layers: int = 8
    n_heads: int = 8
    mlp_ratio: float = 4.0  # SwiGLU hidden size = 2/3 * mlp_ratio * dim (same cost as a GELU MLP)
    max_len: int = 4096  # longest sequence (positions) the model is meant to see
    dropout: float = 0.0
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.n_heads} heads of even size")

    @classmethod
    def tiny(cls, **kw) -> TransformerConfig:
        """A few thousand parameters per layer: for tests."""
        return cls(**{"dim": 64, "n_layers": 2, "n_heads": 4, "max_len": 512, **kw})


class KVCache:
    """Per-layer key/value buffers [B, n_heads, max_len, head_dim] and each row's length `pos`."""

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_heads: int,
        head_dim: int,
        max_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (batch_size, n_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.pos = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.max_len = max_len
        self.filled = 0  # upper bound of pos, kept on the host to avoid device syncs

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, H, L, hd] at each row's positions pos..pos+L-1; return keys/values so far."""
        L = k.shape[2]
        if self.filled + L > self.max_len:
            raise ValueError(f"KV cache full ({self.filled} + {L} > max_len {self.max_len})")
        idx = (self.pos[:, None] + torch.arange(L, device=k.device))[:, None, :, None].expand_as(k)
        self.k[layer].scatter_(2, idx, k.to(self.k[layer].dtype))
        self.v[layer].scatter_(2, idx, v.to(self.v[layer].dtype))
        end = self.filled + L
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n: int | torch.Tensor) -> None:
        """Move rows on by n tokens (an int, or per-row counts after a right-padded prefill)."""
        self.pos += n
        self.filled = int(self.pos.max()) if torch.is_tensor(n) else self.filled + n


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on the two halves of the head dimension."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.n_heads, self.dropout = cfg.n_heads, cfg.dropout
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(
        self, x, cos, sin, mask, cache: KVCache | None, layer: int, probe: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(output, head 0's pre-softmax attention scores [B, L, L] when `probe`, else None)."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        scores = None
        if probe:  # [B, L, L] pre-softmax, for an alignment loss (full forward only, checked by Transformer)
            scores = (q[:, 0].float() @ k[:, 0].float().transpose(-1, -2)) * q.shape[-1] ** -0.5
        if cache is not None:
            k, v = cache.update(layer, k, v)
        y = F.scaled_dot_product_attention(
            q,
            k.to(q.dtype),
            v.to(q.dtype),
            attn_mask=mask,
            is_causal=mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(y.transpose(1, 2).reshape(B, L, D)), scores


class SwiGLU(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        hidden = 8 * round(cfg.mlp_ratio * cfg.dim * 2 / 3 / 8)
        self.gate_up = nn.Linear(cfg.dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(cfg.dim, eps=1e-6), nn.RMSNorm(cfg.dim, eps=1e-6)
        self.attn, self.mlp = Attention(cfg), SwiGLU(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, mask, cache, layer, probe: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(output, head 0's attention scores when `probe`, else None; see `Attention`)."""
        y, scores = self.attn(self.norm1(x), cos, sin, mask, cache, layer, probe)
        x = x + self.drop(y)
        return x + self.drop(self.mlp(self.norm2(x))), scores


class Transformer(nn.Module):
    """Embeddings [B, L, dim] -> hidden states [B, L, dim] (final RMSNorm applied)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.dim, eps=1e-6)
        hd = cfg.dim // cfg.n_heads
        self.register_buffer("inv_freq", cfg.rope_base ** (-torch.arange(0, hd, 2).float() / hd), persistent=False)
        self.apply(self._init)
        for b in self.blocks:  # keep the residual stream's variance flat with depth
            nn.init.normal_(b.attn.out.weight, std=0.02 / (2 * cfg.n_layers) ** 0.5)
            nn.init.normal_(b.mlp.down.weight, std=0.02 / (2 * cfg.n_layers) ** 0.5)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)

    def new_cache(self, batch_size: int, max_len: int, device=None, dtype: torch.dtype | None = None) -> KVCache:
        """A cache for `batch_size` rows of up to `max_len` positions; dtype follows autocast if on."""
        device = torch.device(device) if device is not None else self.inv_freq.device
        if dtype is None:
            dtype = (
                torch.get_autocast_dtype(device.type)
                if torch.is_autocast_enabled(device.type)
                else self.norm.weight.dtype
            )
        c = self.cfg
        return KVCache(c.n_layers, batch_size, c.n_heads, c.dim // c.n_heads, max_len, device, dtype)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        lengths: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        probe_layers: Sequence[int] | None = None,
    ):
        """Hidden states [B, L, dim] of x [B, L, dim]. With a cache, x continues each row at
        cache.pos; the cache then advances by `lengths` (valid tokens per row of a right-padded x)
        or by L. `positions` [B, L] (any real numbers) replaces the token index as the rotary
        position; causality still follows the index.

        With `probe_layers` (block indices; full forward only, no cache) it returns
        (hidden states, scores): scores[j] is head 0's pre-softmax attention [B, L, L] in block
        probe_layers[j], e.g. for an alignment loss. Nothing is kept on the modules."""
        if probe_layers is not None and cache is not None:
            raise ValueError("attention probes need a full forward (no cache)")
        probe = set(probe_layers or ())
        kept: dict[int, torch.Tensor] = {}
        B, L, _ = x.shape
        steps = torch.arange(L, device=x.device)
        if cache is None:
            if L > self.cfg.max_len:
                raise ValueError(f"sequence of {L} positions exceeds max_len {self.cfg.max_len}")
            pos, mask = steps[None], None
        else:
            pos = cache.pos[:, None] + steps  # [B, L]
            # First chunk into an empty cache: plain causal attention. Later: key j visible to the
            # query at position p iff j <= p (each row's slots beyond its position hold stale data).
            keys = torch.arange(cache.filled + L, device=x.device)
            mask = None if cache.filled == 0 else (keys[None, None] <= pos[:, :, None])[:, None]
        if positions is not None:
            pos = positions
        angles = pos[..., None].float() * self.inv_freq  # [B|1, L, hd/2]
        cos, sin = angles.cos()[:, None], angles.sin()[:, None]
        for i, block in enumerate(self.blocks):
            x, scores = block(x, cos, sin, mask, cache, i, i in probe)
            if scores is not None:
                kept[i] = scores
        if cache is not None:
            cache.advance(L if lengths is None else lengths.to(cache.pos.device))
        if probe_layers is None:
            return self.norm(x)
        return self.norm(x), [kept[i] for i in probe_layers]


def grow_depth(
    state: dict[str, torch.Tensor],
    n_old: int,
    n_new: int,
    prefix: str = "transformer.blocks.",
    outputs: tuple[str, ...] = ("attn.out.weight", "mlp.down.weight"),
) -> dict[str, torch.Tensor]:
    """The state dict of `n_old` blocks grown to `n_new` that computes exactly what it did
    (block expansion, as in LLaMA Pro): the new blocks, spread evenly, each copy the block below
    them with their attention and MLP output projections (`outputs`, names within a block) zeroed,
    so each starts as the identity on the residual stream and fine-tuning adds capacity without
    first losing what was learnt. The defaults name this module's blocks; a pre-norm
    `nn.TransformerEncoder` passes its own (`ConvTransformer.residual_outputs`)."""
    if not 0 < n_old <= n_new:
        raise ValueError(f"cannot grow {n_old} blocks to {n_new}")
    extra = n_new - n_old
    copies = [0] * n_old  # new blocks after each old one: after blocks 1 and 3 for 4 -> 6
    for j in range(extra):
        copies[max(0, (j + 1) * n_old // extra - 1)] += 1
    order = [(i, c > 0) for i in range(n_old) for c in range(1 + copies[i])]
    out = {k: v for k, v in state.items() if not k.startswith(prefix)}
    for new, (old, is_copy) in enumerate(order):
        for key, value in state.items():
            if key.startswith(f"{prefix}{old}."):
                name = key[len(f"{prefix}{old}.") :]
                zero = is_copy and name in outputs
                out[f"{prefix}{new}.{name}"] = torch.zeros_like(value) if zero else value.clone()
    return out
