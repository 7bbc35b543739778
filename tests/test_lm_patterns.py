import pytest
import torch

from speechtok.lm.patterns import PATTERNS, make_pattern


def _cases():
    for name in PATTERNS:
        for K in [1] if name == "single" else [1, 2, 4, 8]:
            for T in (1, 3, 17):
                yield name, K, T


@pytest.mark.parametrize("name,K,T", list(_cases()))
def test_round_trip_exact(name, K, T):
    p = make_pattern(name, K, 11)
    codes = torch.randint(0, 11, (3, K, T))
    seq = p.interleave(codes)
    assert seq.shape == (3, p.n_steps(T), p.n_heads)
    assert seq.max() < p.vocab_size and seq.min() >= 0
    assert torch.equal(p.deinterleave(seq), codes)
    assert p.n_frames(seq.shape[1]) == T


def test_delay_shifts_codebook_k_by_k_frames():
    p = make_pattern("delay", 4, 32)
    codes = torch.randint(0, 32, (2, 4, 6))
    seq = p.interleave(codes)
    assert seq.shape == (2, 6 + 3, 4)
    for k in range(4):
        assert torch.equal(seq[:, k : k + 6, k], codes[:, k])
        assert (seq[:, :k, k] == p.pad_id).all() and (seq[:, k + 6 :, k] == p.pad_id).all()


def test_flatten_is_frame_major_with_codebook_offsets():
    p = make_pattern("flatten", 3, 10)
    codes = torch.randint(0, 10, (2, 3, 5))
    seq = p.interleave(codes)[..., 0]
    assert p.n_heads == 1 and p.vocab_size == 3 * 10 + 2
    expected = (codes + torch.arange(3)[None, :, None] * 10).transpose(1, 2).reshape(2, 15)
    assert torch.equal(seq, expected)


def test_parallel_puts_a_whole_frame_in_one_step():
    p = make_pattern("parallel", 80, 16)  # dMel: 80 channels x 16 bins
    codes = torch.randint(0, 16, (2, 80, 7))
    seq = p.interleave(codes)
    assert seq.shape == (2, 7, 80) and p.vocab_size == 18
    assert torch.equal(seq, codes.transpose(1, 2))


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_lengths_pad_each_row(name):
    K = 1 if name == "single" else 3
    p = make_pattern(name, K, 9)
    codes = torch.randint(0, 9, (2, K, 6))
    seq = p.interleave(codes, torch.tensor([6, 2]))
    assert torch.equal(seq[0], p.interleave(codes[:1])[0])
    short = p.interleave(codes[1:, :, :2])[0]
    assert torch.equal(seq[1, : short.shape[0]], short)
    assert (seq[1, short.shape[0] :] == p.pad_id).all()
    assert torch.equal(p.deinterleave(seq[1:, : short.shape[0]]), codes[1:, :, :2])


def test_end_goes_where_the_next_frame_would_start():
    assert make_pattern("flatten", 4, 8).frame_step(5) == 20
    assert make_pattern("delay", 4, 8).frame_step(5) == 5
    frame, book = make_pattern("delay", 4, 8).layout(9)
    assert frame[5, 0] == 5 and book[5, 0] == 0


def test_bad_input_is_rejected():
    p = make_pattern("delay", 2, 8)
    with pytest.raises(ValueError, match="expected codes"):
        p.interleave(torch.zeros(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="lie in"):
        p.interleave(torch.full((1, 2, 4), 8))
    with pytest.raises(ValueError, match="unknown pattern"):
        make_pattern("zigzag", 2, 8)
    with pytest.raises(ValueError, match="n_codebooks == 1"):
        make_pattern("single", 2, 8)
