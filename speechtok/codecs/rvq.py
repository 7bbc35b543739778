"""Learned vector-quantised codecs over log-mel frames: RVQ (`rvq-16k`) and one codebook (`single-16k-50`).

An encoder (ConvNeXt at frame rate) maps dMel's log-mel frames to a latent that a residual
vector quantiser (`vector-quantize-pytorch`: EMA codebooks, k-means init, dead-code restarts,
quantiser dropout as in EnCodec and DAC) turns into K codes per frame; one codebook of a few
thousand entries is the WavTokenizer setting. A decoder maps the quantised latent back to
log-mel and the dMel vocoder (or Griffin-Lim) makes the waveform. Working on mel frames rather
than samples keeps every learned part at frame rate, which is what lets a useful codec train
on a CPU in minutes; the price is that the codec cannot beat its vocoder.

Encoding is frame-local: the encoder is cropped to its receptive field of zero-padded audio,
so codes do not depend on batch padding or on chunking (up to float rounding in the
convolutions, which can flip a near-tie between two codewords).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn
from vector_quantize_pytorch import ResidualVQ

from speechtok.codecs.base import Codec
from speechtok.codecs.dmel import OnDMelFrontend
from speechtok.codecs.streaming import StreamDecoder, StreamEncoder
from speechtok.modules.vocos import ConvCache, ConvNeXtBackbone


class RVQCodec(Codec, OnDMelFrontend):
    """log-mel -> encoder -> residual VQ (codes) -> mel decoder -> dMel vocoder. Any first K of
    the codebooks encode and decode (a lower bitrate; quantiser dropout trains for it): pass
    `n_codebooks=K` to `encode`, or decode a prefix of the codes."""

    family = "rvq"
    variable_bitrate = True

    def __init__(
        self,
        sample_rate: int = 16000,
        frame_rate: int = 50,
        n_codebooks: int = 8,
        codebook_size: int = 1024,
        codebook_dim: int = 32,
        dim: int = 256,
        intermediate_dim: int = 768,
        encoder_layers: int = 4,
        decoder_layers: int = 4,
        quantizer_dropout: bool = True,
        dead_code_threshold: float = 2.0,
        mel: dict[str, Any] | None = None,
        vocoder: dict[str, Any] | None = None,
        vocoder_from: str | None = None,
    ) -> None:
        super().__init__()
        self.build_frontend(sample_rate, frame_rate, mel, vocoder, vocoder_from)
        self.sample_rate, self.hop_length, self.codebook_size = sample_rate, self.frontend.hop_length, codebook_size
        self.dims = dict(
            codebook_dim=codebook_dim,
            dim=dim,
            intermediate_dim=intermediate_dim,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
        )
        self.quantizer_dropout, self.dead_code_threshold = quantizer_dropout, dead_code_threshold
        n_mels, causal = self.frontend.n_mels, self.frontend.causal  # a causal log-mel makes a causal codec
        self.encoder = ConvNeXtBackbone(n_mels, dim, intermediate_dim, encoder_layers, causal=causal)
        self.receptive = self.encoder.context_frames  # frames each side (causal: before) a code depends on
        self.context_frames = self.frontend.context_frames + self.receptive
        self.quantizer = ResidualVQ(
            dim=dim,
            num_quantizers=n_codebooks,
            codebook_size=codebook_size,
            codebook_dim=codebook_dim,
            decay=0.99,
            kmeans_init=True,
            kmeans_iters=10,
            threshold_ema_dead_code=dead_code_threshold,
            quantize_dropout=quantizer_dropout and n_codebooks > 1,
            quantize_dropout_cutoff_index=0,
        )
        self.mel_decoder = ConvNeXtBackbone(dim, dim, intermediate_dim, decoder_layers, causal=causal)
        self.to_mel = nn.Linear(dim, n_mels)

    @property
    def max_codebooks(self) -> int:
        """The trained number of residual codebooks."""
        return self.quantizer.num_quantizers

    @property
    def decode_context_frames(self) -> int:
        """The mel decoder's receptive field plus the renderer's."""
        return self.mel_decoder.context_frames + self.frontend.decode_context_frames

    @property
    def decode_crossfade_frames(self) -> int:
        return self.frontend.decode_crossfade_frames

    def config(self) -> dict[str, Any]:
        return dict(
            sample_rate=self.sample_rate,
            frame_rate=int(self.frame_rate),
            n_codebooks=self.max_codebooks,
            codebook_size=self.codebook_size,
            quantizer_dropout=self.quantizer_dropout,
            dead_code_threshold=self.dead_code_threshold,
            mel=self.mel_config,
            **self.vocoder_fields(),
            **self.dims,
        )

    def token_config(self) -> dict[str, Any]:
        """Learned codes are defined by the weights too: a digest of the encoder and codebooks. The
        first K codebooks' codes are a prefix of the full codes, so K is not part of it (a token
        file's K is its codes' shape)."""
        cfg = {k: v for k, v in self.config().items() if k not in ("vocoder", "vocoder_from", "decoder_layers")}
        return {**cfg, "weights": self._weights_digest()}

    def _weights_digest(self) -> str:
        """SHA-256 of the code-defining tensors (as stored, fp16), cached: every token file written
        asks for it. A tensor's version counter moves on every in-place update (an optimiser step,
        `load_state_dict`), so the cache key sees training and reloading. Tensors made under
        `torch.inference_mode()` (a codec loaded there) have no counter and are never trained."""
        tensors = [(k, v) for m in (self.encoder, self.quantizer) for k, v in sorted(m.state_dict().items())]
        key = tuple((k, v.data_ptr(), -1 if v.is_inference() else v._version) for k, v in tensors)
        if getattr(self, "_digest", (None,))[0] != key:
            digest = hashlib.sha256()
            for k, v in tensors:
                digest.update(k.encode())
                digest.update(
                    v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).cpu().numpy().tobytes()
                )
            self._digest = (key, digest.hexdigest()[:16])
        return self._digest[1]

    # --- the learned part -----------------------------------------------------------
    def latent(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Encoder output [B, F, dim] for log-mel [B, n_mels, F]."""
        return self.encoder(self.normalise(log_mel))

    def mel_from_latent(self, z: torch.Tensor, cache: ConvCache | None = None) -> torch.Tensor:
        """Log-mel [B, n_mels, F] for a (quantised) latent [B, F, dim] (causal, with `cache`: the next
        frames of a stream)."""
        return self.denormalise(torch.tanh(self.to_mel(self.mel_decoder(z.transpose(1, 2), cache)).transpose(1, 2)))

    def forward(self, log_mel: torch.Tensor):
        """Training pass: (reconstructed log-mel, codes [B, K, F], commitment loss)."""
        quantised, codes, commit = self.quantizer(self.latent(log_mel))
        return self.mel_from_latent(quantised), codes.transpose(1, 2), commit.sum()

    # --- Codec interface ----------------------------------------------------------------
    def _encode_frames(self, wav: torch.Tensor) -> torch.Tensor:
        c, hop = self.receptive, self.hop_length
        frames = wav.shape[-1] // hop
        mel = self.log_mel(nn.functional.pad(wav, (c * hop, c * hop)))
        return self.codes_of_latent(self.latent(mel)[:, c : c + frames])

    @torch.inference_mode()
    def decode_mel(self, codes: torch.Tensor) -> torch.Tensor:
        """Log-mel [B, n_mels, F] for codes [B, K, F] (K may be fewer than trained: the first K)."""
        return self.mel_of_codes(self.check_codes(codes))

    def mel_of_codes(self, codes: torch.Tensor, cache: ConvCache | None = None) -> torch.Tensor:
        """`decode_mel` of checked codes (causal, with `cache`: the next frames of a stream)."""
        return self.mel_from_latent(self.latent_of_codes(codes), cache)

    # --- the quantiser at inference: the ResidualVQ's own codebooks and projections, without its
    # per-call bookkeeping (a third of a streaming frame's compute went there) ---------------------
    def codes_of_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, F] of an encoder latent [B, F, dim]: each residual's nearest code, by the
        distance `vector_quantize_pytorch` computes, so the codes are the quantiser's own."""
        x = self.quantizer.project_in(z).float().reshape(1, -1, self.dims["codebook_dim"])
        books = self.quantizer.codebooks  # [K, C, d]
        codes = []
        for book, y2 in zip(books, books.pow(2).sum(-1)):
            xy = torch.bmm(x, book.T[None]) * -2
            dist = (x.pow(2).sum(-1)[..., None] + y2 + xy).clamp(min=1e-8).sqrt()
            index = (-dist).argmax(-1)
            codes.append(index)
            x = x - book[index]
        return torch.cat(codes).reshape(len(codes), z.shape[0], z.shape[1]).transpose(0, 1)

    def latent_of_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """The quantised latent [B, F, dim] of codes [B, K, F]: the sum of the first K codebooks' vectors."""
        books = self.quantizer.codebooks[: codes.shape[1]]  # [K, C, d]
        summed = books[torch.arange(codes.shape[1], device=codes.device)[None, :, None], codes].sum(1)
        return self.quantizer.project_out(summed)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.render(self.mel_of_codes(codes))

    # --- streaming (a causal log-mel front end and vocoder) ---------------------------------
    @property
    def streaming(self) -> bool:
        return self.frontend.streaming


