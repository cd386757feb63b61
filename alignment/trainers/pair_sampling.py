"""Pairs from the policy's own scored samples: the online mode of DPO, IPO and CoPG.

    for step in range(start, total):                 # the loop is `OnlineTrainer`'s
        samples <- engine.generate(prompts, n)       # n = <algo>.num_generations
        rewards <- scorer(samples)                   # any `rewards:` (verifier, RM, ...)
        pairs   <- select_pairs(rewards, n, how)     # best vs worst (ties dropped), or CoPG's
        loss    <- the algorithm's pair loss on sequence log-probs of (policy, π_ref)
        update, engine.sync_weights(policy)

A pair is two samples of one prompt, kept side by side as one group of 2 in the packed
layout (`collate_groups`: the prompt computed once per pair; or a row each, `layout`).
Log-probs are taken at the rollout temperature, as the engine sampled them (so the
engine/trainer gap is meaningful).
"""

from __future__ import annotations

import abc
import math

import torch

from alignment.rollout import Rollouts
from alignment.trainers.online import OnlineTrainer, RoundStats, Sample
from alignment.trainers.sequences import group_token_logps_as_sampled

PAIRINGS = ("best_worst", "consecutive")


def select_pairs(rewards: list[float], group_size: int, how: str = "best_worst",
                 keep_ties: bool = False) -> tuple[list[tuple[int, int]], int]:
    """The pairs (i, j) of sample indices to train on, and how many were dropped as ties.

    Samples come prompt by prompt, `group_size` each. `best_worst`: one pair per prompt,
    its highest- then its lowest-scored sample (the first of equals); `consecutive`:
    (0, 1), (2, 3), ... within each prompt, in sampling order (CoPG: no ranking needed).
    A pair whose two rewards are equal says nothing about which is better: dropped unless
    `keep_ties`. A sample with a non-finite reward is in no pair (best_worst ranks the
    rest of its prompt's samples).
    """
    if how not in PAIRINGS:
        raise ValueError(f"pairing must be one of {', '.join(PAIRINGS)}, got {how!r}")
    if group_size < 2 or len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size} "
                         "(>= 2)")
    pairs, ties = [], 0
    for start in range(0, len(rewards), group_size):
        idx = list(range(start, start + group_size))
        if how == "best_worst":
            idx = [i for i in idx if math.isfinite(rewards[i])]
            best = max(idx, key=lambda i: rewards[i], default=None)
            worst = min(idx, key=lambda i: rewards[i], default=None)
            candidates = [(best, worst)] if len(idx) >= 2 else []
        else:
            candidates = [(i, j) for i, j in zip(idx[0::2], idx[1::2], strict=False)
                          if math.isfinite(rewards[i]) and math.isfinite(rewards[j])]
        for i, j in candidates:
            if rewards[i] == rewards[j] and not keep_ties:
                ties += 1
            else:
                pairs.append((i, j))
    return pairs, ties


class OnlinePairTrainer(OnlineTrainer):
    """The online loop with a pair loss. A subclass (via its loss mixin) supplies
    `preference_loss(policy_a, policy_b, ref_a, ref_b, batch)` and may set `pairing` /
    `keep_ties` / `average_logps`."""

    pairing = "best_worst"
    keep_ties = False
    average_logps = False

    @abc.abstractmethod
    def preference_loss(self, policy_chosen, policy_rejected, ref_chosen, ref_rejected, batch):
        """The algorithm's loss on (B,) sequence log-probs: (loss, metrics)."""

    @property
    def samples_per_prompt(self) -> int:
        return self.algo.num_generations

    @property
    def pairs_per_prompt(self) -> int:
        return 1 if self.pairing == "best_worst" else self.samples_per_prompt // 2

    @property
    def min_samples(self) -> int:
        """A full step: every prompt's pairs (rounds of more prompts refill dropped ties)."""
        return 2 * self.pairs_per_prompt * self.prompts_per_step

    @property
    def max_rounds(self) -> int:
        return self.algo.max_sampling_rounds

    def needs_reference(self) -> bool:
        return True

    def make_batch(self, rollouts: Rollouts, rewards: list[float], truncated: list[bool],
                   info: RoundStats) -> list[Sample]:
        pairs, ties = select_pairs(rewards, self.samples_per_prompt, self.pairing,
                                   keep_ties=self.keep_ties)
        if self.algo.mask_truncated:   # a truncated sample has no sequence log-prob to compare
            pairs = [(i, j) for i, j in pairs if not (truncated[i] or truncated[j])]
        info.groups += len(pairs) + ties            # logged as groups_with_signal: the
        info.groups_with_signal += len(pairs)       # share of candidate pairs kept
        out = []
        for i, j in pairs:   # the pairs of a prompt are one group: its prompt computed once
            out += [self.make_sample(rollouts, k, rewards[k], truncated[k]) for k in (i, j)]
        return out

    def prepare_batches(self, batches: list[dict]) -> dict:
        for batch in batches:
            batch["ref_logps"] = self.reference_token_logps(batch)
        pairs = sum(b["rewards"].numel() // 2 for b in batches if not b.get("stand_in"))
        return {"pairs": self._sum_across_processes(float(pairs))}

    def batch_weight(self, batch: dict) -> float:
        return batch["rewards"].numel() // 2   # pairs (a stand-in batch weighs 0 anyway)

    def _sequence_logps(self, token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        total = (token_logps * mask).sum(dim=1)
        return total / mask.sum(dim=1).clamp(min=1) if self.average_logps else total

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        logps, sampled = group_token_logps_as_sampled(self.model, batch, **self.sampled_as())
        if batch.get("stand_in"):   # one sample, no pair: a zero loss through the model
            return (logps * 0).sum(), {}
        self.note_logprob_gap(batch, sampled)   # (as the engine sampled: top-k / top-p)
        mask = batch["loss_mask"].to(logps.device)
        policy = self._sequence_logps(logps, mask)                              # (2B,)
        ref = self._sequence_logps(batch["ref_logps"].to(logps.device), mask)   # (2B,)
        batch["pair_rewards"] = batch["rewards"].view(-1, 2)
        return self.preference_loss(policy[0::2], policy[1::2], ref[0::2], ref[1::2], batch)
