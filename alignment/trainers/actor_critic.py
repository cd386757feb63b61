"""The actor-critic step shared by PPO, APA and DR-PO (ALGORITHMS.md §1.2), on the online
loop of `OnlineTrainer`:

    rollouts             engine.generate (DR-PO: from reset prefixes)
    scores               the recipe's rewards; a response without EOS scores
                         `missing_eos_penalty` (N+'s EOS trick)
    π_old, π_ref, V_old  one no-grad pass each, at the rollout temperature; the π_old
                         pass also gives the policy's entropy per token (logged)
    score shaping        PPO-max (`reward_norm`, `reward_clip`): the score normalised by the
                         running mean / std of every score so far, clipped to ±c
    r_t                  −β_KL·k_t per token, + the score at the last real token
                         (optionally whitened over the batch, mean kept)
    Â_t, G_t             GAE with the critic, Â whitened over every token of the step
                         (PPO-max `advantage_clip`: then clipped to ±c)
    K epochs x M minibatches of  algorithm.policy_loss + c_v · value loss
                         (+ `ptx_coef` · NLL of a `ptx_data` demonstration micro-batch,
                         PPO-ptx; the first `critic_warmup_steps` steps: value loss only)
    β_KL                 adaptive (Ziegler et al.) when `kl_target` is set (not while
                         the critic warms up: the policy has not moved)

Policy and critic are one module (`ActorCritic`): one Accelerate / DeepSpeed engine, one
optimizer with a parameter group per model (`critic.lr`), one checkpoint (critic in
`critic/`, restored on resume with the KL coefficient and the running score moments).
Statistics that span the batch (whitening, KL, score moments) are taken over every
process, so N processes compute what one would. The masks: `loss_mask` marks the tokens
the policy chose; tokens a reset forced (DR-PO) and samples excluded by `mask_truncated`
are off it for rewards, values and losses. The PPO-max options (Zheng et al. 2023) are
in `ppo_max.py`, each off by default.
"""

from __future__ import annotations

import abc
import math
import random

import torch

from alignment.config import ConfigError
from alignment.losses.gae import gae, whiten
from alignment.losses.kl import k1_kl
from alignment.losses.ppo import adaptive_kl_coef, kl_penalized_rewards, ppo_value_loss
from alignment.rollout import Rollouts
from alignment.trainers.online import OnlineTrainer, PromptExample, RoundStats, Sample
from alignment.trainers.ppo_max import PPOMaxParts
from alignment.trainers.sequences import (
    completion_states,
    group_logps_and_values,
    group_token_logps_as_sampled,
)
from alignment.value_model import (
    ActorCritic,
    CriticError,
    critic_backbone,
    disable_dropout,
    load_critic,
    token_values,
    value_head,
)


