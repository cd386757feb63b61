"""GRPO (Shao et al. 2024, DeepSeekMath §4.1) with the DAPO and Dr. GRPO options
(ALGORITHMS.md §8): G samples per prompt, group-normalised advantages, a clipped
surrogate with an optional k3 KL term; no critic.

Per step (the loop itself is `OnlineTrainer`):
    rewards r_1..G per prompt  ->  Â_i = (r_i − mean) / (std + eps)   [Dr. GRPO: r_i − mean]
    DAPO dynamic sampling: groups with equal rewards carry no gradient; drop them and
    sample more prompts until the batch is full (at most grpo.max_sampling_rounds).
    μ = grpo.iterations updates; with μ = 1, π_old is the current policy (ratio ≡ 1) so
    no extra forward pass is spent on it.
"""

from __future__ import annotations

import torch

from alignment.losses.grpo import (
    aggregation_weight,
    group_advantages,
    grpo_loss,
    truncated_is_weights,
)
from alignment.rollout import Rollouts
from alignment.trainers.multi_turn import first_turn_mask
from alignment.trainers.online import OnlineTrainer, RoundStats, Sample
from alignment.trainers.sequences import group_token_logps_as_sampled


class GRPOTrainer(OnlineTrainer):
    @property
    def g(self):
        return self.recipe.grpo

    @property
    def samples_per_prompt(self) -> int:
        return self.g.num_generations

    @property
    def update_iterations(self) -> int:
        return self.g.iterations

    @property
    def max_rounds(self) -> int:
        return self.g.max_sampling_rounds if self.g.dynamic_sampling else 1

    def needs_reference(self) -> bool:
        return self.g.beta > 0 or self.recipe.environment.first_turn_kl > 0

    # ------------------------------------------------------------------ samples
    def make_batch(self, rollouts: Rollouts, rewards: list[float], truncated: list[bool],
                   info: RoundStats) -> list[Sample]:
        shaped = torch.tensor(rewards, dtype=torch.float64)   # (overlong penalty included)
        G = self.g.num_generations
        # a non-finite reward (reported by `_score`) is not part of its group's statistics;
        # its sample is masked out of the loss (`make_sample`)
        valid = torch.isfinite(shaped)
        advantages = group_advantages(shaped, G, scale=self.g.scale_rewards,
                                      eps=self.g.std_eps, valid=valid)
        high = torch.where(valid, shaped, -torch.inf).view(-1, G).max(dim=1).values
        low = torch.where(valid, shaped, torch.inf).view(-1, G).min(dim=1).values
        signal = (high - low) > 1e-9   # (groups,); False with fewer than 2 valid rewards
        info.groups += int(signal.numel())
        info.groups_with_signal += int(signal.sum())
        return [self.make_sample(rollouts, i, float(shaped[i]), truncated[i],
                                 advantage=float(advantages[i]))
                for i in range(len(rollouts))
                if not (self.g.dynamic_sampling and not signal[i // G])]

    # ------------------------------------------------------------------ loss
    def prepare_batches(self, batches: list[dict]) -> None:
        for batch in batches:
            if self.g.iterations > 1:   # π_old frozen for all μ updates
                with torch.no_grad():
                    batch["old_logps"], batch["old_sampled_logps"] = \
                        group_token_logps_as_sampled(self.model, batch, **self.sampled_as())
            if self.needs_reference():
                batch["ref_logps"] = self.reference_token_logps(batch)

    def batch_weight(self, batch: dict) -> float:
        return aggregation_weight(batch["loss_mask"], self.g.aggregation)

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        mask = batch["loss_mask"]
        logps, sampled = group_token_logps_as_sampled(self.model, batch, **self.sampled_as())
        device = logps.device
        old = batch["old_logps"].to(device) if "old_logps" in batch else logps.detach()
        # π_trainer at the weights the engine sampled with, as the engine sampled
        behaviour = (batch["old_sampled_logps"].to(device) if "old_sampled_logps" in batch
                     else sampled.detach())
        ref = batch["ref_logps"].to(device) if "ref_logps" in batch else None
        mask = mask.to(device)
        self.note_logprob_gap(batch, sampled)   # first pass: engine vs trainer
        weights, is_metrics = None, {}
        if self.g.is_cap is not None:
            weights, is_metrics = truncated_is_weights(
                behaviour, batch["sampling_logps"].to(device), mask, self.g.is_cap)
        beta = self.g.beta
        if self.recipe.environment.first_turn_kl > 0:   # SCoRe stage I: hold the 1st attempt
            beta = beta + self.recipe.environment.first_turn_kl * first_turn_mask(mask)
        loss, metrics = grpo_loss(logps, old, ref, batch["advantages"].to(device), mask,
                                  clip_low=self.g.clip_low, clip_high=self.g.clip_high,
                                  beta=beta, aggregation=self.g.aggregation,
                                  max_length=self.episode_tokens(),
                                  is_weights=weights)
        return loss, {**metrics, **is_metrics}
