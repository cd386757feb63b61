"""DPO — Direct Preference Optimization (Rafailov et al. 2023).

    given pairs (x, y_w, y_l) and π_ref = the initial policy, minimise over θ
        L = − E log σ( β [ (log π_θ(y_w|x) − log π_ref(y_w|x))
                         − (log π_θ(y_l|x) − log π_ref(y_l|x)) ] )          (Eq. 7)

Sequence log-probs are SUMS over the completion tokens (ALGORITHMS.md §2). The loss is
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

    def preference_loss(self, policy_chosen, policy_rejected, ref_chosen, ref_rejected):
        return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                        beta=self.recipe.dpo.beta)
