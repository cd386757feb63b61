"""DR-PO's dataset resets (Chang et al. 2024, "Dataset Reset Policy Optimization for RLHF",
Algorithm 1; the `RollinProcessor` of the reference code Cornell-RL/tril; ALGORITHMS.md §7.2).

A reset puts the policy in the state (x, y_data[:k]): the first k tokens of a dataset
response are forced, and generation continues from there. For a response of L tokens (its
EOS included) k is uniform on 1..L−1, so at least the last token is the policy's own;
a response with L < 2 is never reset. Each sample is reset with probability `reset_prob`.
"""

from __future__ import annotations

import random


def sample_resets(lengths: list[int], reset_prob: float, seed: int) -> list[int]:
    """One reset length per sample: 0 = no reset (generate from the prompt), else k forced
    tokens. Reproducible: the same (lengths, reset_prob, seed) give the same list."""
    if not 0.0 <= reset_prob <= 1.0:
        raise ValueError(f"reset_prob must be in [0, 1], got {reset_prob}")
    rng = random.Random(seed)
    out = []
    for length in lengths:
        reset = rng.random() < reset_prob   # drawn for every sample: streams stay aligned
        k = rng.randint(1, length - 1) if length >= 2 else 0
        out.append(k if reset else 0)
    return out
