"""speechtok: speech tokenizers (codecs) and token language models."""

__version__ = "0.1.0"
