"""GRPO: Shao et al. 2024, "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in
Open Language Models", Eq. 3 (outcome supervision, §4.1.2), and its two normalisation
variants (ALGORITHMS.md §8):

* Dr. GRPO — Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical
  Perspective", §3.1: advantages r − mean(r) (no std division) and a constant
  normaliser Σ / (batch × max_length) instead of per-sequence length means.
* DAPO — Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at
  Scale", Eq. 8-10: token-mean over the whole batch, asymmetric clip (ε_low, ε_high),
  soft overlong punishment (Eq. 13), dynamic sampling (in the trainer).

Per token, with ρ = π_θ / π_old and Â the sample's advantage:

    ℓ_t = −min(ρ Â, clip(ρ, 1 − ε_low, 1 + ε_high) Â) + β · k3_t
    k3_t = π_ref/π_θ − log(π_ref/π_θ) − 1          (KL estimate in the loss, not the reward)
"""

from __future__ import annotations

import torch

from alignment.losses.kl import k3_kl

AGGREGATIONS = ("grpo", "token_mean", "dr_grpo")


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True,
                     ddof: int = 1, eps: float = 1e-4,
                     valid: torch.Tensor | None = None) -> torch.Tensor:
    """Â_i = (r_i − mean(group)) / (std(group) + eps); `scale=False` keeps r_i − mean
    (Dr. GRPO). `rewards` is 1-D, group after group (batch = groups × group_size).
    A group whose rewards are all equal gets advantages 0 (no learning signal).

    `valid` (bool, like `rewards`): samples that count. The others (e.g. a NaN reward)
    are left out of their group's mean and std, as if the group were smaller, and get
    advantage 0; a group with at most `ddof` valid samples gets 0 throughout when scaled."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (batch,), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if valid is not None:
        return _valid_group_advantages(rewards, valid, group_size, scale, ddof, eps)
    groups = rewards.double().view(-1, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale and group_size > ddof:
        centred = centred / (groups.std(dim=1, correction=ddof, keepdim=True) + eps)
    elif scale:  # a single sample: no spread to normalise by, and r − mean is 0 anyway
        centred = torch.zeros_like(centred)
    return centred.view(-1).to(rewards.dtype)


def _valid_group_advantages(rewards, valid, group_size, scale, ddof, eps) -> torch.Tensor:
    ok = valid.bool().view(-1, group_size)
    groups = torch.where(ok, rewards.double().view(-1, group_size), 0.0)   # NaN -> 0, unused
    n = ok.sum(dim=1, keepdim=True)                                        # (groups, 1)
    centred = torch.where(ok, groups - groups.sum(dim=1, keepdim=True) / n.clamp(min=1), 0.0)
    if scale:
        std = ((centred ** 2).sum(dim=1, keepdim=True) / (n - ddof).clamp(min=1)).sqrt()
        centred = torch.where(n > ddof, centred / (std + eps), 0.0)
    return centred.view(-1).to(rewards.dtype)


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, clip_low: float = 0.2,
              clip_high: float = 0.2, beta: float | torch.Tensor = 0.04,
              aggregation: str = "grpo",
              max_length: int | None = None, is_weights: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate with a k3 KL term, reduced over `mask`ed response tokens.

    logps, old_logps, ref_logps, mask: (batch, tokens); advantages: (batch,).
    is_weights: (batch, tokens) constant per-token weights of the surrogate term (truncated
    importance sampling, `truncated_is_weights`); None = 1.
    beta: the KL coefficient, or a (batch, tokens) tensor of one per token (SCoRe's stage I
    holds a first attempt with a large one on its tokens only).
    aggregation: "grpo" = mean over sequences of each sequence's token mean (the paper);
    "token_mean" = Σ / (valid tokens in the batch) (DAPO); "dr_grpo" = Σ / (batch ×
    max_length) with `max_length` the generation budget (default: the tensor width).
    The caller normalises across micro-batches: weight each micro-batch's loss by its
    sequences ("grpo", "dr_grpo") or tokens ("token_mean"), see `aggregation_weight`.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if logps.shape != old_logps.shape or logps.shape != mask.shape or logps.dim() != 2:
        raise ValueError(f"logps {tuple(logps.shape)}, old_logps {tuple(old_logps.shape)} and "
                         f"mask {tuple(mask.shape)} must be the same (batch, tokens) shape")
    if advantages.shape != logps.shape[:1]:
        raise ValueError(f"advantages must be (batch,) = {tuple(logps.shape[:1])}, got "
                         f"{tuple(advantages.shape)}")
    if torch.is_tensor(beta):
        if beta.shape != logps.shape:
            raise ValueError(f"a per-token beta must be (batch, tokens) = {tuple(logps.shape)}, "
                             f"got {tuple(beta.shape)}")
        beta = beta.to(logps.device, logps.dtype)
    use_kl = bool((beta > 0).any()) if torch.is_tensor(beta) else beta > 0
    if use_kl and ref_logps is None:
        raise ValueError("beta > 0 needs ref_logps (the reference model's log-probs)")
    valid = mask.bool()
    mask = mask.to(logps.dtype)
    adv = advantages.to(logps.dtype).unsqueeze(1)
    # zeroed off the mask so that padding can never overflow exp() into inf * 0 = NaN
    ratio = torch.exp(torch.where(valid, logps - old_logps, 0.0))
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * adv
    per_token = -torch.min(unclipped, clipped)
    if is_weights is not None:
        per_token = per_token * is_weights.detach().to(per_token.dtype)
    kl = (k3_kl(logps, torch.where(valid, ref_logps, logps)) if ref_logps is not None
          else torch.zeros_like(logps))
    if use_kl:
        per_token = per_token + beta * kl
    loss = _aggregate(per_token, mask, aggregation, max_length)

    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        was_clipped = ((unclipped - clipped).abs() > 0) & (clipped < unclipped)
        metrics = {
            "kl": (kl * mask).sum() / n,
            "clip_fraction": (was_clipped.to(mask.dtype) * mask).sum() / n,
            "ratio": (ratio * mask).sum() / n,
        }
    return loss, metrics


def truncated_is_weights(trainer_logps: torch.Tensor, engine_logps: torch.Tensor,
                         mask: torch.Tensor, cap: float) -> tuple[torch.Tensor, dict]:
    """Truncated importance sampling for an engine that samples with other numerics than the
    trainer computes (Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You
    Off-Policy RL Training", TIS): the tokens were drawn from π_engine, the gradient is taken
    for π_trainer at the same weights, so each token's surrogate term is weighted by
    w_t = min(π_trainer(y_t) / π_engine(y_t), C), both log-probs under the sampling
    distribution (temperature, top-k, top-p). Returns (w, metrics) with w constant (no
    gradient) and 0 off the mask; metrics: the mean raw ratio and the share of tokens capped.
    """
    if trainer_logps.shape != engine_logps.shape or trainer_logps.shape != mask.shape:
        raise ValueError(f"trainer_logps {tuple(trainer_logps.shape)}, engine_logps "
                         f"{tuple(engine_logps.shape)} and mask {tuple(mask.shape)} must match")
    if not cap > 0:
        raise ValueError(f"the cap C must be > 0, got {cap}")
    valid = mask.bool()
    with torch.no_grad():
        log_ratio = torch.where(valid, trainer_logps.float() - engine_logps.float(), 0.0)
        ratio = torch.exp(log_ratio.clamp(max=50.0))          # (a -inf trainer log-prob: 0)
        weights = torch.where(valid, ratio.clamp(max=cap), 0.0)
        n = valid.sum().clamp(min=1)
        metrics = {"is_ratio": ratio[valid].sum() / n,
                   "is_capped": (valid & (ratio > cap)).sum() / n}
    return weights, metrics


def aggregation_weight(mask: torch.Tensor, aggregation: str) -> float:
    """How much a micro-batch counts when micro-batch losses are averaged into one step:
    its valid tokens for token-mean, its sequences otherwise (exact for all three)."""
    return float(mask.sum()) if aggregation == "token_mean" else float(mask.shape[0])


def _aggregate(per_token: torch.Tensor, mask: torch.Tensor, aggregation: str,
               max_length: int | None) -> torch.Tensor:
    summed = (per_token * mask).sum(dim=1)
    if aggregation == "grpo":
        return (summed / mask.sum(dim=1).clamp(min=1)).mean()
    if aggregation == "token_mean":
        return summed.sum() / mask.sum().clamp(min=1)
    return summed.sum() / (per_token.shape[0] * (max_length or per_token.shape[1]))


def overlong_penalty(lengths: torch.Tensor, max_length: int, cache: int) -> torch.Tensor:
    """DAPO's soft overlong punishment (Eq. 13): 0 up to max_length − cache tokens, then a
    linear ramp to −1 at max_length, −1 beyond."""
    if not 0 < cache <= max_length:
        raise ValueError(f"overlong cache must be in (0, max_length={max_length}], got {cache}")
    start = max_length - cache
    ramp = (start - lengths.double()) / cache
    penalty = torch.where(lengths <= start, torch.zeros_like(ramp), ramp)
    return torch.where(lengths > max_length, torch.full_like(ramp, -1.0), penalty)
