import pytest
import torch

from speechtok.lm import IGNORE, LMConfig, TokenLM, Transformer, TransformerConfig
from speechtok.lm.model import DurationPredictor
from speechtok.lm.sampling import SamplingConfig, gate_end, sample
from speechtok.lm.transformer import grow_depth

GREEDY = SamplingConfig(temperature=0)
PATTERN_K = [("single", 1), ("flatten", 2), ("delay", 3), ("parallel", 3)]


pytestmark = pytest.mark.usefixtures("one_thread")


def _lm(pattern="delay", K=3, card=16, src_vocab=10, sharp=False, **kw) -> TokenLM:
    cfg = LMConfig(
        pattern=pattern,
        n_codebooks=K,
        codebook_size=card,
        src_vocab=src_vocab,
        transformer=TransformerConfig.tiny(),
        **kw,
    )
    lm = TokenLM(cfg).eval()
    if sharp:  # larger random weights: outputs depend strongly on the whole context
        with torch.no_grad():
            for p in lm.parameters():
                p.mul_(5)
    return lm


def test_cached_decoding_matches_full_forward():
    torch.manual_seed(0)
    tr = Transformer(TransformerConfig.tiny()).eval()
    x = torch.randn(2, 13, 64)
    full = [tr(x[:1]), tr(x[1:, :9])]  # row 1 is 9 long, right-padded
    cache = tr.new_cache(2, 13)
    pre = tr(x, cache=cache, lengths=torch.tensor([5, 3]))  # prefill rows to different lengths
    torch.testing.assert_close(pre[0, :5], full[0][0, :5], atol=1e-4, rtol=0)
    torch.testing.assert_close(pre[1, :3], full[1][0, :3], atol=1e-4, rtol=0)
    for i in range(6):  # then lock-step, one token per row, each at its own position
        nxt = torch.stack([x[0, 5 + i], x[1, 3 + i]])[:, None]
        out = tr(nxt, cache=cache)[:, 0]
        torch.testing.assert_close(out[0], full[0][0, 5 + i], atol=1e-4, rtol=0)
        torch.testing.assert_close(out[1], full[1][0, 3 + i], atol=1e-4, rtol=0)
    assert cache.pos.tolist() == [11, 9]


def test_cache_overflow_is_an_error():
    tr = Transformer(TransformerConfig.tiny()).eval()
    cache = tr.new_cache(1, 4)
    tr(torch.randn(1, 4, 64), cache=cache)
    with pytest.raises(ValueError, match="KV cache full"):
        tr(torch.randn(1, 1, 64), cache=cache)


