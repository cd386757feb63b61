"""PPO for language models: Schulman et al. 2017, "Proximal Policy Optimization
Algorithms", Eq. 7 (clipped surrogate) and Eq. 9 (value term), with the RLHF recipe of
Ziegler et al. 2019 / InstructGPT (Ouyang et al. 2022, Eq. 2: the KL penalty to the SFT
policy lives in the per-token reward) and the implementation details of Huang et al. 2024
("The N+ Implementation Details of RLHF with PPO"). ALGORITHMS.md §1.

    r_t   = −β_KL · k_t  (+ score at the last response token)      k = k1 (or k3)
    L_pg  = token-mean  max(−A_t ρ_t, −A_t clip(ρ_t, 1 − ε, 1 + ε))   ρ_t = π_θ / π_old
    L_V   = ½ token-mean  max((V − G)², (clip(V, V_old ± ε_v) − G)²)
    β_KL ← β_KL (1 + clip(KL / KL_target − 1, ±0.2) · n / horizon)   (adaptive, Ziegler §2.2)

DR-PO's policy loss is `ppo_policy_loss` with the reset (forced) tokens off the mask
(Chang et al. 2024, Algorithm 1; ALGORITHMS.md §7.4).
"""

from __future__ import annotations

import torch

from alignment.losses.gae import _check, as_batch
from alignment.losses.kl import kl_estimate


def _token_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1)


def last_token_mask(mask: torch.Tensor) -> torch.Tensor:
    """True at the last valid token of each row (none for an empty row)."""
    mask = mask.bool()
    return mask & (mask.long().cumsum(1) == mask.long().sum(1, keepdim=True))


def kl_penalized_rewards(scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor,
                         mask: torch.Tensor, kl_coef: float,
                         estimator: str = "k1") -> torch.Tensor:
    """(batch, tokens) per-token rewards: −kl_coef · k per valid token, plus the sequence's
    score at its last valid token (the EOS when the response ended). `logps` are the
    rollout policy's (π_old), `scores` (batch,). 1-D inputs: one sequence."""
    single, (logps, ref_logps, mask) = as_batch(logps, ref_logps, mask)
    if single:
        scores = torch.as_tensor(scores, dtype=logps.dtype, device=logps.device).reshape(1)
        return kl_penalized_rewards(scores, logps, ref_logps, mask, kl_coef, estimator)[0]
    _check(mask, logps, ref_logps)
    if scores.shape != mask.shape[:1]:
        raise ValueError(f"scores must be (batch,) = {tuple(mask.shape[:1])}, got "
                         f"{tuple(scores.shape)}")
    m = mask.to(logps.dtype)
    kl = kl_estimate(logps, torch.where(mask.bool(), ref_logps, logps), estimator)
    rewards = -kl_coef * kl * m
    return rewards + last_token_mask(mask).to(logps.dtype) * scores.to(logps.dtype)[:, None]


def ppo_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, clip: float = 0.2
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-mean of the clipped surrogate over `mask`. `advantages` per token (batch,
    tokens) or per sequence (batch,); 1-D logps: one sequence, advantages per token."""
    _, (logps, old_logps, advantages, mask) = as_batch(logps, old_logps, advantages, mask)
    _check(mask, logps, old_logps)
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logps)
    _check(mask, advantages)
    if not clip >= 0:
        raise ValueError(f"clip must be >= 0, got {clip}")
    valid = mask.bool()
    adv = advantages.to(logps.dtype)
    # 0 off the mask: a padded position can never overflow exp() into inf * 0 = NaN
    log_ratio = torch.where(valid, logps - old_logps, 0.0)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = _token_mean(torch.max(unclipped, clipped), valid)
    with torch.no_grad():
        metrics = {"clip_fraction": _token_mean((clipped > unclipped).to(logps.dtype), valid),
                   "approx_kl": _token_mean(ratio - 1 - log_ratio, valid),   # k3 of π_old‖π_θ
                   "ratio": _token_mean(ratio, valid)}
    return loss, metrics


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                   mask: torch.Tensor, clip: float | None = 0.2
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """½ token-mean of the clipped squared error (`clip=None`: plain ½ (V − G)²)."""
    _, (values, old_values, returns, mask) = as_batch(values, old_values, returns, mask)
    _check(mask, values, old_values, returns)
    valid = mask.bool()
    returns = returns.to(values.dtype)
    error = (values - returns) ** 2
    if clip is None:
        per_token = error
        clipped_share = torch.zeros((), dtype=values.dtype, device=values.device)
    else:
        bounded = old_values + torch.clamp(values - old_values, -clip, clip)
        error_clipped = (bounded - returns) ** 2
        per_token = torch.max(error, error_clipped)
        clipped_share = _token_mean((error_clipped > error).to(values.dtype), valid).detach()
    loss = 0.5 * _token_mean(per_token, valid)
    return loss, {"value_clip_fraction": clipped_share,
                  "values": _token_mean(values.detach(), valid)}


def adaptive_kl_coef(kl_coef: float, observed_kl: float, target: float, horizon: float,
                     n_steps: int) -> float:
    """Ziegler et al. 2019 §2.2: move β_KL towards the KL target, at most ±20% of the error
    per `horizon` samples; `n_steps` = samples in the batch just seen."""
    if not (target > 0 and horizon > 0):
        raise ValueError(f"target and horizon must be > 0, got {target}, {horizon}")
    error = min(max(observed_kl / target - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + error * n_steps / horizon)
