"""Token language models (decoder-only Transformer); see issue 5."""

from speechtok.lm.model import IGNORE, LMConfig, LMOutput, TokenLM, count_parameters
from speechtok.lm.patterns import PATTERNS, Pattern, make_pattern
from speechtok.lm.transformer import KVCache, Transformer, TransformerConfig

__all__ = ["IGNORE", "KVCache", "LMConfig", "LMOutput", "PATTERNS", "Pattern", "TokenLM", "Transformer",
           "TransformerConfig", "count_parameters", "make_pattern"]
