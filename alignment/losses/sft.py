"""Supervised fine-tuning loss: the negative log-likelihood of the demonstrations.

    L = − Σ_i Σ_t log π_θ(y_i,t | x_i, y_i,<t)  /  Σ_i |y_i|

(maximum likelihood on the completion tokens only; the "SFT" stage of Ouyang et al. 2022,
"Training language models to follow instructions with human feedback", §3.5). The mean is
over every completion TOKEN of the batch, not per sequence: a long worked solution counts
for its length, as in TRL's `SFTTrainer` and torchtune's cross-entropy recipes.
"""

from __future__ import annotations

import torch


def sft_loss(token_logps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """token_logps: (B, T) log π of each completion token; mask: (B, T) bool, the real
    completion tokens. Returns (token-mean NLL, metrics)."""
    if token_logps.shape != mask.shape:
        raise ValueError(f"sft_loss: token_logps {tuple(token_logps.shape)} and mask "
                         f"{tuple(mask.shape)} differ in shape")
    mask = mask.to(token_logps.dtype)
    tokens = mask.sum()
    if tokens == 0:
        raise ValueError("sft_loss: the batch has no completion token to train on")
    nll = -(token_logps * mask).sum() / tokens
    return nll, {"sft/perplexity": torch.exp(nll.detach()),
                 "sft/completion_tokens": (tokens / mask.shape[0]).detach()}
