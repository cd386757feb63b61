"""DPO — Direct Preference Optimization (Rafailov et al. 2023).

    given pairs (x, y_w, y_l) and π_ref = the initial policy, minimise over θ
        L = − E log σ( β [ (log π_θ(y_w|x) − log π_ref(y_w|x))
                         − (log π_θ(y_l|x) − log π_ref(y_l|x)) ] )          (Eq. 7)

Sequence log-probs are SUMS over the completion tokens (ALGORITHMS.md §2). Optional
(`dpo.sft_weight` = α > 0): RPO (Pang et al. 2024, "Iterative Reasoning Preference
Optimization", Eq. 1) adds α · NLL(y_w | x) / |y_w|, which also teaches the chosen
responses' format; TRL calls α `rpo_alpha`. The loss is
`alignment.losses.dpo_loss`; pairs, the reference and batching come from
`PreferenceTrainer`. At step 0 the policy is the reference and the loss is log 2.
"""

from __future__ import annotations

from alignment.losses import dpo_loss
from alignment.trainers.preference import PreferenceTrainer


class DPOTrainer(PreferenceTrainer):
    average_logps = False

    @property
    def reference_mode(self) -> str:
        return self.recipe.dpo.reference

    def preference_loss(self, policy_chosen, policy_rejected, ref_chosen, ref_rejected, batch):
        loss, metrics = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                                 beta=self.recipe.dpo.beta)
        weight = self.recipe.dpo.sft_weight
        if weight > 0:  # RPO: + w * mean over pairs of the chosen's per-token NLL
            tokens = batch["chosen_mask"].sum(dim=1).to(policy_chosen)        # (B,)
            nll = -(policy_chosen / tokens).mean()
            loss = loss + weight * nll
            metrics["loss/sft"] = nll.detach()
        return loss, metrics
