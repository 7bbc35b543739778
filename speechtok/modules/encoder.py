"""A sequence encoder for frame-rate token models: ConvNeXt blocks, then Transformer layers."""

from __future__ import annotations

import torch
from torch import nn

from speechtok.modules.vocos import ConvNeXtBlock


class ConvTransformer(nn.Module):
    """[B, F, dim] -> [B, F, dim]. The ConvNeXt blocks give local order (there is no positional
    table, so any length works), the pre-norm Transformer layers global context; a final LayerNorm.
    Subclasses add their own input embeddings and output heads."""

    # a Transformer layer's writes to the residual stream: zeroed, the layer is the identity (grow_depth)
    residual_outputs = ("self_attn.out_proj.weight", "self_attn.out_proj.bias", "linear2.weight", "linear2.bias")

    def __init__(self, dim: int = 256, heads: int = 4, layers: int = 4, conv_layers: int = 2) -> None:
        super().__init__()
        self.convs = nn.ModuleList(ConvNeXtBlock(dim, 3 * dim, 1 / conv_layers) for _ in range(conv_layers))
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def encode(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """`x` [B, F, dim]; `padding` [B, F], True where a frame is padding (not attended to)."""
        x = x.transpose(1, 2)
        for block in self.convs:
            x = block(x)
        return self.norm(self.transformer(x.transpose(1, 2), src_key_padding_mask=padding))
