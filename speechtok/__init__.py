"""speechtok: speech tokenizers (codecs) and token language models."""

__version__ = "0.1.0"

from speechtok.codecs import available_codecs, load_codec

__all__ = ["available_codecs", "load_codec", "__version__"]
