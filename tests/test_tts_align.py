"""The phoneme aligner: monotonic search, forward-sum loss, and durations recovered on a toy corpus."""

import numpy as np
import pytest
import torch

from speechtok.tts.align import diagonal_prior, durations, forward_sum_loss, monotonic_search, train_aligner

pytestmark = pytest.mark.usefixtures("one_thread")


def _path_logp(durs, n_sym=None, sharp=5.0) -> np.ndarray:
    """[F, L] log-probabilities peaked on the path that gives symbol i durs[i] frames."""
    owner = np.repeat(np.arange(len(durs)), durs)
    logp = np.full((len(owner), n_sym or len(durs)), -sharp)
    logp[np.arange(len(owner)), owner] = 0.0
    return logp


def test_monotonic_search_recovers_the_path_and_keeps_every_symbol():
    assert monotonic_search(_path_logp([2, 3, 1, 4])).tolist() == [2, 3, 1, 4]
    flat = monotonic_search(np.zeros((7, 7)))
    assert flat.tolist() == [1] * 7  # as many frames as symbols: one each
    rng = np.random.default_rng(0)
    d = monotonic_search(rng.normal(size=(40, 13)))
    assert d.sum() == 40 and d.min() >= 1
    with pytest.raises(ValueError, match="cannot hold"):
        monotonic_search(np.zeros((3, 4)))


def test_forward_sum_loss_prefers_monotonic_alignments():
    good = torch.from_numpy(_path_logp([2, 3, 1, 4])).float()[None]
    bad = good.flip(1)  # the same frames in reverse: the last symbol first
    lens = torch.tensor([4]), torch.tensor([10])
    assert forward_sum_loss(good, *lens) < forward_sum_loss(bad, *lens) - 1.0


def test_diagonal_prior_is_a_distribution_peaked_on_the_diagonal():
    prior = diagonal_prior(torch.tensor([5]), torch.tensor([20]), 6, 24)[0]
    torch.testing.assert_close(prior[:20, :5].exp().sum(-1), torch.ones(20), atol=1e-4, rtol=0)
    assert prior[0, :5].argmax() == 0 and prior[19, :5].argmax() == 4 and prior[10, :5].argmax() == 2
    assert (prior[20:] == 0).all() and (prior[:, 5:] == 0).all()


def test_aligner_learns_durations_on_a_toy_corpus():
    """Each of 6 symbols sounds as its own code pattern for a random number of frames: the trained
    aligner must find those durations."""
    rng = np.random.default_rng(0)
    sound = torch.from_numpy(rng.integers(0, 8, size=(6, 3)))  # symbol -> codes of its 3 codebooks
    items, truth = [], []
    for _ in range(48):
        n = int(rng.integers(4, 8))
        sym = torch.from_numpy(np.cumsum(rng.integers(1, 6, size=n)) % 6)  # no symbol twice in a row
        d = rng.integers(1, 6, size=len(sym))
        items.append((sym, sound[np.repeat(sym.numpy(), d)].T.contiguous()))
        truth.append(d)
    torch.manual_seed(0)
    model = train_aligner(items, 6, 8, steps=300, batch_size=8, lr=0.01, dim=32, log_every=0)
    found = durations(model, items)
    exact = np.mean([np.array_equal(f, t) for f, t in zip(found, truth)])
    close = np.mean(np.concatenate([np.abs(f - t) for f, t in zip(found, truth)]) <= 1)
    assert all(f.sum() == t.sum() and f.min() >= 1 for f, t in zip(found, truth))
    assert exact >= 0.9 and close == 1.0, (exact, close)


def test_aligner_training_leaves_the_callers_random_state_alone():
    items = [(torch.tensor([0, 1, 2]), torch.randint(0, 4, (2, 9))) for _ in range(4)]
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    train_aligner(items, 3, 4, steps=2, batch_size=2, dim=8, log_every=0)
    assert torch.equal(torch.rand(3), expected)
