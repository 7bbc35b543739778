"""Learned mel codecs that render with a dMel codec's vocoder by name (`vocoder_from`): the
vocoder is loaded from there, never saved with them, and a missing or mismatched source is a
clear error."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from speechtok.codecs import CodecError, DMelCodec, RVQCodec, load_codec

SMALL_VOCODER = {"dim": 32, "intermediate_dim": 64, "n_layers": 1}
SMALL_RVQ = {"n_codebooks": 2, "codebook_size": 16, "codebook_dim": 8, "dim": 32, "intermediate_dim": 64}
MEL = {"n_mels": 80, "n_fft": 1024, "win_length": 800, "f_min": 80.0, "f_max": 7600.0, "log_min": -11.5, "log_max": 2.0}


@pytest.fixture
def dmel_folder(tmp_path):
    torch.manual_seed(0)
    return DMelCodec(vocoder=SMALL_VOCODER).save_pretrained(tmp_path / "my-dmel", dtype=torch.float32)


def small_rvq(vocoder_from: str, **mel) -> RVQCodec:
    torch.manual_seed(1)
    return RVQCodec(**SMALL_RVQ, encoder_layers=1, decoder_layers=1, mel={**MEL, **mel}, vocoder_from=vocoder_from)


def test_borrowed_vocoder_is_loaded_not_saved(dmel_folder, tmp_path):
    codec = small_rvq(str(dmel_folder)).eval()
    source = load_codec(dmel_folder).vocoder.state_dict()
    assert all(torch.equal(v, source[k]) for k, v in codec.vocoder.state_dict().items())
    wav = torch.randn(1, 1, 16000) * 0.1
    codes = codec.encode(wav)  # the first encode initialises the codebooks (k-means)
    saved = codec.save_pretrained(tmp_path / "rvq", dtype=torch.float32)
    assert not any(k.startswith("frontend.vocoder.") for k in load_file(str(saved / "model.safetensors")))
    assert load_codec(saved).config()["vocoder_from"] == str(dmel_folder)
    assert torch.equal(load_codec(saved).decode(codes), codec.decode(codes))
    # the source's vocoder improves: every codec naming it decodes with the new one
    torch.manual_seed(5)
    DMelCodec(vocoder=SMALL_VOCODER).save_pretrained(dmel_folder, dtype=torch.float32)
    reloaded = load_codec(saved)
    assert torch.equal(reloaded.encode(wav), codes)  # same tokens
    assert not torch.equal(reloaded.decode(codes), codec.decode(codes))  # another rendering


def test_missing_or_mismatched_source_is_a_clear_error(dmel_folder, tmp_path):
    with pytest.raises(CodecError, match=r"renders with the vocoder of '.*nowhere', which does not load"):
        small_rvq(str(tmp_path / "nowhere"))
    with pytest.raises(CodecError, match=r"whose log-mel differs from this codec's \(f_max\)"):
        small_rvq(str(dmel_folder), f_max=8000.0)
    with pytest.raises(CodecError, match="which has no trained vocoder"):
        small_rvq("dmel-16k-gl")
