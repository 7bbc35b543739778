"""Training building blocks: the vocoder's STFT and phase losses, source/speaker-balanced crops, dev summaries."""

import math

import numpy as np
import pytest
import torch

from speechtok.data.manifest import Utterance
from speechtok.data.segments import balanced_weights, dev_summary
from speechtok.modules.losses import MultiResolutionSTFTLoss, PhaseLoss, anti_wrap


def speech_like(seconds=1.0, f0=140.0, sr=16000, shift=0):
    t = (np.arange(int(seconds * sr)) + shift) / sr
    wav = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 10)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return torch.from_numpy(0.2 * wav).float()[None, None]


def test_anti_wrap_is_the_angle_between_two_phases():
    x = torch.tensor([0.0, math.pi / 2, 2 * math.pi - 0.1, -3 * math.pi + 0.2, 4 * math.pi])
    assert torch.allclose(anti_wrap(x), torch.tensor([0.0, math.pi / 2, 0.1, math.pi - 0.2, 0.0]), atol=1e-5)


def test_phase_loss_sees_phase_that_magnitude_losses_miss():
    ref = speech_like()
    assert PhaseLoss()(ref, ref).item() == 0.0
    # a polarity flip keeps every magnitude, so the STFT loss cannot see it, and turns each phase by pi
    assert MultiResolutionSTFTLoss()(-ref, ref).item() < 1e-3
    assert PhaseLoss()(-ref, ref).item() == pytest.approx(math.pi, rel=0.02)  # instantaneous phase only
    # a 1-sample delay turns phases a little: a small loss, well below a wrong phase
    assert 0 < PhaseLoss()(speech_like(shift=1), ref).item() < 0.5


def test_stft_loss_gradient_finds_the_right_level():
    ref = speech_like(0.5)
    log_gain = torch.nn.Parameter(torch.tensor(math.log(0.2)))
    opt, loss_fn = torch.optim.Adam([log_gain], lr=0.05), MultiResolutionSTFTLoss()
    first = loss_fn(log_gain.exp() * ref, ref).item()
    for _ in range(80):
        opt.zero_grad()
        loss_fn(log_gain.exp() * ref, ref).backward()
        opt.step()
    assert loss_fn(log_gain.exp() * ref, ref).item() < 0.1 * first
    assert log_gain.exp().item() == pytest.approx(1.0, abs=0.05)


def utt(i, speaker, duration):
    return Utterance(f"u{i}", f"/x/{i}.wav", duration, speaker=speaker)


def test_balanced_weights_share_by_source_then_speaker_then_duration():
    one_voice = [utt(0, "a", 10.0), utt(1, "a", 30.0)]  # one long-talking speaker
    many = [utt(2, "b", 1.0), utt(3, "c", 1.0), utt(4, "", 2.0), utt(5, "", 1.0)]  # no id: each clip alone
    w = balanced_weights([one_voice, many], [1.0, 3.0])
    assert w.sum() == pytest.approx(1.0)
    assert w[:2].tolist() == pytest.approx([0.25 * 0.25, 0.25 * 0.75])
    assert w[2:].tolist() == pytest.approx([0.75 / 4] * 4)
    assert balanced_weights([one_voice, many])[:2].sum() == pytest.approx(0.5)  # equal shares by default
    with pytest.raises(ValueError, match="shares"):
        balanced_weights([one_voice, many], [1.0])


def test_dev_summary_selects_on_unseen_sets_only():
    rows = [("ls", 2.0, 0.9), ("ls", 3.0, 0.8), ("crowd", 1.0, 0.7), ("cathy", 4.0, 0.95)]
    s = dev_summary(rows, ["ls", "crowd"])
    assert s["ls_pesq_wb"] == 2.5 and s["crowd_pesq_wb"] == 1.0 and s["cathy_pesq_wb"] == 4.0
    assert s["pesq_wb"] == pytest.approx(1.75) and s["stoi"] == pytest.approx(0.775)  # cathy does not count


