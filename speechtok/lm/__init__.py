"""Token language models (decoder-only Transformer); see issue 5."""