def test_grown_depth_computes_what_the_shallower_model_did_and_then_trains():
    torch.manual_seed(0)
    small = _lm("parallel", 3, sharp=True)
    deep = TokenLM(LMConfig(**{**small.cfg.__dict__, "transformer": TransformerConfig.tiny(n_layers=5)})).eval()
    deep.load_state_dict(grow_depth(small.state_dict(), 2, 5))  # strict: every key is there
    src, codes = torch.randint(0, 10, (2, 6)), torch.randint(0, 16, (2, 3, 8))
    torch.testing.assert_close(deep(src, codes).logits, small(src, codes).logits)
    greedy = dict(min_len=4, max_len=9, sampling=GREEDY)
    torch.testing.assert_close(deep.generate(src, **greedy), small.generate(src, **greedy))
    added = [b for b in deep.transformer.blocks if not b.mlp.down.weight.any()]
    assert len(added) == 3 and all(not b.attn.out.weight.any() and b.attn.qkv.weight.any() for b in added)
    # not stuck at zero: a step moves their output projections, and then the rest gets gradients
    deep.train()
    opt = torch.optim.SGD(deep.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        deep(src, codes).loss.backward()
        opt.step()
    assert all(b.attn.out.weight.any() and b.attn.qkv.weight.grad.any() for b in added)
    with pytest.raises(ValueError, match="cannot grow 2 blocks to 1"):
        grow_depth(small.state_dict(), 2, 1)


@pytest.mark.parametrize("pattern,K", PATTERN_K)
def test_overfits_one_utterance_and_greedy_decoding_reproduces_it(pattern, K):
    torch.manual_seed(0)
    lm = _lm(pattern, K).train()
    src, codes = torch.randint(0, 10, (1, 5)), torch.randint(0, 16, (1, K, 12))
    opt = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        loss = lm(src, codes).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.02:
            break
    assert loss.item() < 0.05 * first
    out, n = lm.generate(src, sampling=GREEDY, max_len=40)
    assert n.tolist() == [12] and torch.equal(out, codes)
    out, n = lm.generate(src, prompt_codes=codes[..., :5], sampling=GREEDY, max_len=40)  # continue a prompt
    assert n.tolist() == [7] and torch.equal(out, codes[..., 5:])


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("pattern,K", PATTERN_K)
def test_greedy_generation_agrees_with_teacher_forcing(pattern, K, aligned):
    """Each generated token is the best allowed one under forward() on [prompt + output]
    (aligned positions: generated at the rate forward() derives from the output's length)."""
    torch.manual_seed(2)
    lm = _lm(pattern, K, sharp=True, aligned_positions=aligned)
    p = lm.pattern
    src, prompt = torch.randint(0, 10, (2, 6)), torch.randint(0, 16, (2, K, 4))
    src_len, p_len = torch.tensor([6, 4]), torch.tensor([4, 2])
    kw = dict(min_len=7, max_len=7, rate=p.frame_step(7) / src_len.float()) if aligned else dict(min_len=5, max_len=9)
    out, n = lm.generate(src, src_len, prompt, p_len, sampling=GREEDY, **kw)
    codes = torch.zeros(2, K, 4 + out.shape[-1], dtype=torch.long)
    for b in range(2):
        codes[b, :, : p_len[b] + n[b]] = torch.cat([prompt[b, :, : p_len[b]], out[b, :, : n[b]]], -1)
    tf = lm(src, codes, src_len, p_len + n, p_len)
    _, book = p.layout(tf.targets.shape[1])
    lo = p.offset(book)[None, ..., None]
    ids = torch.arange(p.vocab_size)
    content = (ids >= lo) & (ids < lo + p.codebook_size)
    best = tf.logits.masked_fill(~content, float("-inf")).argmax(-1)
    cells = (tf.targets != IGNORE) & (tf.targets != p.end_id)
    assert cells.sum() == K * n.sum() and torch.equal(best[cells], tf.targets[cells])


def test_loss_only_on_target_cells():
    torch.manual_seed(0)
    lm = _lm("delay", 3)
    src = torch.randint(0, 10, (2, 6))
    codes = torch.randint(0, 16, (2, 3, 10))
    T, P = torch.tensor([10, 7]), torch.tensor([4, 0])
    out = lm(src, codes, torch.tensor([6, 3]), T, P)
    # every target frame of every codebook once, plus one end token per row
    assert ((out.targets != IGNORE).sum((1, 2)) == 3 * (T - P) + 1).all()
    assert (out.targets == lm.pattern.end_id).sum() == 2
    # padding beyond the lengths and prompt labels change nothing in the mask; padding not even the loss
    codes2 = codes.clone()
    codes2[1, :, 7:] = torch.randint(0, 16, (3, 3))
    codes2[0, :, :4] = torch.randint(0, 16, (3, 4))
    out2 = lm(src, codes2, torch.tensor([6, 3]), T, P)
    assert torch.equal(out2.targets != IGNORE, out.targets != IGNORE)
    assert torch.equal(out2.targets[1], out.targets[1])
    torch.testing.assert_close(out2.logits[1], out.logits[1])
    # gradient reaches the logits of target cells only
    logits = out.logits.detach().requires_grad_()
    torch.nn.functional.cross_entropy(logits.flatten(0, 2), out.targets.flatten(), ignore_index=IGNORE).backward()
    assert torch.equal(logits.grad.abs().sum(-1) > 0, out.targets != IGNORE)


def test_end_weight_scales_the_end_cells_in_the_loss():
    torch.manual_seed(0)
    lm = _lm("parallel", 3)
    heavy = _lm("parallel", 3, end_weight=5.0)
    heavy.load_state_dict(lm.state_dict())
    src, codes, T = torch.randint(0, 10, (2, 6)), torch.randint(0, 16, (2, 3, 8)), torch.tensor([8, 5])
    out = lm(src, codes, code_lengths=T)
    ce = torch.nn.functional.cross_entropy(
        out.logits.flatten(0, 2), out.targets.flatten(), ignore_index=IGNORE, reduction="none"
    )
    is_end, kept = out.targets.flatten() == lm.pattern.end_id, out.targets.flatten() != IGNORE
    torch.testing.assert_close(out.loss, ce[kept].mean())
    want = (ce[kept].sum() + 4 * ce[is_end].sum()) / (kept.sum() + 4 * is_end.sum())
    torch.testing.assert_close(heavy(src, codes, code_lengths=T).loss, want)


def test_guided_attention_prefers_the_diagonal_and_only_adds_in_training():
    torch.manual_seed(0)
    lm = _lm("parallel", 2, guided_attention=1.0)
    src_len, T, P = torch.tensor([6, 4]), torch.tensor([12, 8]), torch.tensor([0, 2])
    L = 6 + 1 + 12

    def scores(flip: bool) -> torch.Tensor:
        s = torch.zeros(2, L, L)
        for b in range(2):
            for f in range(int(P[b]), int(T[b])):
                frac = (f - P[b]) / (T[b] - P[b])
                t = int(frac * src_len[b]) if not flip else int(src_len[b]) - 1 - int(frac * src_len[b])
                s[b, src_len[b] + f, t] = 20.0  # query predicting frame f looks at source token t
        return s

    diagonal, anti = lm._guide_loss([scores(False)], src_len, T, P), lm._guide_loss([scores(True)], src_len, T, P)
    assert 0 <= diagonal < 0.1 < 0.4 < anti <= 1
    src, codes = torch.randint(0, 10, (2, 6)), torch.randint(0, 16, (2, 2, 12))
    plain = _lm("parallel", 2)
    plain.load_state_dict(lm.state_dict())
    args = (src, codes, src_len, T, P)
    torch.testing.assert_close(lm(*args).loss, plain(*args).loss)  # eval mode: the LM loss alone
    lm.train(), plain.train()
    assert lm(*args).loss > plain(*args).loss + 0.05
    assert all(not hasattr(b.attn, "scores") for b in lm.transformer.blocks)  # scores are returned, not kept
    lm.eval()
    x = torch.randn(2, 5, 64)
    h, probed = lm.transformer(x, probe_layers=[1])  # an explicit argument and return value
    assert len(probed) == 1 and probed[0].shape == (2, 5, 5) and torch.equal(h, lm.transformer(x))
    with pytest.raises(ValueError, match="full forward"):
        lm.transformer(x, cache=lm.transformer.new_cache(2, 8), probe_layers=[1])


def test_aligned_positions_put_the_source_on_the_target_timeline():
    lm = _lm("parallel", 2, aligned_positions=True)
    pos = lm._positions(torch.tensor([3, 2]), 8, torch.tensor([-2, 0]), torch.tensor([2.0, 1.5]))
    assert pos.tolist() == [
        [0, 2, 4, -3, -2, -1, 0, 1],  # 3 tokens, separator, 2 prompt steps, target from 0
        [0, 1.5, -1, 0, 1, 2, 3, 4],
    ]  # continuation: the prompt starts the timeline
    src, codes = torch.randint(0, 10, (1, 4)), torch.randint(0, 16, (1, 2, 8))
    plain = _lm("parallel", 2)
    plain.load_state_dict(lm.state_dict())
    assert not torch.allclose(lm(src, codes).logits, plain(src, codes).logits)  # the positions matter
    assert _lm("parallel", 2)._positions(torch.tensor([3]), 8, torch.tensor([0]), torch.tensor([1.0])) is None


@pytest.mark.parametrize("pattern,K", [("parallel", 3), ("delay", 2)])
def test_frame_dropout_blanks_target_inputs_in_training_only(pattern, K):
    torch.manual_seed(0)
    lm = _lm(pattern, K, frame_dropout=1.0)
    src, codes = torch.randint(0, 10, (1, 5)), torch.randint(0, 16, (1, K, 9))
    other = codes.clone()
    other[..., 4:] = (other[..., 4:] + 1) % 16  # different target frames, same 4 prompt frames
    P = torch.tensor([4])
    assert not torch.allclose(lm(src, codes, prompt_lengths=P).logits, lm(src, other, prompt_lengths=P).logits)
    lm.train()
    a, b = lm(src, codes, prompt_lengths=P).logits, lm(src, other, prompt_lengths=P).logits
    torch.testing.assert_close(a, b)  # every target frame blanked: only source and prompt are seen
    prompt_changed = other.clone()
    prompt_changed[..., :4] = (prompt_changed[..., :4] + 1) % 16
    assert not torch.allclose(b, lm(src, prompt_changed, prompt_lengths=P).logits)  # the prompt never is


@pytest.mark.parametrize("pattern,K", [("parallel", 3), ("single", 1)])
def test_blank_frames_hide_exactly_those_frames(pattern, K):
    torch.manual_seed(0)
    lm = _lm(pattern, K, sharp=True)
    src, codes = torch.randint(0, 10, (1, 5)), torch.randint(0, 16, (1, K, 9))
    changed = codes.clone()
    changed[..., 4] = (changed[..., 4] + 1) % 16  # only frame 4 differs
    blank = torch.zeros(1, 9, dtype=torch.bool)
    blank[0, 4] = True
    torch.testing.assert_close(lm(src, codes, blank_frames=blank).logits, lm(src, changed, blank_frames=blank).logits)
    assert not torch.allclose(lm(src, codes).logits, lm(src, changed).logits)
    # steps up to frame 4's first input are untouched; later ones see the blank
    first = int(lm.pattern.frame_step(4)) + 1
    plain, hidden = lm(src, codes).logits, lm(src, codes, blank_frames=blank).logits
    torch.testing.assert_close(plain[:, :first], hidden[:, :first])
    assert not torch.allclose(plain[:, first:], hidden[:, first:])
    torch.testing.assert_close(plain, lm(src, codes, blank_frames=torch.zeros(1, 9, dtype=torch.bool)).logits)


def test_end_threshold_decides_the_stop_instead_of_sampling_it():
    end = 3
    head0 = torch.tensor([[0.0, 0.0, 0.0, 2.0]]).log_softmax(-1).repeat(3, 1)  # P(end) = e^2 / (e^2 + 3) ~ 0.71
    decide = torch.tensor([True, True, False])
    out = gate_end(head0, end, 0.5, decide)
    assert out[0].argmax() == end and torch.isinf(out[0, :end]).all()  # must end
    assert torch.equal(out[2], head0[2])  # not free to decide (forced or not yet allowed): untouched
    assert torch.isinf(gate_end(head0, end, 0.8, decide)[0, end])  # below threshold: must not end
    torch.manual_seed(0)
    lm = _lm("parallel", 3)
    src = torch.randint(0, 10, (2, 5))
    _, n = lm.generate(src, seed=0, max_len=9, min_len=2, sampling=SamplingConfig(end_threshold=0.0))
    assert n.tolist() == [2, 2]  # P(end) >= 0 always: stop at the first frame allowed
    _, n = lm.generate(src, seed=0, max_len=9, sampling=SamplingConfig(end_threshold=1.01))
    assert n.tolist() == [9, 9]  # never reached: run to the budget


def test_codec_source_for_enhancement():
    lm = _lm("delay", 2, src_vocab=16, src_codebooks=2, max_len_ratio=1.0)
    src, codes = torch.randint(0, 16, (2, 2, 9)), torch.randint(0, 16, (2, 2, 9))
    assert torch.isfinite(lm(src, codes).loss)
    out, n = lm.generate(src, torch.tensor([9, 5]), seed=0)
    assert (n <= torch.tensor([9, 5])).all() and out.shape[:2] == (2, 2)  # budget: 1 frame per source frame
    with pytest.raises(ValueError, match="source must be"):
        lm(src[:, 0], codes)


def test_sampling_is_reproducible_with_a_seed():
    torch.manual_seed(0)
    lm = _lm("delay", 3)
    src = torch.randint(0, 10, (2, 5))
    kw = dict(min_len=8, max_len=8, sampling=SamplingConfig(temperature=1.0, top_k=10, top_p=0.9))
    a, na = lm.generate(src, seed=123, **kw)
    b, nb = lm.generate(src, seed=123, **kw)
    c, _ = lm.generate(src, seed=124, **kw)
    g = torch.Generator().manual_seed(123)
    d, _ = lm.generate(src, generator=g, **kw)
    assert na.tolist() == [8, 8] and torch.equal(a, b) and torch.equal(a, d)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("pattern,K,aligned", [("delay", 3, False), ("flatten", 2, False), ("parallel", 3, True)])
def test_batched_generation_equals_one_at_a_time(pattern, K, aligned):
    torch.manual_seed(1)
    lm = _lm(pattern, K, sharp=True, aligned_positions=aligned, default_rate=1.7)
    src = torch.randint(0, 10, (2, 7))
    prompt = torch.randint(0, 16, (2, K, 5))
    src_len, p_len = torch.tensor([7, 3]), torch.tensor([2, 5])
    kw = dict(sampling=GREEDY, min_len=3, max_len=12)
    out, n = lm.generate(src, src_len, prompt, p_len, **kw)
    for b in range(2):
        one, m = lm.generate(src[b : b + 1, : src_len[b]], prompt_codes=prompt[b : b + 1, :, : p_len[b]], **kw)
        assert n[b] == m[0] and 3 <= m[0] <= 12
        assert torch.equal(out[b, :, : n[b]], one[0])
    nocache, n2 = lm.generate(src, src_len, prompt, p_len, use_cache=False, **kw)
    assert torch.equal(n, n2) and torch.equal(out, nocache)


def test_repetition_aware_sampling_redraws_repeated_tokens():
    logits = torch.zeros(1, 1, 50)
    logits[..., 3] = 1.0
    g = torch.Generator().manual_seed(0)
    # top_k=1 always proposes token 3; with 3 filling the window it is redrawn from the full distribution
    plain = [int(sample(logits, SamplingConfig(top_k=1), None, g)) for _ in range(50)]
    hist = torch.full((1, 1, 10), 3)
    redrawn = [int(sample(logits, SamplingConfig(top_k=1), hist, g)) for _ in range(50)]
    assert set(plain) == {3}
    assert sum(t != 3 for t in redrawn) > 25
    fresh = torch.full((1, 1, 10), 7)
    assert {int(sample(logits, SamplingConfig(top_k=1), fresh, g)) for _ in range(20)} == {3}


def test_sampling_config_reads_a_models_block_and_refuses_unknown_settings():
    cfg = SamplingConfig.from_dict({"temperature": 0.7, "top_p": 0.9, "top_k": None})
    assert (cfg.temperature, cfg.top_p, cfg.top_k, cfg.rep_window) == (0.7, 0.9, None, 10)
    assert cfg.replace(temperature=None, top_k=5) == SamplingConfig(temperature=0.7, top_p=0.9, top_k=5)
    with pytest.raises(ValueError, match="unknown setting.*temprature"):
        SamplingConfig.from_dict({"temprature": 0.5})


def test_top_p_keeps_the_nucleus():
    logits = torch.tensor([[[4.0, 1.0, 1.0, 1.0]]])  # p(0) ~ 0.87
    g = torch.Generator().manual_seed(0)
    assert {int(sample(logits, SamplingConfig(top_p=0.8), None, g)) for _ in range(30)} == {0}
    assert len({int(sample(logits, SamplingConfig(), None, g)) for _ in range(60)}) > 1


def test_bf16_autocast_forward_and_generate():
    torch.manual_seed(0)
    lm = _lm("parallel", 4)
    src, codes = torch.randint(0, 10, (2, 5)), torch.randint(0, 16, (2, 4, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = lm(src, codes).loss
        out, n = lm.generate(src, seed=0, max_len=6)
    assert torch.isfinite(loss) and out.shape[:2] == (2, 4) and (n <= 6).all()


def test_too_long_input_is_an_error():
    lm = _lm("single", 1)
    with pytest.raises(ValueError, match="too long"):
        lm.generate(torch.zeros(1, 600, dtype=torch.long))


def _codec_src_lm(pattern, K, **kw) -> TokenLM:
    """An enhancement-shaped model (source: codes of 2 codebooks of 10 values) with a trained-looking
    aligned-source table (random, not the zeros it starts from)."""
    lm = _lm(pattern, K, sharp=True, src_codebooks=2, aligned_source=True, aligned_positions=True, **kw)
    with torch.no_grad():
        lm.src_frame_emb.weight.normal_(0, 0.5)
    return lm


@pytest.mark.parametrize("pattern,K", [("parallel", 3), ("delay", 2), ("flatten", 2)])
def test_aligned_source_generation_agrees_with_teacher_forcing_and_batching(pattern, K):
    """With the source frame summed into each step, generate() (cached or not, batched or not)
    still makes the tokens that forward() on its own output scores best."""
    torch.manual_seed(3)
    lm = _codec_src_lm(pattern, K)
    p = lm.pattern
    src, src_len = torch.randint(0, 10, (2, 2, 8)), torch.tensor([8, 5])
    kw = dict(sampling=GREEDY, max_len=5, min_len=5)  # the rate forward() derives from 5 frames
    out, n = lm.generate(src, src_len, rate=p.frame_step(5) / src_len.float(), **kw)
    tf = lm(src, out, src_len, n)
    _, book = p.layout(tf.targets.shape[1])
    lo = p.offset(book)[None, ..., None]
    ids = torch.arange(p.vocab_size)
    best = tf.logits.masked_fill(~((ids >= lo) & (ids < lo + p.codebook_size)), float("-inf")).argmax(-1)
    cells = (tf.targets != IGNORE) & (tf.targets != p.end_id)
    assert cells.sum() == K * n.sum() and torch.equal(best[cells], tf.targets[cells])
    one, m = lm.generate(src[1:, :, :5], rate=p.frame_step(5) / 5, **kw)
    assert m[0] == n[1] and torch.equal(one[0], out[1, :, : n[1]])
    nocache, n2 = lm.generate(src, src_len, rate=p.frame_step(5) / src_len.float(), use_cache=False, **kw)
    assert torch.equal(n, n2) and torch.equal(out, nocache)


def test_aligned_source_reads_the_frame_being_rendered():
    """Source frame 3 reaches the target through the aligned table at the step that predicts
    frame 3 and, causally, after it; never before (the source prefix's own table is zeroed, so
    attention to the prefix carries nothing)."""
    torch.manual_seed(0)
    lm = _codec_src_lm("parallel", 2)
    with torch.no_grad():
        lm.src_emb.weight.zero_()
    src, codes = torch.randint(0, 10, (1, 2, 6)), torch.randint(0, 16, (1, 2, 6))
    src2 = src.clone()
    src2[0, :, 3] = (src[0, :, 3] + 1) % 10
    a, b = lm(src, codes).logits, lm(src2, codes).logits
    changed = (a - b).abs().amax((-1, -2))[0] > 1e-5  # per step
    assert changed.tolist() == [False, False, False, True, True, True, True]


def test_aligned_source_starts_at_zero_and_needs_a_codec_source():
    torch.manual_seed(0)
    plain = _lm("parallel", 2, src_codebooks=2, aligned_positions=True)
    with_table = TokenLM(LMConfig(**{**plain.cfg.__dict__, "aligned_source": True})).eval()
    missing, unexpected = with_table.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["src_frame_emb.weight"] and not unexpected
    src, codes = torch.randint(0, 10, (1, 2, 6)), torch.randint(0, 16, (1, 2, 6))
    torch.testing.assert_close(with_table(src, codes).logits, plain(src, codes).logits)
    with pytest.raises(ValueError, match="codec source"):
        _lm("parallel", 2, aligned_source=True)


@pytest.mark.parametrize("pattern,K", PATTERN_K)
def test_expected_codes_are_the_mean_index_under_teacher_forcing(pattern, K):
    torch.manual_seed(4)
    lm = _lm(pattern, K, sharp=True)
    src, codes = torch.randint(0, 10, (2, 5)), torch.randint(0, 16, (2, K, 7))
    src_len, T = torch.tensor([5, 3]), torch.tensor([7, 4])
    mean = lm.expected_codes(src, codes, src_len, T)
    assert mean.shape == (2, K, 7) and mean.dtype == torch.float32 and 0 <= mean.min() and mean.max() <= 15
    # the same number from forward(): softmax over each cell's own codebook, then the mean index
    p, out = lm.pattern, lm(src, codes, src_len, T)
    frame, book = p.layout(out.logits.shape[1])
    checked = 0
    for b in range(2):
        for s, h in ((s, h) for s in range(frame.shape[0]) for h in range(frame.shape[1]) if 0 <= frame[s, h] < T[b]):
            lo = int(p.offset(book[s, h]))
            want = (out.logits[b, s, h, lo : lo + 16].softmax(-1) * torch.arange(16)).sum()
            torch.testing.assert_close(mean[b, book[s, h], frame[s, h]], want, atol=1e-4, rtol=0)
            checked += 1
    assert checked == K * int(T.sum())


def _duration_lm(pattern="parallel", K=2) -> TokenLM:
    """A TTS-shaped model with durations and a trained-looking aligned-text table."""
    lm = _lm(pattern, K, sharp=True, durations=True, aligned_source=True, aligned_positions=True)
    with torch.no_grad():
        lm.src_frame_emb.weight.normal_(0, 0.5)
    lm.duration = DurationPredictor(lm.cfg.transformer.dim).eval()  # unsharpened: a few frames a symbol
    return lm


def test_durations_set_the_length_and_generation_agrees_with_teacher_forcing():
    torch.manual_seed(5)
    lm = _duration_lm()
    src, src_len = torch.randint(0, 10, (2, 4)), torch.tensor([4, 3])
    dur = torch.tensor([[1, 3, 2, 2], [2, 1, 4, 0]])
    out, n = lm.generate(src, src_len, durations=dur, sampling=GREEDY)
    assert n.tolist() == [8, 7]  # exactly the durations' sum: the end is placed, not sampled
    tf = lm(src, out, src_len, n, src_durations=dur)
    p = lm.pattern
    ids = torch.arange(p.vocab_size)
    best = tf.logits.masked_fill(~(ids < p.codebook_size), float("-inf")).argmax(-1)
    cells = (tf.targets != IGNORE) & (tf.targets != p.end_id)
    assert torch.equal(best[cells], tf.targets[cells])
    one, m = lm.generate(src[1:, :3], durations=dur[1:, :3], sampling=GREEDY)
    assert m.tolist() == [7] and torch.equal(one[0], out[1, :, :7])
    nocache, _ = lm.generate(src, src_len, durations=dur, sampling=GREEDY, use_cache=False)
    assert torch.equal(out, nocache)
    # with a speaker prompt the durations still count target frames; continuing one, from its start
    prompt = torch.randint(0, 16, (2, 2, 3))
    assert lm.generate(src, src_len, prompt, durations=dur, sampling=GREEDY)[1].tolist() == [8, 7]
    assert lm.generate(src, src_len, prompt, continue_prompt=True, durations=dur, sampling=GREEDY)[1].tolist() == [5, 4]
    # without durations the model's predictor supplies them
    pred = lm.predict_durations(src, src_len)
    assert (pred[0] >= 1).all() and pred[1, 3] == 0
    assert torch.equal(lm.generate(src, src_len, sampling=GREEDY)[1], pred.sum(1))


def test_aligned_text_reads_the_phoneme_of_the_frame_being_rendered():
    """Phoneme 1 lasts frames 2-4: through the aligned table it reaches the steps that predict
    frames 2-4 and, causally, those after; never before (the source prefix's own table is zeroed)."""
    torch.manual_seed(0)
    lm = _duration_lm()
    with torch.no_grad():
        lm.src_emb.weight.zero_()
    src, codes, dur = torch.tensor([[1, 2, 3]]), torch.randint(0, 16, (1, 2, 6)), torch.tensor([[2, 3, 1]])
    a = lm(src, codes, src_durations=dur).logits
    b = lm(src.where(torch.arange(3) != 1, 7), codes, src_durations=dur).logits
    changed = (a - b).abs().amax((-1, -2))[0] > 1e-5  # per step
    assert changed.tolist() == [False, False, True, True, True, True, True]


def test_duration_errors_and_the_predictor_loss():
    lm = _duration_lm()
    src, codes = torch.randint(0, 10, (1, 3)), torch.randint(0, 16, (1, 2, 6))
    with pytest.raises(ValueError, match="needs src_durations"):
        lm(src, codes)
    with pytest.raises(ValueError, match="sum to"):
        lm(src, codes, src_durations=torch.tensor([[2, 2, 1]]))
    out = lm(src, codes, src_durations=torch.tensor([[2, 3, 1]]))
    torch.testing.assert_close(out.loss, out.token_loss + out.duration_loss)
    with pytest.raises(ValueError, match="leave no target frames"):
        lm.generate(
            src,
            torch.tensor([3]),
            torch.zeros(1, 2, 6, dtype=torch.long),
            continue_prompt=True,
            durations=torch.tensor([[2, 3, 1]]),
        )
    with pytest.raises(ValueError, match="no duration predictor"):
        _lm("parallel", 2).predict_durations(src)
    with pytest.raises(ValueError, match="text sources"):
        _lm("parallel", 2, src_codebooks=2, durations=True)


def test_expected_codes_with_test_time_frame_dropout():
    torch.manual_seed(5)
    lm = _lm("parallel", 2, sharp=True)
    src, codes = torch.randint(0, 10, (2, 5)), torch.randint(0, 16, (2, 2, 7))
    src_len, T = torch.tensor([5, 3]), torch.tensor([7, 4])
    plain = lm.expected_codes(src, codes, src_len, T)
    gen = torch.Generator().manual_seed(3)
    one, two = (lm.expected_codes(src, codes, src_len, T, blank_share=0.5, generator=gen) for _ in range(2))
    both = lm.expected_codes(
        src, codes, src_len, T, blank_share=0.5, passes=2, generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(both, (one + two) / 2)  # the mean over passes, each its own draw
    assert not torch.allclose(one, plain) and not torch.allclose(one, two)
    # every target frame blanked: the codes fed back no longer matter
    other = torch.randint(0, 16, (2, 2, 7))
    full = [
        lm.expected_codes(src, c, src_len, T, blank_share=0.999, generator=torch.Generator().manual_seed(0))
        for c in (codes, other)
    ]
    torch.testing.assert_close(full[0], full[1])
    # prompt frames are never blanked (training's frame dropout spares them too)
    spared = [lm.expected_codes(src, codes, src_len, T, T, blank_share=bs) for bs in (0.999, 0.0)]
    for b, n in enumerate(T.tolist()):  # (frames past a row's length are padding)
        torch.testing.assert_close(spared[0][b, :, :n], spared[1][b, :, :n])
    with pytest.raises(ValueError, match="blank_share"):
        lm.expected_codes(src, codes, src_len, T, blank_share=1.0)


def test_speaker_embedding_conditions_every_audio_step():
    """A voice embedding joins the audio inputs: zero-initialised (a warm start is unchanged), it
    then moves the logits of prompt-free rows and the sampled codes; models refuse a missing or
    unexpected one."""
    torch.manual_seed(0)
    src, codes = torch.randint(0, 10, (2, 5)), torch.randint(0, 16, (2, 3, 7))
    durations = torch.tensor([[2, 1, 1, 2, 1], [1, 1, 2, 2, 1]])
    kw = dict(durations=True, aligned_source=True, aligned_positions=True)
    lm = _lm("parallel", 3, sharp=True, speaker_dim=4, **kw)
    base = _lm("parallel", 3, sharp=True, **kw)
    base.load_state_dict({k: v for k, v in lm.state_dict().items() if not k.startswith("voice.")})
    a, b = torch.nn.functional.normalize(torch.randn(2, 2, 4), dim=-1)
    out = lm(src, codes, src_durations=durations, speaker=a).logits
    torch.testing.assert_close(out, base(src, codes, src_durations=durations).logits)  # zero voice weights
    with torch.no_grad():
        torch.nn.init.normal_(lm.voice.weight, std=1.0)
    assert not torch.allclose(lm(src, codes, src_durations=durations, speaker=a).logits, out, atol=1e-3)
    one, _ = lm.generate(src, durations=durations, speaker=a, seed=0)
    again, _ = lm.generate(src, durations=durations, speaker=a, seed=0)
    other, _ = lm.generate(src, durations=durations, speaker=b, seed=0)
    assert torch.equal(one, again) and not torch.equal(one, other)
    with pytest.raises(ValueError, match=r"needs a speaker embedding \[B=2, 4\], got None"):
        lm(src, codes, src_durations=durations)
    with pytest.raises(ValueError, match="takes no speaker embedding"):
        base(src, codes, src_durations=durations, speaker=a)
