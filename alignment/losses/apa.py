"""APA: Zhu et al. 2023, "Fine-Tuning Language Models with Advantage-Induced Policy
Alignment" (reference code microsoft/RLHF-APA, `trlx/models/modeling_sppo.py`);
ALGORITHMS.md §4.

The KL-regularised optimum is π*(a|s) ∝ π_init(a|s) exp(Â(s,a)/λ); with the normaliser
taken as 1, APA regresses log π_θ onto log π* with a squared error on rollout tokens:

    L_APA = token-mean ( log π_θ(a_t|s_t) − Â_t/λ − log π_init(a_t|s_t) )²

π_init is the initial (SFT) policy for the whole run, not π_old; Â are the whitened GAE
advantages; there is no ratio and no clipping. The code's `adv_coeff_sq` is 1/λ.
The repository's AWR baseline, token-mean(−log π_θ · exp(c Â)), is `awr_loss`.
"""

from __future__ import annotations

import torch

from alignment.losses.gae import _check, as_batch
from alignment.losses.ppo import _token_mean


def apa_loss(logps: torch.Tensor, init_logps: torch.Tensor, advantages: torch.Tensor,
             mask: torch.Tensor, lam: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, metrics); all tensors (batch, tokens) (or 1-D: one sequence), `lam` the
    advantage coefficient λ."""
    _, (logps, init_logps, advantages, mask) = as_batch(logps, init_logps, advantages, mask)
    _check(mask, logps, init_logps, advantages)
    if not lam > 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    valid = mask.bool()
    target = init_logps.to(logps.dtype) + advantages.to(logps.dtype) / lam
    residual = torch.where(valid, logps - target, 0.0)
    loss = _token_mean(residual ** 2, valid)
    with torch.no_grad():
        metrics = {"residual": _token_mean(residual.abs(), valid),
                   # k1 of π_θ vs the anchor at the rollout tokens: how far APA has moved
                   "init_log_ratio": _token_mean(logps - init_logps, valid)}
    return loss, metrics


def awr_loss(logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
             coef: float = 0.5) -> torch.Tensor:
    """Advantage-weighted regression, APA's baseline: token-mean(−log π_θ · exp(c Â))."""
    _, (logps, advantages, mask) = as_batch(logps, advantages, mask)
    _check(mask, logps, advantages)
    weights = torch.exp(coef * advantages.to(logps.dtype))
    return _token_mean(-logps * weights, mask.bool())
