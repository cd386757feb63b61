"""Generalised advantage estimation and masked whitening, as PPO-style trainers use them.

GAE: Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized
Advantage Estimation", Eq. 16; the per-token LLM form of Ziegler et al. 2019 / the N+
implementation details of RLHF with PPO (Huang et al. 2024), ALGORITHMS.md §1.2:

    δ_t = r_t + γ V(s_{t+1}) − V(s_t)          V after the last valid token is 0
    A_t = δ_t + γ λ A_{t+1}                     computed backwards, A_{T+1} = 0
    G_t = A_t + V(s_t)                          the value target ("returns")

`mask` marks the tokens that belong to the episode: the response tokens the policy chose.
They need not start at 0 (DR-PO's reset prefix is context, not actions) nor be contiguous:
in a multi-turn episode the environment's replies sit between the model's turns, and the
recursion skips them (s_{t+1} is the state at the next token on the mask, so the value of
a later turn flows back into an earlier one). Everything off the mask is 0 in every output.
"""

from __future__ import annotations

import torch


def as_batch(*tensors: torch.Tensor | None) -> tuple[bool, list]:
    """A single sequence (1-D tensors) as a batch of one: (was_single, tensors)."""
    single = tensors[0].dim() == 1
    if not single:
        return False, list(tensors)
    return True, [t.unsqueeze(0) if isinstance(t, torch.Tensor) and t.dim() == 1 else t
                  for t in tensors]


def _check(mask: torch.Tensor, *tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.dim() != 2 or t.shape != mask.shape:
            raise ValueError(f"expected (batch, tokens) tensors shaped like mask "
                             f"{tuple(mask.shape)}, got {tuple(t.shape)}")


@torch.no_grad()
def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), both (batch, tokens) and 0 off `mask` (1-D inputs: one
    sequence, 1-D outputs)."""
    single, (mask, rewards, values) = as_batch(mask, rewards, values)
    if single:
        advantages, returns = gae(rewards, values, mask, gamma, lam)
        return advantages[0], returns[0]
    _check(mask, rewards, values)
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must be in [0, 1], got gamma={gamma}, lam={lam}")
    # the masked tokens of each row moved to its front, in order (a stable sort): the
    # recursion then runs over the episode's tokens only, and the result is moved back
    order = torch.sort((~mask.bool()).to(torch.int8), dim=1, stable=True).indices
    packed = [t.gather(1, order) for t in (rewards, values, mask.bool())]
    advantages, returns = _contiguous_gae(*packed, gamma, lam)
    return (torch.zeros_like(advantages).scatter(1, order, advantages),
            torch.zeros_like(returns).scatter(1, order, returns))


def _contiguous_gae(rewards, values, mask, gamma, lam):
    m = mask.to(values.dtype)
    values, rewards = values * m, rewards * m     # V after the episode (and on pads) is 0
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    width = values.shape[1]
    for t in reversed(range(width)):
        next_value = values[:, t + 1] if t + 1 < width else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * m[:, t]   # resets before the episode
        advantages[:, t] = running
    return advantages, (advantages + values) * m


def masked_mean_var(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance of the `mask`ed entries of x."""
    valid = x[mask.bool()]
    if valid.numel() == 0:
        return x.new_zeros(()), x.new_zeros(())
    mean = valid.mean()
    return mean, ((valid - mean) ** 2).mean()


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, *,
           mean: torch.Tensor | float | None = None,
           var: torch.Tensor | float | None = None) -> torch.Tensor:
    """(x − μ) / √(σ² + 1e-8) over the valid entries (population variance); with
    `shift_mean=False` the mean is added back (N+ reward whitening: scale only).
    `mean`/`var` replace the statistics of x, e.g. by ones gathered over processes."""
    single, (x, mask) = as_batch(x, mask)
    if single:
        return whiten(x, mask, shift_mean, mean=mean, var=var)[0]
    _check(mask, x)
    if (mean is None) != (var is None):
        raise ValueError("pass both mean and var, or neither")
    if mean is None:
        mean, var = masked_mean_var(x, mask)
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device)
    var = torch.as_tensor(var, dtype=x.dtype, device=x.device)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)