class RVQStreamEncoder(StreamEncoder):
    """Log-mel, encoder and quantiser frame by frame. It starts as `encode` does: after `receptive`
    frames of silence (the zero padding there), run through and dropped."""

    def __init__(self, codec: RVQCodec, n_codebooks: int | None = None) -> None:
        super().__init__(codec, n_codebooks)
        self.mel, self.convs = codec.frontend.mel_stream(), ConvCache()
        self.frames(torch.zeros(1, 1, codec.receptive * codec.hop_length, device=codec.device))

    def frames(self, wav: torch.Tensor) -> torch.Tensor:
        c = self.codec
        return c.codes_of_latent(c.encoder(c.normalise(self.mel.push(wav)), self.convs))


class RVQStreamDecoder(StreamDecoder):
    def __init__(self, codec: RVQCodec) -> None:
        super().__init__(codec)
        self.convs, self.vocoder = ConvCache(), codec.vocoder.stream()

    def samples(self, codes: torch.Tensor) -> torch.Tensor:
        if not codes.shape[-1]:
            return torch.zeros(1, 1, 0, device=codes.device)
        return self.vocoder.push(self.codec.mel_of_codes(codes, self.convs))

    def end(self) -> torch.Tensor:
        return self.vocoder.flush()


RVQCodec.stream_coders = (RVQStreamEncoder, RVQStreamDecoder)
