"""IPO loss: Azar et al. 2024, "A General Theoretical Paradigm to Understand Learning from
Human Preferences", Eq. 17 / Algorithm 1 (sampled IPO). Reference implementation: TRL
``DPOTrainer`` with ``loss_type="ipo"`` (its β is the paper's τ).
"""

import torch

from .dpo import check_preference_logps, preference_metrics


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    tau: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IPO loss, Eq. 17 of Azar et al. 2024 (averaged over the batch):

        h = (ℓ_π(y_w) − ℓ_ref(y_w)) − (ℓ_π(y_l) − ℓ_ref(y_l))
        L = mean (h − 1/(2τ))²

    Normalisation is the caller's choice, and this function is agnostic to it:

    * paper text: pass SUMS over response tokens (``sequence_logps(..., average=False)``);
    * TRL convention (confirmed with the authors per TRL's comment, not stated in the paper):
      pass per-token MEANS ``ℓ/|y|`` (``sequence_logps(..., average=True)``), so that
      ``h̄ = h(y_w)/|y_w| − h(y_l)/|y_l|``.

    τ means different things under the two (a factor of the response length); never compare
    τ across them.

    Args:
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps:
            (B,) sequence log-probs, all with the same normalisation.
        tau: KL strength; the target margin is 1/(2τ), so larger τ pulls harder to π_ref.

    Returns:
        ``(loss, metrics)``: 0-dim loss and the same metric keys as ``dpo_loss``, with
        rewards ``τ (ℓ_π − ℓ_ref)`` so they compare with TRL, which logs β·log-ratio.

    At policy = reference h = 0 and the loss is 1/(4τ²) (25 for τ = 0.1), not log 2. The
    paper's symmetric form differs from Eq. 17 by that same constant, so gradients agree.
    A margin above 1/(2τ) is pushed back down, possibly lowering the chosen log-prob; that
    is the intended regularisation.
    """
    check_preference_logps(
        tau,
        "tau",
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
    )
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # (B,)
    h = chosen_logratios - rejected_logratios  # (B,)
    loss = ((h - 1 / (2 * tau)) ** 2).mean()  # Eq. 17
    metrics = preference_metrics(
        tau, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    return loss, metrics
