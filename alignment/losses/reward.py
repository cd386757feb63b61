"""Bradley-Terry reward-model loss (Bradley & Terry 1952; as used for RLHF reward models by
Stiennon et al. 2020, Eq. 1, and Ouyang et al. 2022, Eq. 1):

    L = − mean log σ( r(x, y_w) − r(x, y_l) )   [ + c · mean (r(x, y_w) + r(x, y_l))² ]

The optional second term (Eisenstein et al. 2023, "Helping or Herding?"; TRL's
`center_rewards_coefficient`) keeps rewards centred on 0; the BT term alone is invariant to
adding a constant to every reward.

The rewards are whatever the model makes of (x, y): a linear head on the last token, or
(a likelihood reward model) r(x, y) = β · log π_φ(y | x), for which this loss is DPO's
Eq. 7 (Rafailov et al. 2023) with the reference term dropped.
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


def token_verifier_loss(token_scores: torch.Tensor, labels: torch.Tensor,
                        mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Token-level verifier objective (Cobbe et al. 2021, "Training Verifiers to Solve Math
    Word Problems", §4.2 and Fig. 6: a verifier that predicts correctness at every token
    learns faster and generalises better than one supervised on the last token only):

        L_tok = mean over masked tokens t of BCE( σ(s_t), label )

    token_scores (B, T): the reward head applied at every position; labels (B,): 1 for a
    chosen row, 0 for a rejected one; mask (B, T): the completion tokens that carry the
    label (from the first token where chosen and rejected differ to the end). Used next to
    the Bradley-Terry loss; the reward stays the last token's score.
    """
    if token_scores.shape != mask.shape or labels.shape != token_scores.shape[:1]:
        raise ValueError(f"shapes: scores {tuple(token_scores.shape)}, labels "
                         f"{tuple(labels.shape)}, mask {tuple(mask.shape)}")
    target = labels[:, None].expand_as(token_scores).to(token_scores.dtype)
    mask = mask.bool()
    if not mask.any():
        return token_scores.sum() * 0.0, {"token_accuracy": torch.tensor(float("nan"))}
    scores, target = token_scores[mask], target[mask]
    loss = F.binary_cross_entropy_with_logits(scores, target)
    with torch.no_grad():
        accuracy = ((scores > 0).to(target.dtype) == target).float().mean()
    return loss, {"token_accuracy": accuracy}
