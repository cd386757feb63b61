"""Per-token estimators of KL(π‖π_ref) at tokens sampled from π (Schulman, "Approximating
KL divergence", http://joschu.net/blog/kl-approx.html; ALGORITHMS.md §0).

With Δ = log π_ref − log π at the sampled token:
    k1 = −Δ                  unbiased, can be negative per token (PPO's reward penalty)
    k3 = e^Δ − 1 − Δ         unbiased, always ≥ 0, lower variance (GRPO's loss term)
"""

from __future__ import annotations

import torch

ESTIMATORS = ("k1", "k3")


def k1_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    return logps - ref_logps


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(π_θ‖π_ref) at the sampled tokens (unbiased, ≥ 0)."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str) -> torch.Tensor:
    if estimator == "k1":
        return k1_kl(logps, ref_logps)
    if estimator == "k3":
        return k3_kl(logps, ref_logps)
    raise ValueError(f"KL estimator must be one of {ESTIMATORS}, got {estimator!r}")
