"""PPO-max's additions to the actor-critic step (Zheng et al. 2023, "Secrets of RLHF in Large
Language Models Part I: PPO", arXiv:2307.04964, §5.3-5.4; reference code OpenLMLab/
MOSS-RLHF), each an option of the actor-critic section, off by default:

    reward_norm, reward_clip    score -> (score − μ) / σ over every score so far, clipped
    advantage_clip              whitened advantages clipped to ±c
    ptx_coef, ptx_data          + ptx_coef · NLL of a demonstration micro-batch per optimizer
                                step (InstructGPT's PPO-ptx, the paper's "pretrain loss")
    critic_warmup_steps         the first K steps train the critic only

The arithmetic is in `alignment/losses/ppo_max.py`; this mixin of `ActorCriticTrainer` holds
the state (the running moments, kept in every checkpoint with the KL coefficient) and the
demonstrations, read and batched exactly as SFT reads them (`trainers/sft.py`).
"""

from __future__ import annotations

import random

import torch

from alignment.losses.ppo_max import Moments, normalize_scores, symmetric_clip
from alignment.trainers.sft import collate_demos, demonstration_loss, read_demonstrations
from alignment.value_model import token_values


class PPOMaxParts:
    # ------------------------------------------------------------------ scores
    @property
    def reward_moments(self) -> Moments:
        """Count, mean and M2 of every score trained on so far (all steps, all processes)."""
        return getattr(self, "_reward_moments", Moments())

    def shape_scores(self, batches: list[dict]) -> dict:
        """Each micro-batch's `scores`: its samples' rewards, normalised by the running
        moments (first updated with this step's scores of every process) and clipped, as
        the recipe asks. The paper's reason: a reward model's scores drift in scale and have
        outliers; normalised by their history and clipped, the policy's updates stay in a
        stable range (§5.3 "Score Reparameterization")."""
        algo = self.algo
        for b in batches:
            b["scores"] = b["rewards"].to(b["old_logps"].device, torch.float32)
        if not algo.reward_norm and algo.reward_clip is None:
            return {}
        # samples that train (not masked out, not a stand-in) are the ones counted
        valid = [b["loss_mask"].any(1) & (not b.get("stand_in")) for b in batches]
        metrics = {}
        if algo.reward_norm:
            sums = [0.0, 0.0, 0.0]   # n, Σs, Σs² (float64, then over every process)
            for b, keep in zip(batches, valid, strict=True):
                s = b["scores"][keep].double()
                sums = [sums[0] + s.numel(), sums[1] + s.sum().item(),
                        sums[2] + (s ** 2).sum().item()]
            self._reward_moments = self.reward_moments.merge(
                Moments.from_sums(*self._sum_vector(sums)))
            metrics = {"reward/running_mean": self.reward_moments.mean,
                       "reward/running_std": self.reward_moments.std}
        clipped = [0.0, 0.0]
        for b, keep in zip(batches, valid, strict=True):
            b["scores"], hit = normalize_scores(
                b["scores"], self.reward_moments if algo.reward_norm else None, algo.reward_clip)
            clipped = [clipped[0] + hit[keep].sum().item(), clipped[1] + keep.sum().item()]
        if algo.reward_clip is not None:
            n_clipped, n = self._sum_vector(clipped)
            metrics["reward/clipped_fraction"] = n_clipped / max(n, 1.0)
        return metrics

    def clip_advantages(self, batches: list[dict]) -> dict:
        """Whitened advantages clipped to ±advantage_clip (a few extreme tokens otherwise
        dominate the policy gradient: §5.3, "advantages normalization and clipping")."""
        bound = self.algo.advantage_clip
        if bound is None:
            return {}
        counts = [0.0, 0.0]
        for b in batches:
            mask = b["loss_mask"].bool()
            clipped = symmetric_clip(b["token_advantages"], bound)
            counts = [counts[0] + (clipped != b["token_advantages"])[mask].sum().item(),
                      counts[1] + mask.sum().item()]
            b["token_advantages"] = clipped
        n_clipped, n = self._sum_vector(counts)
        return {"advantages/clipped_fraction": n_clipped / max(n, 1.0)}

    # ------------------------------------------------------------------ critic warm-up
    @property
    def critic_warming_up(self) -> bool:
        """During the first `critic_warmup_steps` steps only the critic trains: a critic
        that starts from a reward model (or a fresh head) is not yet a value function, and
        the policy's first updates would follow its noise (the paper pre-trains it, §5.3
        "Pretrained Initialization")."""
        return self.step < self.algo.critic_warmup_steps

    # ------------------------------------------------------------------ PPO-ptx
    def load_ptx(self) -> None:
        """The demonstrations, read as SFT reads them (same columns, same errors)."""
        if self.algo.ptx_coef > 0:
            self.ptx_set = read_demonstrations(self, self.algo.ptx_data, None, "train")
            self._ptx_orders: dict[int, list[int]] = {}

    def ptx_batch(self, update: int) -> dict:
        """The demonstrations of optimizer update `update` (counted over the run): this
        process's share of the next `ptx_batch_size` x processes rows of a seeded order, a
        new order each pass. A function of the update's index, so a resumed run reads the
        same rows."""
        size = self.algo.ptx_batch_size or self.cfg.batch_size
        n = len(self.ptx_set)
        first = (update * self.world + self.rank) * size
        demos = [self.ptx_set[self._ptx_order(p)[i]]
                 for p, i in (divmod(pos, n) for pos in range(first, first + size))]
        return {**collate_demos(demos, self.tokenizer.pad_token_id, self.policy.config),
                "term": "ptx"}   # averaged on its own and added (`Trainer.update`)

    def _ptx_order(self, pass_: int) -> list[int]:
        if pass_ not in self._ptx_orders:
            order = list(range(len(self.ptx_set)))
            random.Random((self.cfg.seed * 1_000_003 + pass_) * 7_919).shuffle(order)
            self._ptx_orders = {p: o for p, o in self._ptx_orders.items() if p >= pass_ - 1}
            self._ptx_orders[pass_] = order
        return self._ptx_orders[pass_]

    def ptx_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """ptx_coef x SFT's loss on the batch. The paper's reason (after InstructGPT): the
        pretraining / SFT likelihood keeps the policy's language ability while the reward
        pulls it away ("alignment tax"). The policy runs alone: the batch comes first in its
        optimizer step, so under DDP its gradient accumulates locally and is reduced with
        the step's last micro-batch; ZeRO and FSDP2 expect every parameter in every
        backward, so there the critic takes part with weight 0."""
        nll, sft_metrics = demonstration_loss(self.policy, batch)
        loss = self.algo.ptx_coef * nll
        if self.zero_stage or self.fsdp:
            device = next(self.critic.parameters()).device
            values = token_values(self.critic, keep=1, **{
                k: batch[k].to(device) for k in ("input_ids", "attention_mask", "position_ids")})
            loss = loss + 0.0 * values.sum()
        return loss, {"loss/ptx": nll.detach(), "ptx/perplexity": sft_metrics["sft/perplexity"]}

    # ------------------------------------------------------------------ checkpoints
    def ppo_max_state(self) -> dict:
        return {"reward_moments": self.reward_moments.as_list()} if self.algo.reward_norm else {}

    def load_ppo_max_state(self, state: dict) -> None:
        if "reward_moments" in state:
            self._reward_moments = Moments(*(float(v) for v in state["reward_moments"]))
