"""Gain refiner: a small convolutional net between an enhancer's clean levels and the band gains
that filter the noisy input (`speechtok.enhance.filter.BandGainFilter.apply`).

The token LM sees the noisy input only as 16 coarse levels (7.8 dB apart) and predicts each
cell's expected clean level on its own; the gains then divide that by the fine noisy log-mel.
The refiner reads what the LM's rows say (their mean gain, their spread over the input gains,
the mean level against the noisy log-mel) beside the fine noisy log-mel itself, over a few frames
of context, and corrects the log gain. Its last layer starts at zero, so an untrained refiner
is exactly the plain average of the rows' gains. Trained by `recipes/lm/enhance/train_refiner.py`
to match the clean signal's own gains (L1 of log gains); stored beside the LM as
`refiner.safetensors`, its settings under `refiner` in the model's config.json.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from speechtok.enhance.filter import GAIN_FLOOR
from speechtok.errors import cannot
from speechtok.lm.checkpoint import CheckpointError, load_weights, read_weights

FILE = "refiner.safetensors"


class GainRefiner(nn.Module):
    def __init__(
        self,
        n_mels: int = 80,
        hidden: int = 128,
        kernel: int = 5,
        floor: float = GAIN_FLOOR,
        dilations: tuple[int, ...] = (1,),
    ):
        """`dilations`: one hidden convolution each, so the context grows with their sum (noise is
        told from speech over longer spans than a syllable)."""
        super().__init__()
        self.n_mels, self.hidden, self.kernel, self.floor = n_mels, hidden, kernel, floor
        self.dilations = tuple(int(d) for d in dilations)
        layers: list[nn.Module] = [nn.Conv1d(4 * n_mels, hidden, kernel, padding=kernel // 2), nn.GELU()]
        for d in self.dilations:
            layers += [nn.Conv1d(hidden, hidden, kernel, padding=d * (kernel // 2), dilation=d), nn.GELU()]
        self.net = nn.Sequential(*layers, nn.Conv1d(hidden, n_mels, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    @property
    def context_frames(self) -> int:
        """Frames each side that one output frame reads."""
        return (self.kernel // 2) * (1 + sum(self.dilations))

    def config(self) -> dict:
        return {
            "n_mels": self.n_mels,
            "hidden": self.hidden,
            "kernel": self.kernel,
            "floor": self.floor,
            "dilations": list(self.dilations),
        }

    def mean_gain(self, noisy_log_mel: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Log of the rows' average gain [B, M, F], each clipped to [floor, 1]: what the enhancer
        applies without a refiner."""
        low = math.log(self.floor)
        return (targets - noisy_log_mel[:, None]).clamp(low, 0).exp().mean(1).log()

    def forward(self, noisy_log_mel: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Log gains [B, M, F] in [log floor, 0] from the noisy log-mel [B, M, F] and the clean
        log-mel targets of R rows [B, R, M, F], all in the unscaled input's terms."""
        base = self.mean_gain(noisy_log_mel, targets)
        x = torch.cat([base, targets.mean(1) - noisy_log_mel, targets.std(1, unbiased=False), noisy_log_mel / 5], 1)
        return (base + self.net(x)).clamp(math.log(self.floor), 0)

    def save(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        path = Path(directory) / FILE
        save_file({k: v.to(dtype).contiguous() for k, v in self.state_dict().items()}, str(path))
        return path

    @classmethod
    def load(cls, directory: str | Path, config: dict) -> GainRefiner:
        """The refiner stored in a model folder; a missing or mismatched file is an error naming it."""
        path = Path(directory) / FILE
        try:
            refiner = cls(**config)
        except TypeError as exc:
            raise CheckpointError(
                cannot(
                    "load gain refiner from",
                    Path(directory) / "config.json",
                    f"invalid refiner settings {config} ({exc})",
                )
            ) from exc
        load_weights(refiner, read_weights(path), path)
        return refiner.eval()
