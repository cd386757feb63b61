"""CoPG loss: Flet-Berliac et al. 2024, "Contrastive Policy Gradient: Aligning LLMs on
sequence-level scores in a supervised-friendly fashion", Eq. 7 (sample objective) and
Eq. 17 (its empirical mean); ALGORITHMS.md §5.

Two completions y, y′ of the same prompt, each with a scalar reward R. With the
regularised reward R^π_β(y) = R(y) − β h(y), h(y) = ℓ_π(y) − ℓ_ref(y) (sequence SUMS):

    ℓ(y, y′) = (R^π_{β/2}(y) − R^π_{β/2}(y′)) h(y) + (R^π_{β/2}(y′) − R^π_{β/2}(y)) h(y′)

is maximised; its gradient (Eqs. 18-19) is the contrastive policy gradient with the FULL β,

    ∇ℓ = (R^π_β(y) − R^π_β(y′)) (∇ℓ_π(y) − ∇ℓ_π(y′)),

each sample's regularised reward baselined by the other's. With both samples drawn from the
current policy this is RLOO with k = 2 (Property 2); with R = ±1/4 it is IPO with τ = β
(Property 3).
"""

from __future__ import annotations

import torch

from .dpo import check_preference_logps


def copg_loss(
    policy_logps: torch.Tensor,
    policy_logps_other: torch.Tensor,
    ref_logps: torch.Tensor,
    ref_logps_other: torch.Tensor,
    rewards: torch.Tensor,
    rewards_other: torch.Tensor,
    beta: float = 0.06,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """−mean ℓ over pairs (Eq. 7 with β/2 inside ℓ, differentiated as written: no
    stop-gradient, so the gradient carries the weight R^π_β(y) − R^π_β(y′) with the full β).

    Args:
        policy_logps, policy_logps_other: (B,) sequence log-probs ℓ_π of y and y′ (sums
            over completion tokens).
        ref_logps, ref_logps_other: (B,) the same under π_ref.
        rewards, rewards_other: (B,) scalar rewards R(x, y), R(x, y′); finite.
        beta: KL strength (the paper's best on TL;DR: 0.06, stable 0.03-0.1).

    Returns:
        ``(loss, metrics)``: 0-dim loss and detached batch means ``copg/weight`` (|R^π_β(y) −
        R^π_β(y′)|, the gradient's contrastive weight), ``copg/reward_gap`` (|R(y) − R(y′)|),
        ``copg/logratio`` (mean h over both samples), ``copg/accuracy`` (pairs whose higher-
        reward sample has the higher h, ties in reward excluded), ``logps/policy``.

    Squared form, for checking: with d = R(y) − R(y′) and u = h(y) − h(y′),
    −ℓ = (d − βu)²/(2β) − d²/(2β): minimising is regressing βu onto the reward gap.
    """
    check_preference_logps(beta, "beta", policy_logps, policy_logps_other, ref_logps,
                           ref_logps_other)
    for name, r in (("rewards", rewards), ("rewards_other", rewards_other)):
        if not isinstance(r, torch.Tensor) or r.shape != policy_logps.shape:
            raise ValueError(f"{name} must be a tensor of shape {tuple(policy_logps.shape)}")
        if not torch.isfinite(r).all():
            raise ValueError(f"{name} must be finite, got {r.tolist()}")
    rewards = rewards.to(policy_logps)
    rewards_other = rewards_other.to(policy_logps)
    h = policy_logps - ref_logps                   # (B,)
    h_other = policy_logps_other - ref_logps_other  # (B,)
    half = beta / 2
    gap = (rewards - half * h) - (rewards_other - half * h_other)   # R^π_{β/2}(y) − R^π_{β/2}(y′)
    objective = gap * h - gap * h_other                              # Eq. 7, per pair
    loss = -objective.mean()
    with torch.no_grad():
        weight = (rewards - beta * h) - (rewards_other - beta * h_other)
        decided = rewards != rewards_other
        right = ((h - h_other) * (rewards - rewards_other) > 0) & decided
        metrics = {
            "copg/weight": weight.abs().mean(),
            "copg/reward_gap": (rewards - rewards_other).abs().mean(),
            "copg/logratio": torch.cat([h, h_other]).mean(),
            "copg/accuracy": right.float().sum() / decided.float().sum().clamp(min=1),
            "logps/policy": torch.cat([policy_logps, policy_logps_other]).mean(),
        }
    return loss, metrics
