"""Token language models (decoder-only Transformer), their patterns and checkpoints, and the runner base the
task packages build on (`speechtok.lm.runner`); TTS is in `speechtok.tts`, enhancement in `speechtok.enhance`."""

from speechtok.lm.model import IGNORE, LMConfig, LMOutput, TokenLM, count_parameters
from speechtok.lm.patterns import PATTERNS, Pattern, make_pattern
from speechtok.lm.sampling import SamplingConfig
from speechtok.lm.transformer import KVCache, Transformer, TransformerConfig

__all__ = [
    "IGNORE",
    "KVCache",
    "LMConfig",
    "LMOutput",
    "PATTERNS",
    "Pattern",
    "SamplingConfig",
    "TokenLM",
    "Transformer",
    "TransformerConfig",
    "count_parameters",
    "make_pattern",
]
