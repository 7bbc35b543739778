"""bench/lm_speed.py's self-draft acceptance: 1 when the audio history is ignored, below 1 when used."""

import importlib.util
from pathlib import Path

import pytest
import torch

from speechtok.lm import LMConfig, TokenLM, TransformerConfig

pytestmark = pytest.mark.usefixtures("one_thread")

_spec = importlib.util.spec_from_file_location(
    "lm_speed", Path(__file__).resolve().parents[1] / "bench" / "lm_speed.py"
)
lm_speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lm_speed)


def _lm(K: int = 4) -> TokenLM:
    torch.manual_seed(0)
    lm = TokenLM(
        LMConfig(pattern="parallel", n_codebooks=K, codebook_size=8, src_vocab=10, transformer=TransformerConfig.tiny())
    ).eval()
    with torch.no_grad():
        for p in lm.parameters():
            p.mul_(5)  # outputs depend strongly on the context
    return lm


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_draft_acceptance_is_one_when_the_previous_frame_is_not_used(temperature):
    lm = _lm()
    src, src_len = torch.randint(0, 10, (1, 6)), torch.tensor([6])
    prompt, target = torch.randint(0, 8, (4, 3)), torch.randint(0, 8, (4, 12))
    with torch.no_grad():
        lm.audio_emb.weight.zero_()  # audio inputs all look alike: a blank changes nothing
    res = lm_speed.draft_acceptance(lm, src, src_len, prompt, target, temperature, chunk=5)
    assert res == {"frames": 11, "accept": 1.0, "per_head": 1.0}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_draft_acceptance_falls_when_the_previous_frame_matters(temperature):
    lm = _lm()
    src, src_len = torch.randint(0, 10, (1, 6)), torch.tensor([6])
    prompt, target = torch.randint(0, 8, (4, 3)), torch.randint(0, 8, (4, 12))
    res = lm_speed.draft_acceptance(lm, src, src_len, prompt, target, temperature, chunk=5)
    assert 0.0 <= res["accept"] <= res["per_head"] < 1.0


def test_draft_acceptance_of_a_durations_model_reads_its_durations():
    torch.manual_seed(0)
    lm = TokenLM(
        LMConfig(
            pattern="parallel",
            n_codebooks=4,
            codebook_size=8,
            src_vocab=10,
            durations=True,
            aligned_source=True,
            transformer=TransformerConfig.tiny(),
        )
    ).eval()
    src, src_len = torch.randint(0, 10, (1, 6)), torch.tensor([6])
    prompt, target = torch.randint(0, 8, (4, 3)), torch.randint(0, 8, (4, 12))
    with pytest.raises(ValueError, match="needs src_durations"):
        lm_speed.draft_acceptance(lm, src, src_len, prompt, target, 0.0)
    res = lm_speed.draft_acceptance(lm, src, src_len, prompt, target, 0.0, durations=torch.tensor([[2] * 6]))
    assert res["frames"] == 11 and 0.0 <= res["accept"] <= res["per_head"] <= 1.0
