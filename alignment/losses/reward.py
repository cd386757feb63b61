"""Bradley-Terry reward-model loss (Bradley & Terry 1952; as used for RLHF reward models by
Stiennon et al. 2020, Eq. 1, and Ouyang et al. 2022, Eq. 1):

    L = − mean log σ( r(x, y_w) − r(x, y_l) )   [ + c · mean (r(x, y_w) + r(x, y_l))² ]

The optional second term (Eisenstein et al. 2023, "Helping or Herding?"; TRL's
`center_rewards_coefficient`) keeps rewards centred on 0; the BT term alone is invariant to
adding a constant to every reward.
"""

import torch
import torch.nn.functional as F


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                       center_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """chosen_rewards, rejected_rewards: (B,) scalar rewards of each pair's two responses."""
    if chosen_rewards.shape != rejected_rewards.shape or chosen_rewards.dim() != 1:
        raise ValueError(f"rewards must be two (B,) tensors, got {tuple(chosen_rewards.shape)} "
                         f"and {tuple(rejected_rewards.shape)}")
    if center_weight < 0:
        raise ValueError(f"center_weight must be >= 0, got {center_weight}")
    margin = chosen_rewards - rejected_rewards                          # (B,)
    loss = -F.logsigmoid(margin).mean()
    if center_weight > 0:
        loss = loss + center_weight * ((chosen_rewards + rejected_rewards) ** 2).mean()
    with torch.no_grad():
        metrics = {"rewards/chosen": chosen_rewards.mean(),
                   "rewards/rejected": rejected_rewards.mean(),
                   "rewards/margin": margin.mean(),
                   "rewards/accuracy": (margin > 0).float().mean()}
    return loss, metrics