class ActorCriticTrainer(PPOMaxParts, OnlineTrainer):
    anchored_on_init = False   # APA: the loss needs π_init's log-probs (the reference)

    @property
    def samples_per_prompt(self) -> int:
        return self.algo.samples_per_prompt

    def needs_reference(self) -> bool:
        return self.algo.kl_coef > 0 or self.algo.kl_target is not None or self.anchored_on_init

    @property
    def kl_coef(self) -> float:
        return getattr(self, "_kl_coef", self.algo.kl_coef)

    @abc.abstractmethod
    def policy_loss(self, logps: torch.Tensor, batch: dict, mask: torch.Tensor
                    ) -> tuple[torch.Tensor, dict]:
        """The algorithm's policy term on one micro-batch (tensors on logps' device)."""

    # ------------------------------------------------------------------ models
    def check_distributed_support(self) -> None:
        super().check_distributed_support()
        if self.zero_stage and self.cfg.max_grad_norm is not None:
            self._say("note: under DeepSpeed, trainer.max_grad_norm clips the gradient norm of "
                      "policy and critic together (without DeepSpeed: each on its own)")

    def build_trainable(self) -> torch.nn.Module:
        c = self.recipe.critic
        try:
            critic = load_critic(c.init, str(self.model_path), self.dtype, path=c.path,
                                 pad_token_id=self.tokenizer.pad_token_id)
        except CriticError as exc:
            raise ConfigError([str(exc)], self.recipe_path) from None
        if c.lora.r > 0:
            from peft import LoraConfig, get_peft_model

            critic = get_peft_model(critic, LoraConfig(
                r=c.lora.r, lora_alpha=c.lora.alpha, lora_dropout=0.0,
                target_modules=c.lora.target_modules, task_type="SEQ_CLS"),
                autocast_adapter_dtype=not self.fsdp)   # (FSDP2: one dtype per block)
        if self.recipe.model.gradient_checkpointing:
            critic.gradient_checkpointing_enable()
            if c.lora.r > 0:
                critic.enable_input_require_grads()
        self.critic = critic
        return ActorCritic(disable_dropout(self.policy), critic)

    def called_directly(self) -> list[torch.nn.Module]:
        # rollouts and π_old passes run the policy; values run the critic's backbone, then
        # its head (`token_values`)
        return [self.policy, critic_backbone(self.critic), value_head(self.critic)]

    def param_groups(self) -> list[dict]:
        trainable = lambda m: [p for p in m.parameters() if p.requires_grad]  # noqa: E731
        return [{"params": trainable(self.policy)},
                {"params": trainable(self.critic), "lr": self.recipe.critic.lr or self.cfg.lr}]

    def extra_models(self) -> dict[str, torch.nn.Module]:
        return {"critic": self.critic}

    def extra_state(self) -> dict:
        return {"kl_coef": self.kl_coef, **self.ppo_max_state()}

    def load_extra_state(self, state: dict) -> None:
        if "kl_coef" in state:
            self._kl_coef = float(state["kl_coef"])
        self.load_ppo_max_state(state)

    def _load_reference(self):
        ref = super()._load_reference()
        return disable_dropout(ref) if ref is not None else None

    # ------------------------------------------------------------------ samples
    def load_examples(self, path: str, limit: int | None, split: str) -> list[PromptExample]:
        if split == "train":   # (first: a bad demonstrations file stops the run early)
            self.load_ptx()
        return super().load_examples(path, limit, split)

    def before_training(self) -> None:
        super().before_training()
        if self.critic_warming_up:
            self._say(f"critic warm-up: steps {self.step + 1}-{self.algo.critic_warmup_steps} "
                      "train the critic only (logged as critic_warmup = 1)")

    def make_batch(self, rollouts: Rollouts, rewards: list[float], truncated: list[bool],
                   info: RoundStats) -> list[Sample]:
        penalty = self.algo.missing_eos_penalty
        return [self.make_sample(rollouts, i, penalty if truncated[i] and penalty is not None
                                 else rewards[i], truncated[i]) for i in range(len(rollouts))]

    def micro_batch_size(self, n_samples: int) -> int:
        """Small enough that every minibatch gets at least one micro-batch."""
        return max(1, min(self.cfg.batch_size, math.ceil(n_samples / self.algo.minibatches)))

    # ------------------------------------------------------------------ rollout phase
    @torch.no_grad()
    def prepare_batches(self, batches: list[dict]) -> dict:
        """π_old, π_ref and V_old per micro-batch; then rewards, GAE and whitening with
        statistics over the whole step (every micro-batch of every process)."""
        seq_kl = torch.zeros(2, dtype=torch.float64)    # Σ over samples of Σ_t k1, samples
        for b in batches:
            mask = b["loss_mask"]
            old, sampled, entropy = group_token_logps_as_sampled(
                self.policy, b, **self.sampled_as(), entropy=True)
            b["old_logps"], b["entropy"] = old.float(), entropy.float()
            mask = b["loss_mask"] = mask.to(b["old_logps"].device)
            self.note_logprob_gap(b, sampled)   # (as the engine sampled: top-k / top-p)
            b["old_values"] = self._values(b)
            ref = (self.reference_token_logps(b).float() if self.needs_reference()
                   else b["old_logps"])   # (no reference: no KL term, KL logged as 0)
            b["ref_logps"] = ref
            if not b.get("stand_in"):
                per_seq = (k1_kl(b["old_logps"], ref) * mask).sum(1)[mask.any(1)]
                seq_kl += torch.tensor([per_seq.sum().item(), per_seq.numel()],
                                       dtype=torch.float64)
        shaping = self.shape_scores(batches)   # PPO-max: b["scores"], normalised / clipped
        for b in batches:
            b["token_rewards"] = kl_penalized_rewards(
                b["scores"], b["old_logps"], b["ref_logps"], b["loss_mask"],
                kl_coef=self.kl_coef if self.needs_reference() else 0.0,
                estimator=self.algo.kl_estimator)
        if self.algo.whiten_rewards:
            mean, var = self._global_mean_var([(b["token_rewards"], b["loss_mask"])
                                               for b in batches])
            for b in batches:
                b["token_rewards"] = whiten(b["token_rewards"], b["loss_mask"], shift_mean=False,
                                            mean=mean, var=var)
        for b in batches:
            b["raw_advantages"], b["returns"] = gae(b["token_rewards"], b["old_values"],
                                                    b["loss_mask"], gamma=self.algo.gamma,
                                                    lam=self.algo.gae_lambda)
        mean, var = self._global_mean_var([(b["raw_advantages"], b["loss_mask"])
                                           for b in batches])
        for b in batches:
            b["token_advantages"] = whiten(b["raw_advantages"], b["loss_mask"], mean=mean, var=var)
        shaping.update(self.clip_advantages(batches))   # PPO-max: ±advantage_clip
        return {**self._rollout_metrics(batches, seq_kl, var), **shaping}

    def _values(self, batch: dict) -> torch.Tensor:
        device = next(self.critic.parameters()).device
        values = token_values(self.critic, input_ids=batch["input_ids"].to(device),
                              attention_mask=batch["attention_mask"].to(device),
                              position_ids=batch["position_ids"].to(device),
                              keep=batch["input_ids"].shape[1])
        return completion_states(values, batch)

    def _global_mean_var(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]):
        """Mean and population variance of the masked entries over every process."""
        sums = [0.0, 0.0, 0.0]
        for x, mask in pairs:
            valid = x[mask.bool()].double()
            sums = [sums[0] + valid.numel(), sums[1] + valid.sum().item(),
                    sums[2] + (valid ** 2).sum().item()]
        n, total, squares = self._sum_vector(sums)
        if n == 0:
            return 0.0, 0.0
        mean = total / n
        return mean, max(squares / n - mean * mean, 0.0)

    def _rollout_metrics(self, batches: list[dict], seq_kl: torch.Tensor, adv_var: float
                         ) -> dict:
        pairs_v = [(b["old_values"], b["loss_mask"]) for b in batches]
        pairs_g = [(b["returns"], b["loss_mask"]) for b in batches]
        pairs_e = [(b["returns"] - b["old_values"], b["loss_mask"]) for b in batches]
        v_mean, _ = self._global_mean_var(pairs_v)
        g_mean, g_var = self._global_mean_var(pairs_g)
        _, e_var = self._global_mean_var(pairs_e)
        entropy, _ = self._global_mean_var([(b["entropy"], b["loss_mask"]) for b in batches])
        kl_sum, kl_n = self._sum_vector(seq_kl.tolist())
        out = {"critic/values": v_mean, "critic/returns": g_mean,
               # mean per response token under π_old: a collapse to ~0 means the policy
               # writes one pattern whatever the prompt
               "policy/entropy": entropy,
               # 1 − Var(G − V)/Var(G): 1 = the critic predicts the returns, ≤ 0 = no better
               # than their mean
               "critic/explained_variance": 1.0 - e_var / g_var if g_var > 0 else 0.0,
               "advantages/raw_std": math.sqrt(adv_var)}
        if self.needs_reference():
            out["policy/kl"] = kl_sum / max(kl_n, 1.0)   # per sequence, Σ_t k1 under π_old
        return out

    # ------------------------------------------------------------------ updates
    def update_plan(self, batches: list[dict], prompt: PromptExample) -> list[list[dict]]:
        """K epochs; in each the micro-batches (whole prompts) are shuffled (seeded by
        step and epoch) and split into M minibatches, one optimizer step each. A
        minibatch a process has nothing for gets a zero-weight stand-in, so that all
        processes take the same steps."""
        m = self.algo.minibatches
        plan = []
        for epoch in range(self.algo.epochs):
            order = list(range(len(batches)))
            if m > 1:
                random.Random((self.cfg.seed * 1_000_003 + self.step) * 1_009 + epoch
                              ).shuffle(order)
            for j in range(m):
                chunk = [batches[i] for i in order[j::m]]
                plan.append(chunk or [{**batches[0], "stand_in": True}])
        if self.algo.ptx_coef > 0 and not self.critic_warming_up:   # PPO-ptx, first in each
            plan = [[self.ptx_batch(self.step * len(plan) + j), *chunk]   # optimizer step
                    for j, chunk in enumerate(plan)]
        return plan

    def batch_weight(self, batch: dict) -> float:
        if batch.get("term") == "ptx":
            return float(batch["completion_mask"].sum())   # SFT's token mean
        return float(batch["loss_mask"].sum())   # token-mean over the whole minibatch

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        if batch.get("term") == "ptx":
            return self.ptx_loss(batch)
        logps, values = group_logps_and_values(self.model, batch,
                                               temperature=self.recipe.rollout.temperature)
        device = logps.device
        mask = batch["loss_mask"].to(device)
        pg_loss, metrics = self.policy_loss(logps, batch, mask)
        value_loss, value_metrics = ppo_value_loss(
            values, batch["old_values"].to(device), batch["returns"].to(device), mask,
            clip=self.algo.value_clip)
        # critic warm-up: the policy's term weighs 0 but stays in the graph (DDP and ZeRO
        # expect a gradient for every parameter in every backward)
        policy_term = pg_loss * 0.0 if self.critic_warming_up else pg_loss
        loss = policy_term + self.algo.vf_coef * value_loss
        return loss, {"loss/policy": pg_loss.detach(), "loss/value": value_loss.detach(),
                      **metrics, **value_metrics}

    def update(self, batches: list[dict]) -> dict:
        if not self.critic_warming_up:
            return super().update(batches)
        # critic warm-up: the policy's learning rate is 0 as well, so that nothing (weight
        # decay included) moves it; the scheduler sets it again at its next step
        group = self.optim.optimizer.param_groups[0]   # the policy's (`param_groups`)
        lr, group["lr"] = group["lr"], 0.0
        try:
            return super().update(batches)
        finally:
            group["lr"] = lr

    def after_update(self, metrics: dict, n_samples: int) -> None:
        # (critic warm-up: the policy did not move, nothing for the KL controller to follow)
        if self.algo.kl_target is not None and "policy/kl" in metrics \
                and not self.critic_warming_up:
            self._kl_coef = adaptive_kl_coef(self.kl_coef, metrics["policy/kl"],
                                             self.algo.kl_target, self.algo.kl_horizon,
                                             n_samples)

    def step_metrics(self) -> dict:
        warmup = ({"critic_warmup": float(self.critic_warming_up)}
                  if self.algo.critic_warmup_steps else {})
        return {"kl_coef": self.kl_coef, **warmup}