def test_copy_matching_warm_starts_a_causal_vocoder_with_another_head():
    """A causal vocoder with a 960-point iSTFT head from an offline one with 1280: the backbone is
    copied, the head (another shape) is named as new and keeps its own initialisation."""
    from speechtok.codecs.vocoder import Vocoder
    from speechtok.training import copy_matching

    torch.manual_seed(0)
    offline = Vocoder(80, 320, dim=16, intermediate_dim=32, n_layers=2)
    stream = Vocoder(80, 320, dim=16, intermediate_dim=32, n_layers=2, n_fft=960, causal=True)
    head = stream.head.out.weight.clone()
    assert copy_matching(stream, offline) == ["head.out.bias", "head.out.weight"]
    for name, tensor in offline.backbone.state_dict().items():
        assert torch.equal(stream.backbone.state_dict()[name], tensor), name
    assert torch.equal(stream.head.out.weight, head)
    assert copy_matching(offline, offline) == []


def test_a_deeper_warm_start_computes_what_its_source_did():
    """Block expansion (`grown_like`): a vocoder grown from 2 to 5 ConvNeXt blocks and a semantic
    decoder grown from 1 to 3 Transformer layers start as the identity in their added blocks, so the
    run begins exactly at its source; the added blocks are real blocks; a shallower target gets the
    source itself (copy_matching takes what fits)."""
    from speechtok.codecs.semantic import PromptedMelDecoder
    from speechtok.codecs.vocoder import Vocoder
    from speechtok.modules.encoder import ConvTransformer
    from speechtok.modules.vocos import ConvNeXtBlock
    from speechtok.training import grown_like

    torch.manual_seed(0)
    small, deep = (Vocoder(8, 160, dim=16, intermediate_dim=32, n_layers=n) for n in (2, 5))
    grown = grown_like(deep, small, "backbone.blocks.", ConvNeXtBlock.residual_outputs)
    assert len(grown.backbone.blocks) == 5 and grown is not deep
    mel = torch.randn(2, 8, 30)
    with torch.no_grad():
        assert torch.allclose(grown(mel), small(mel), atol=1e-6)
        grown.backbone.blocks[1].pwconv2.bias.add_(0.1)
        assert not torch.allclose(grown(mel), small(mel), atol=1e-4)
    assert grown_like(small, deep, "backbone.blocks.", ConvNeXtBlock.residual_outputs) is deep

    dims = dict(n_mels=8, dim=32, heads=2, conv_layers=1)
    small, deep = PromptedMelDecoder(32, **dims, layers=1), PromptedMelDecoder(32, **dims, layers=3)
    grown = grown_like(deep, small, "transformer.layers.", ConvTransformer.residual_outputs)
    codes, prompt_codes, prompt_mel = torch.randint(0, 32, (2, 10)), torch.randint(0, 32, (2, 5)), torch.rand(2, 8, 10)
    with torch.no_grad():
        assert torch.allclose(grown(codes, prompt_codes, prompt_mel), small(codes, prompt_codes, prompt_mel), atol=1e-6)
        grown.transformer.layers[1].linear2.bias.add_(0.1 * torch.randn(32))
        assert not torch.allclose(grown(codes, prompt_codes, prompt_mel), small(codes, prompt_codes, prompt_mel))


def test_copy_own_warm_starts_a_codec_but_keeps_the_vocoder_it_borrows():
    """A codec carrying its own (old) vocoder copy warm-starts one that borrows `dmel-16k`'s: the
    encoder, quantiser and decoder are copied, the borrowed vocoder is not overwritten."""
    from speechtok.codecs import load_codec
    from speechtok.codecs.rvq import RVQCodec
    from speechtok.training import copy_own

    dmel = load_codec("dmel-16k")
    mel = {k: v for k, v in dmel.token_config().items() if k not in ("sample_rate", "frame_rate", "n_bins")}
    size = dict(n_codebooks=2, codebook_size=16, dim=16, intermediate_dim=32, encoder_layers=1, decoder_layers=1)
    torch.manual_seed(0)
    old = RVQCodec(**size, mel=mel, vocoder={"dim": 16, "intermediate_dim": 32, "n_layers": 1})
    new = RVQCodec(**size, mel=mel, vocoder_from="dmel-16k")
    vocoder = {k: v.clone() for k, v in new.frontend.vocoder.state_dict().items()}
    copy_own(new, old)
    for name, tensor in old.own_state_dict().items():
        if not name.startswith("frontend.vocoder."):
            assert torch.equal(new.state_dict()[name], tensor), name
    assert all(torch.equal(new.frontend.vocoder.state_dict()[k], v) for k, v in vocoder.items())
    with pytest.raises(RuntimeError, match="size mismatch"):
        copy_own(old, new)  # old's own vocoder is another size than the one new borrows
