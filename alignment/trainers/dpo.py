"""DPO — Direct Preference Optimization (Rafailov et al. 2023).

    given pairs (x, y_w, y_l) and π_ref = the initial policy, minimise over θ
        L = − E log σ( β [ (log π_θ(y_w|x) − log π_ref(y_w|x))
                         − (log π_θ(y_l|x) − log π_ref(y_l|x)) ] )          (Eq. 7)

Sequence log-probs are SUMS over the completion tokens (ALGORITHMS.md §2). Optional
(`dpo.sft_weight` = α > 0): RPO (Pang et al. 2024, "Iterative Reasoning Preference
Optimization", Eq. 1) adds α · NLL(y_w | x) / |y_w|, which also teaches the chosen
responses' format; TRL calls α `rpo_alpha`. The loss is `alignment.losses.dpo_loss`.

Offline (`DPOTrainer`): the data's pairs; pairs, the reference and batching come from
`PreferenceTrainer`. At step 0 the policy is the reference and the loss is log 2.
Online (`dpo.online: true`, `OnlineDPOTrainer`): each step samples `num_generations`
completions per prompt, scores them with `rewards:`, and trains on best vs worst
(`pair_sampling.OnlinePairTrainer`; Guo et al. 2024, "Direct Language Model Alignment
from Online AI Feedback", with a verifier or reward model as the annotator).
"""

from __future__ import annotations

from alignment.losses import dpo_loss
from alignment.trainers.pair_sampling import OnlinePairTrainer
from alignment.trainers.preference import PreferenceTrainer


class DPOLoss:
    """DPO's loss on sequence log-probs, for the offline and the online trainer."""

    average_logps = False

    def preference_loss(self, policy_chosen, policy_rejected, ref_chosen, ref_rejected, batch):
        cfg = self.recipe.dpo
        loss, metrics = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                                 beta=cfg.beta)
        if cfg.sft_weight > 0:  # RPO: + w * mean over pairs of the chosen's per-token NLL
            mask = batch["chosen_mask"] if "chosen_mask" in batch else batch["loss_mask"][0::2]
            tokens = mask.sum(dim=1).to(policy_chosen).clamp(min=1)            # (B,)
            nll = -(policy_chosen / tokens).mean()
            loss = loss + cfg.sft_weight * nll
            metrics["loss/sft"] = nll.detach()
        return loss, metrics


class DPOTrainer(DPOLoss, PreferenceTrainer):
    @property
    def reference_mode(self) -> str:
        return self.recipe.dpo.reference


class OnlineDPOTrainer(DPOLoss, OnlinePairTrainer):
    pass
