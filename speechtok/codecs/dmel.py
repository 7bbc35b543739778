"""dMel: discretised log-mel tokens ("dMel: Speech Tokenization made Simple").

Encoding is parameter-free: 80 log-mel channels, each rounded to one of 16 values spaced
uniformly over a fixed log range (clamped), so a frame is 80 codebooks x 16 values.
Decoding turns bin values back into log-mel and then into a waveform with a renderer
(`speechtok.codecs.renderers`): the trained Vocos-style vocoder (trained on quantised mels, so it
learns decode(encode(x))) when the config has one, else Griffin-Lim; `set_renderer` swaps it.
Where the signal the levels were predicted from is at hand (enhancement),
`speechtok.enhance.BandGainFilter` renders them as per-band gains on it.
"""

from __future__ import annotations

from typing import Any

import librosa
import torch
from torch import nn

from speechtok.codecs.base import Codec, CodecError
from speechtok.codecs.renderers import GriffinLim, Renderer, SwitchableRenderer
from speechtok.codecs.streaming import StreamDecoder, StreamEncoder
from speechtok.codecs.vocoder import Vocoder


class DMelCodec(Codec, SwitchableRenderer):
    family = "dmel"

    def __init__(
        self,
        sample_rate: int = 16000,
        frame_rate: int = 50,
        n_mels: int = 80,
        n_fft: int = 1024,
        win_length: int = 800,
        f_min: float = 80.0,
        f_max: float = 7600.0,
        n_bins: int = 16,
        log_min: float = -11.5,
        log_max: float = 2.0,
        vocoder: dict[str, Any] | None = None,
        causal: bool = False,
    ) -> None:
        super().__init__()
        if sample_rate % frame_rate:
            raise CodecError(f"frame_rate {frame_rate} must divide sample_rate {sample_rate}")
        self.sample_rate, self.n_mels, self.n_fft, self.win_length = sample_rate, n_mels, n_fft, win_length
        self.hop_length = sample_rate // frame_rate
        self.f_min, self.f_max = f_min, f_max
        self.codebook_size, self.log_min, self.log_max = n_bins, log_min, log_max
        self.causal = causal
        self.context_frames = -(-n_fft // (self.hop_length if causal else 2 * self.hop_length))
        mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max)
        self.register_buffer("mel_fb", torch.from_numpy(mel.T.copy()), persistent=False)  # [bins, mels]
        window = torch.hann_window(win_length, periodic=True)
        left = n_fft - win_length if causal else (n_fft - win_length) // 2  # causal: the window ends the frame
        self.register_buffer("window", nn.functional.pad(window, (left, n_fft - win_length - left)), persistent=False)
        self.vocoder_config = vocoder
        if vocoder is not None and bool(vocoder.get("causal", False)) != causal:
            raise CodecError("a causal dMel codec needs a causal vocoder, and only it can have one")
        self.vocoder = None if vocoder is None else Vocoder(n_mels=n_mels, hop_length=self.hop_length, **vocoder)
        self.set_renderer("griffinlim" if self.vocoder is None else self.vocoder)

    @property
    def max_codebooks(self) -> int:
        """One codebook per mel channel, all needed to decode (fixed bitrate)."""
        return self.n_mels

    def config(self) -> dict[str, Any]:
        return dict(
            sample_rate=self.sample_rate,
            frame_rate=int(self.frame_rate),
            n_mels=self.n_mels,
            n_fft=self.n_fft,
            win_length=self.win_length,
            f_min=self.f_min,
            f_max=self.f_max,
            n_bins=self.codebook_size,
            log_min=self.log_min,
            log_max=self.log_max,
            vocoder=self.vocoder_config,
            **({"causal": True} if self.causal else {}),  # only then: older configs and token files stay as they were
        )

    def token_config(self) -> dict[str, Any]:
        return {k: v for k, v in self.config().items() if k != "vocoder"}

    # --- features -----------------------------------------------------------------
    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """Log-mel [B, n_mels, F] of wav [B, 1, F*hop], frames centred on t*hop (causal: frame t's
        window ends at (t+1)*hop, so it is known once its hop of samples is).

        Every frame is computed on its own samples with the same kernels whatever the batch
        or chunk, so codes do not depend on either (tests check this bit for bit).
        """
        x = wav.squeeze(1).float()
        if self.causal:
            return self.framed_log_mel(nn.functional.pad(x, (self.n_fft - self.hop_length, 0)))
        half = self.n_fft // 2
        return self.framed_log_mel(nn.functional.pad(x, (half, half - self.hop_length)))

    def framed_log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """Log-mel of the n_fft-sample frames every hop of padded samples x [B, n_fft - hop + F*hop]."""
        frames = x.unfold(-1, self.n_fft, self.hop_length) * self.window  # [B, F, n_fft]
        power = torch.view_as_real(torch.fft.rfft(frames, dim=-1)).square().sum(-1)
        return self._mel_of(power.sqrt())

    def mel_stream(self) -> MelStream:
        """The causal log-mel frame by frame."""
        return MelStream(self)

    # --- streaming ------------------------------------------------------------------
    @property
    def streaming(self) -> bool:
        return self.causal and self.vocoder is not None and self.renderer is self.vocoder

    def _mel_of(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Log-mel [B, n_mels, F] of STFT magnitudes [B, F, bins]."""
        return torch.log(torch.clamp(magnitude @ self.mel_fb, min=1e-5)).transpose(1, 2)

    def quantize(self, log_mel: torch.Tensor) -> torch.Tensor:
        scale = (self.codebook_size - 1) / (self.log_max - self.log_min)
        return torch.round((log_mel - self.log_min) * scale).clamp_(0, self.codebook_size - 1).long()

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Bin values -> log-mel [B, n_mels, F] (float32)."""
        step = (self.log_max - self.log_min) / (self.codebook_size - 1)
        return self.log_min + codes.float() * step

    def _encode_frames(self, wav: torch.Tensor) -> torch.Tensor:
        return self.quantize(self.log_mel(wav))

    # --- decoding -----------------------------------------------------------------
    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.render(self.dequantize(codes))

    @torch.inference_mode()
    def decode_levels(self, levels: torch.Tensor) -> torch.Tensor:
        """Like `decode`, for fractional levels [B, n_mels, F] (e.g. a token model's expected level
        per channel): dMel codes are ordinal, so a level between two bins is the log-mel between
        them, a finer estimate than either code (one bin is ~7.8 dB)."""
        if levels.dim() != 3 or levels.shape[1] != self.n_mels or not torch.isfinite(levels).all():
            raise CodecError(f"dmel levels must be finite [B, {self.n_mels}, F], got {tuple(levels.shape)}")
        return self.render(self.dequantize(levels.float().clamp(0, self.codebook_size - 1).to(self.mel_fb.device)))

    # --- the renderer ---------------------------------------------------------------
    @property
    def renderer(self) -> Renderer:
        return self._renderer

    def renderer_choices(self) -> tuple[str, ...]:
        return ("griffinlim",) if self.vocoder is None else ("vocoder", "griffinlim")

    def set_renderer(self, renderer: str | Renderer) -> DMelCodec:
        """Decode through `renderer`: 'vocoder' (the trained one, if this codec has it), 'griffinlim'
        (defaults: 32 fast iterations) or a `Renderer` module, e.g. `GriffinLim(..., n_iter=64)`.
        A renderer with weights must be this codec's own `vocoder`: the weights are the codec's."""
        label = self.name or self.family
        if renderer == "vocoder" and self.vocoder is None:
            raise CodecError(f"codec '{label}' has no trained vocoder (Griffin-Lim only); use griffinlim")
        if renderer == "vocoder":
            renderer = self.vocoder
        elif renderer == "griffinlim":
            renderer = GriffinLim(self.mel_fb, self.window, self.hop_length)
        if not isinstance(renderer, Renderer):
            raise CodecError(
                f"codec '{label}' has no renderer {renderer!r} (known: {', '.join(self.renderer_choices())})"
            )
        if renderer is not self.vocoder and next(renderer.parameters(), None) is not None:
            raise CodecError(f"codec '{label}': a renderer with weights must be its own vocoder")
        # Not registered as a submodule: it is `self.vocoder` (registered, its weights saved as
        # `vocoder.*`) or weight-free, so the state dict and saved folders stay the same.
        object.__setattr__(self, "_renderer", renderer)
        return self

    @property
    def decode_context_frames(self) -> int:
        """Chunked decoding's context: the renderer's (exact for the vocoder, approximate for
        Griffin-Lim, which also crossfades)."""
        return self.renderer.decode_context_frames

    @property
    def decode_crossfade_frames(self) -> int:
        return self.renderer.decode_crossfade_frames

    def render(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Waveform [B, 1, F*hop] for log-mel [B, n_mels, F], by the current renderer."""
        return self.renderer(log_mel)


class OnDMelFrontend(SwitchableRenderer):
    """Mixin for learned codecs that read dMel's log-mel and decode through its renderer: RVQ
    and semantic codecs. They hold a parameter-free `DMelCodec` as `frontend`, whose vocoder (a
    frozen copy of a trained one) or Griffin-Lim turns their decoded log-mel into a waveform."""

    frontend: DMelCodec
    name: str | None
    borrowed_weights: tuple[str, ...]

    def build_frontend(
        self,
        sample_rate: int,
        frame_rate: int,
        mel: dict[str, Any] | None,
        vocoder: dict[str, Any] | None,
        vocoder_from: str | None,
    ) -> None:
        """The dMel front end. Its vocoder is either this codec's own (`vocoder`: an architecture,
        weights saved with the codec) or, with `vocoder_from` (a bundled dMel codec's name or folder),
        that codec's trained vocoder, loaded from there whenever this codec is built and never saved
        with it: one vocoder shared by every codec that names it, improving with it."""
        self.mel_config, self.vocoder_from = dict(mel or {}), vocoder_from
        source = None if vocoder_from is None else self._vocoder_source(vocoder_from, sample_rate, frame_rate)
        self.vocoder_config = vocoder if source is None else source.vocoder_config
        self.frontend = DMelCodec(sample_rate, frame_rate, vocoder=self.vocoder_config, **self.mel_config)
        if source is not None:
            self.use_vocoder_of(source)
            self.borrowed_weights = ("frontend.vocoder.",)

    def vocoder_fields(self) -> dict[str, Any]:
        """The config's vocoder entry: the name it borrows from, or its own architecture."""
        if self.vocoder_from is not None:
            return {"vocoder_from": self.vocoder_from}
        return {"vocoder": self.vocoder_config}

    def _vocoder_source(self, vocoder_from: str, sample_rate: int, frame_rate: int) -> DMelCodec:
        from speechtok.codecs import load_codec  # the registry imports this module

        what = f"{self.family} codec renders with the vocoder of '{vocoder_from}'"
        try:
            dmel = load_codec(vocoder_from)
        except CodecError as exc:
            raise CodecError(f"{what}, which does not load: {exc}") from exc
        if not isinstance(dmel, DMelCodec) or dmel.vocoder is None:
            raise CodecError(f"{what}, which has no trained vocoder")
        wanted = {"sample_rate": sample_rate, "frame_rate": frame_rate, **self.mel_config}
        differs = sorted(k for k, v in wanted.items() if dmel.config().get(k) != v)
        if differs:
            raise CodecError(f"{what}, whose log-mel differs from this codec's ({', '.join(differs)})")
        return dmel

    @property
    def renderer(self) -> Renderer:
        """How the decoded log-mel becomes a waveform: the dMel front end's renderer."""
        return self.frontend.renderer

    def renderer_choices(self) -> tuple[str, ...]:
        return self.frontend.renderer_choices()

    def set_renderer(self, renderer: str | Renderer):
        self.frontend.name = self.name
        self.frontend.set_renderer(renderer)
        return self

    @property
    def vocoder(self) -> Vocoder | None:
        return self.frontend.vocoder

    def use_vocoder_of(self, dmel: DMelCodec) -> None:
        """Decode through a copy of `dmel`'s trained vocoder, frozen: training then never runs at sample rate."""
        if dmel.vocoder is None:
            raise CodecError(f"codec '{dmel.name or dmel.family}' has no trained vocoder to decode with")
        self.frontend.vocoder.load_state_dict(dmel.vocoder.state_dict())
        self.frontend.vocoder.requires_grad_(False)

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """The log-mel [B, n_mels, F] the codec reads, for wav [B, 1, F*hop]."""
        return self.frontend.log_mel(wav)

    def render(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Waveform [B, 1, F*hop] for a log-mel [B, n_mels, F], by the current renderer."""
        return self.frontend.render(log_mel)

    def normalise(self, log_mel: torch.Tensor) -> torch.Tensor:
        """dMel's clamped log range mapped to [-1, 1]."""
        lo, hi = self.frontend.log_min, self.frontend.log_max
        return (log_mel.clamp(lo, hi) - lo) / (hi - lo) * 2 - 1

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of `normalise` (for x in [-1, 1])."""
        lo, hi = self.frontend.log_min, self.frontend.log_max
        return lo + (hi - lo) * (x + 1) / 2


class MelStream:
    """A causal dMel codec's log-mel as samples arrive: `push` whole hops of samples [B, 1, m*hop],
    get their m frames [B, n_mels, m], equal to `log_mel` of the whole signal."""

    def __init__(self, codec: DMelCodec) -> None:
        if not codec.causal:
            raise CodecError("only a causal dMel codec's log-mel is computed as a stream")
        self.codec, self.past = codec, None

    def push(self, wav: torch.Tensor) -> torch.Tensor:
        c = self.codec
        x = wav.squeeze(1).float()
        if self.past is None:
            self.past = x.new_zeros(x.shape[0], c.n_fft - c.hop_length)
        x = torch.cat([self.past, x], dim=-1)
        self.past = x[:, x.shape[-1] - (c.n_fft - c.hop_length) :]
        return c.framed_log_mel(x)


class DMelStreamEncoder(StreamEncoder):
    def __init__(self, codec: DMelCodec, n_codebooks: int | None = None) -> None:
        super().__init__(codec, n_codebooks)
        self.mel = codec.mel_stream()

    def frames(self, wav: torch.Tensor) -> torch.Tensor:
        return self.codec.quantize(self.mel.push(wav))


class DMelStreamDecoder(StreamDecoder):
    def __init__(self, codec: DMelCodec) -> None:
        super().__init__(codec)
        self.vocoder = codec.vocoder.stream()

    def samples(self, codes: torch.Tensor) -> torch.Tensor:
        return self.vocoder.push(self.codec.dequantize(codes))

    def end(self) -> torch.Tensor:
        return self.vocoder.flush()


DMelCodec.stream_coders = (DMelStreamEncoder, DMelStreamDecoder)
