"""PPO-max's pure parts (alignment/losses/ppo_max.py) and the entropy metric: the running
moments are those of every score concatenated, however the scores were split; the
normalisation and the clipping by hand; the entropy against a direct softmax."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignment.losses import (
    Moments,
    fused_token_entropy,
    normalize_scores,
    symmetric_clip,
)


def _batches():
    g = torch.Generator().manual_seed(0)
    # scores of very different scale and size per step (one of a single value)
    return [torch.randn(5, generator=g) * 3 + 7, torch.randn(1, generator=g),
            torch.randn(17, generator=g) * 0.1 - 2, torch.tensor([40.0, -40.0])]


def test_running_moments_equal_numpy_over_the_concatenation():
    running = Moments()
    seen = []
    for batch in _batches():
        running = running.merge(Moments.of(batch))
        seen.append(batch.double().numpy())
        flat = np.concatenate(seen)
        assert running.count == flat.size
        assert running.mean == pytest.approx(flat.mean(), rel=1e-12, abs=1e-12)
        assert running.std == pytest.approx(flat.std(), rel=1e-12)    # population std


def test_moments_merged_over_processes_from_their_sums():
    """Each process's (n, Σs, Σs²), summed as `_sum_vector` sums them, then merged into the
    running moments: the same as one process holding every score."""
    history = torch.tensor([0.5, 1.5, -2.0])
    step = torch.tensor([3.0, 4.0, 5.0, -1.0, 0.25, 8.0])
    shares = [step[:1], step[1:4], step[4:], step[:0]]     # 4 processes, one with nothing
    summed = np.sum([[s.numel(), s.double().sum().item(), (s.double() ** 2).sum().item()]
                     for s in shares], axis=0)
    merged = Moments.of(history).merge(Moments.from_sums(*summed))
    flat = torch.cat([history, step]).double().numpy()
    assert (merged.count, merged.mean) == (9.0, pytest.approx(flat.mean(), rel=1e-12))
    assert merged.var == pytest.approx(flat.var(), rel=1e-12)
    # Chan's update by hand for two one-value sets {1} and {3}: mean 2, M2 = 0 + 0 + 4·1·1/2
    assert Moments.of(torch.tensor([1.0])).merge(Moments.of(torch.tensor([3.0]))) == \
        Moments(2.0, 2.0, 2.0)
    assert Moments().merge(Moments()) == Moments() and Moments().var == 0.0


def test_scores_normalised_by_the_running_moments_then_clipped():
    moments = Moments.of(torch.tensor([0.0, 2.0]))           # mean 1, population var 1
    scores = torch.tensor([1.0, 2.0, 3.0, 10.0, -8.0])
    out, hit = normalize_scores(scores, moments, clip=5.0)
    torch.testing.assert_close(out, torch.tensor([0.0, 1.0, 2.0, 5.0, -5.0]), rtol=1e-7,
                               atol=1e-7)                   # (s - 1) / √(1 + 1e-8), ±5
    assert hit.tolist() == [False, False, False, True, True]
    raw, none = normalize_scores(scores, None, clip=2.5)     # clip without normalising
    assert raw.tolist() == [1.0, 2.0, 2.5, 2.5, -2.5] and none.sum() == 3
    same, _ = normalize_scores(scores, None, None)
    assert same is scores                                    # both off: untouched


def test_symmetric_clip():
    x = torch.tensor([-3.0, -0.5, 0.0, 2.0])
    assert symmetric_clip(x, None) is x
    assert symmetric_clip(x, 1.0).tolist() == [-1.0, -0.5, 0.0, 1.0]
    with pytest.raises(ValueError, match="> 0"):
        symmetric_clip(x, 0.0)


def test_fused_entropy_matches_a_direct_softmax():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(7, 4, generator=g, dtype=torch.float64)
    weight = torch.randn(11, 4, generator=g, dtype=torch.float64)
    for temperature in (1.0, 0.7):
        z = hidden @ weight.T / temperature
        direct = torch.distributions.Categorical(logits=z).entropy()
        # chunk_elements 22: two positions per chunk, so the chunking is exercised
        ours = fused_token_entropy(hidden, weight, temperature=temperature, chunk_elements=22)
        torch.testing.assert_close(ours, direct, rtol=1e-12, atol=1e-12)
    uniform = fused_token_entropy(torch.zeros(2, 4), torch.randn(11, 4))
    torch.testing.assert_close(uniform, torch.full((2,), math.log(11)))   # the maximum
