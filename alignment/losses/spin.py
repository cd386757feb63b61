"""SPIN loss: Chen et al. 2024, "Self-Play Fine-Tuning Converts Weak Language Models to
Strong Language Models", Eq. 4.7 (the loss of iteration t+1); code uclaml/SPIN
``spin/alignment/trainer.py`` (``spin_loss``). ALGORITHMS.md §6.

The real (SFT) response y should become more likely than the model's own y′, relative
to the opponent θ_t (the model at the start of the iteration, frozen):

    z = λ (ℓ_θ(y) − ℓ_θt(y)) − λ (ℓ_θ(y′) − ℓ_θt(y′))          (sequence SUMS)
    L = mean ℓ(z),   ℓ(z) = log(1 + e^{−z})  (logistic)  or  max(0, 1 − z)  (hinge)

This is DPO with chosen = real, rejected = generated, reference = θ_t and β = λ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dpo import check_preference_logps, preference_metrics

LOSS_TYPES = ("sigmoid", "hinge")


def spin_loss(
    policy_real: torch.Tensor,
    policy_generated: torch.Tensor,
    opponent_real: torch.Tensor,
    opponent_generated: torch.Tensor,
    lam: float = 0.1,
    loss_type: str = "sigmoid",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SPIN loss averaged over the batch.

    Args:
        policy_real, policy_generated: (B,) sequence log-probs (sums over completion tokens)
            of the real and the self-generated response under the model being trained.
        opponent_real, opponent_generated: (B,) the same under the opponent θ_t.
        lam: λ > 0 (paper: 0.1, raised to 5.0 at the last iteration).
        loss_type: "sigmoid" = log(1 + e^{−z}) (paper), "hinge" = relu(1 − z) (code option).

    Returns:
        ``(loss, metrics)``: 0-dim loss and ``dpo_loss``'s metric keys with chosen = real,
        rejected = generated (``rewards/chosen`` is λ(ℓ_θ(y) − ℓ_θt(y)), the paper code's
        "real reward").

    At the first step of every iteration θ = θ_t, z = 0 and the logistic loss is log 2.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    check_preference_logps(lam, "lam", policy_real, policy_generated, opponent_real,
                           opponent_generated)
    z = lam * ((policy_real - opponent_real) - (policy_generated - opponent_generated))   # (B,)
    per_pair = -F.logsigmoid(z) if loss_type == "sigmoid" else F.relu(1 - z)
    metrics = preference_metrics(lam, policy_real, policy_generated, opponent_real,
                                 opponent_generated)
    return per_pair.mean(), metrics
