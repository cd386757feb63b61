"""Loss functions: tensors in, ``(loss, metrics)`` out; one algorithm per module."""

from .apa import apa_loss, awr_loss
from .copg import copg_loss
from .dpo import dpo_loss
from .gae import gae, whiten
from .grpo import group_advantages, grpo_loss, truncated_is_weights
from .ipo import ipo_loss
from .kl import k1_kl, k3_kl
from .logps import (
    fused_token_entropy,
    fused_token_logps,
    sampling_filter,
    sequence_logps,
    token_logps,
)
from .ppo import adaptive_kl_coef, kl_penalized_rewards, ppo_policy_loss, ppo_value_loss
from .ppo_max import Moments, normalize_scores, symmetric_clip
from .reward import bradley_terry_loss, token_verifier_loss
from .sft import sft_loss
from .spin import spin_loss

__all__ = [
    "adaptive_kl_coef",
    "apa_loss",
    "awr_loss",
    "bradley_terry_loss",
    "token_verifier_loss",
    "copg_loss",
    "dpo_loss",
    "fused_token_entropy",
    "fused_token_logps",
    "gae",
    "group_advantages",
    "grpo_loss",
    "ipo_loss",
    "k1_kl",
    "k3_kl",
    "kl_penalized_rewards",
    "Moments",
    "normalize_scores",
    "ppo_policy_loss",
    "ppo_value_loss",
    "sampling_filter",
    "sequence_logps",
    "sft_loss",
    "spin_loss",
    "symmetric_clip",
    "token_logps",
    "truncated_is_weights",
    "whiten",
]
