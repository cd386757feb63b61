"""APA, Advantage-Induced Policy Alignment (Zhu et al. 2023; reference code
microsoft/RLHF-APA; ALGORITHMS.md §4).

The same rollouts, critic and GAE as PPO; the policy term regresses log π_θ onto the
KL-regularised optimum log π_init + Â/λ instead of clipping a ratio:

    L_APA = token-mean (log π_θ(a_t|s_t) − Â_t/λ − log π_init(a_t|s_t))²

π_init is the reference (the initial policy) for the whole run. As in the reference code
the reward carries no KL penalty by default (`apa.kl_coef: 0`; the anchor controls KL), the
critic loss is unclipped and weighs 1.
"""

from __future__ import annotations

import torch

from alignment.losses.apa import apa_loss
from alignment.trainers.actor_critic import ActorCriticTrainer


class APATrainer(ActorCriticTrainer):
    anchored_on_init = True

    def policy_loss(self, logps: torch.Tensor, batch: dict, mask: torch.Tensor
                    ) -> tuple[torch.Tensor, dict]:
        device = logps.device
        return apa_loss(logps, batch["ref_logps"].to(device), batch["token_advantages"].to(device),
                        mask, lam=self.algo.lam)
