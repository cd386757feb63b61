"""PPO for language models (Schulman et al. 2017; the RLHF recipe of Ziegler et al. 2019,
InstructGPT and the N+ implementation details; ALGORITHMS.md §1).

The loop, rewards with the KL penalty, GAE and the value loss are `ActorCriticTrainer`'s;
what is PPO's own is the clipped surrogate on the ratio to the rollout policy:

    L_pg = token-mean max(−Â_t ρ_t, −Â_t clip(ρ_t, 1 − ε, 1 + ε)),  ρ_t = π_θ / π_old
"""

from __future__ import annotations

import torch

from alignment.losses.ppo import ppo_policy_loss
from alignment.trainers.actor_critic import ActorCriticTrainer


class PPOTrainer(ActorCriticTrainer):
    def policy_loss(self, logps: torch.Tensor, batch: dict, mask: torch.Tensor
                    ) -> tuple[torch.Tensor, dict]:
        device = logps.device
        return ppo_policy_loss(logps, batch["old_logps"].to(device),
                               batch["token_advantages"].to(device), mask, clip=self.algo.clip)
