"""IPO — Identity Preference Optimisation (Azar et al. 2024, "A General Theoretical
Paradigm to Understand Learning from Human Preferences").

    minimise  E ( h_θ(y_w, y_l, x) − 1/(2τ) )²                              (Eq. 17)
    h_θ = (log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x))

A regression of the log-ratio margin onto the fixed target 1/(2τ), where DPO pushes it
without bound. `ipo.normalize` picks the sequence log-prob: `sum` over tokens (the paper's
text) or the per-token `mean` (TRL's `loss_type="ipo"`, which TRL reports was confirmed
with the authors; τ is then per token). Default: `mean`, so τ values carry over from TRL.
At step 0 the loss is 1/(4τ²). `ipo.online: true` trains on best-vs-worst pairs of the
policy's own scored samples (`OnlineIPOTrainer`, as online DPO).
"""

from __future__ import annotations

from alignment.losses import ipo_loss
from alignment.trainers.pair_sampling import OnlinePairTrainer
from alignment.trainers.preference import PreferenceTrainer


class IPOLoss:
    @property
    def average_logps(self) -> bool:
        return self.recipe.ipo.normalize == "mean"

    def preference_loss(self, policy_chosen, policy_rejected, ref_chosen, ref_rejected, batch):
        return ipo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                        tau=self.recipe.ipo.tau)


class IPOTrainer(IPOLoss, PreferenceTrainer):
    @property
    def reference_mode(self) -> str:
        return self.recipe.ipo.reference


class OnlineIPOTrainer(IPOLoss, OnlinePairTrainer):
    pass
