"""DPO loss: Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is
Secretly a Reward Model", Eq. 7. Reference implementation: TRL ``DPOTrainer``
(``loss_type="sigmoid"``) and torchtune ``rlhf/loss/dpo.py``.

SPIN (Chen et al. 2024, ALGORITHMS.md §6) is this same loss with chosen = ground-truth
response, rejected = self-generated response, reference = previous iteration, β = λ.
"""

import torch
import torch.nn.functional as F


def check_preference_logps(scale: float, scale_name: str, *logps: torch.Tensor) -> None:
    """Raise ValueError unless all log-prob tensors are 1-D, non-empty, same shape, scale > 0."""
    if not scale > 0:  # also rejects NaN
        raise ValueError(f"{scale_name} must be > 0, got {scale}")
    shape = logps[0].shape
    for t in logps:
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"log-probs must be tensors, got {type(t).__name__}")
        if t.dim() != 1:
            raise ValueError(
                f"log-probs must be 1-D (batch,) sequence log-probs, got shape {tuple(t.shape)}"
            )
        if t.shape != shape:
            raise ValueError(
                f"all four log-prob tensors must have the same shape, got {tuple(shape)} "
                f"and {tuple(t.shape)}"
            )
    if shape[0] == 0:
        raise ValueError("log-probs must hold at least one pair, got an empty batch")


def preference_metrics(
    scale: float,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Implicit rewards ``scale · (ℓ_π − ℓ_ref)`` and policy log-probs, batch means, detached."""
    with torch.no_grad():
        chosen = scale * (policy_chosen_logps - ref_chosen_logps)  # (B,)
        rejected = scale * (policy_rejected_logps - ref_rejected_logps)  # (B,)
        margin = chosen - rejected  # (B,)
        return {
            "rewards/chosen": chosen.mean(),
            "rewards/rejected": rejected.mean(),
            "rewards/margin": margin.mean(),
            "rewards/accuracy": (margin > 0).float().mean(),
            "logps/chosen": policy_chosen_logps.mean(),
            "logps/rejected": policy_rejected_logps.mean(),
        }


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO loss, Eq. 7 of Rafailov et al. 2023 (averaged over the batch):

        L = −mean log σ( β [ (ℓ_π(y_w) − ℓ_ref(y_w)) − (ℓ_π(y_l) − ℓ_ref(y_l)) ] )

    Args:
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps:
            (B,) sequence log-probs. They must be SUMS over the response tokens
            (``sequence_logps(..., average=False)``); means change the effective β.
        beta: KL strength of the underlying objective ``max E[r] − β KL(π‖π_ref)``; the
            implicit reward is ``β (ℓ_π − ℓ_ref)``.

    Returns:
        ``(loss, metrics)``: 0-dim loss, and detached batch means ``rewards/chosen``,
        ``rewards/rejected``, ``rewards/margin``, ``rewards/accuracy`` (fraction of pairs with
        margin > 0), ``logps/chosen``, ``logps/rejected``.

    When the policy equals the reference (step 0) every margin is 0 and the loss is
    log 2 = 0.693147 exactly: a cheap check that masking and templates agree.
    """
    check_preference_logps(
        beta,
        "beta",
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
    )
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    # Eq. 7; logsigmoid stays finite where log(sigmoid(z)) underflows for z << 0.
    loss = -F.logsigmoid(logits).mean()
    metrics = preference_metrics(
        beta, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    return loss, metrics
