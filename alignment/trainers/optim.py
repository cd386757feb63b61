"""Optimiser, LR schedule and low-precision training with fp32 master weights.

Why master weights: with bf16 parameters an Adam update of lr 5e-6 on a weight of 0.05 is
1e-4 relative, below bf16's resolution (2^-8 ≈ 4e-3): most updates would round away. So
the trainable parameters keep an fp32 "master" copy that the optimiser owns; forward and
backward run entirely in the model's dtype (no autocast casts on every matmul, which is
what makes this faster than autocast on a CPU), and after each step the master values are
copied back into the low-precision parameters. In fp32 the master copy is the parameter
itself and nothing is duplicated.

`trainer.optimizer: adamw_kahan` keeps no master copy: AdamW runs on the bf16 weights and
its states in bf16, and each update's rounding error is carried in a bf16 compensation
buffer and added back at the next step (Kahan summation; Zamirai et al. 2021, "Revisiting
BFloat16 Training", §4; torch-optimi's implementation). At the step's peak that is 10 bytes
per parameter (weight, gradient, two Adam states, compensation: 2 each) instead of 18
(bf16 weight 2, fp32 master 4, fp32 gradient 4, fp32 states 8), for a slightly slower
step (tests/test_numerics.py checks that it tracks the fp32 trajectory where plain bf16
AdamW does not).
"""

from __future__ import annotations

import math

import torch

from alignment.config.schema import TrainerConfig
from alignment.faults import kill_point
from alignment.trainers.distributed import full_tensor, gathered, is_dtensor, sharded_like


class MasterWeightOptimizer:
    """An optimiser over fp32 copies of (possibly bf16) trainable parameters. `params` is a
    list of parameters or of torch parameter groups (dicts with "params" and options such
    as their own "lr")."""

    def __init__(self, params: list, cfg: TrainerConfig):
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
        self.params = [p for g in groups for p in g["params"]]
        low_precision = any(p.dtype in (torch.bfloat16, torch.float16) for p in self.params)
        # adamw_kahan steps the low-precision weights themselves (compensated): no copy
        self.low_precision = low_precision and cfg.optimizer != "adamw_kahan"
        if self.low_precision:
            copies = {id(p): p.detach().float().clone().requires_grad_(True) for p in self.params}
            self.master = [copies[id(p)] for p in self.params]
            groups = [{**g, "params": [copies[id(p)] for p in g["params"]]} for g in groups]
        else:
            self.master = self.params
        self.optimizer = build_optimizer(groups, cfg)
        self.max_grad_norm = cfg.max_grad_norm
        self.skipped = False   # the last step() was dropped for a non-finite gradient

    def step(self) -> float:
        """Clip (per parameter group), step, copy back; return the global grad norm before
        clipping. A non-finite norm (an inf or NaN gradient anywhere) steps nothing: the
        gradients are dropped and `skipped` is set, for the caller to count."""
        self.skipped = False
        if self.low_precision:
            for m, p in zip(self.master, self.params, strict=True):
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None
        # each parameter group is clipped on its own: a critic's value-loss gradient must not
        # shrink the policy's step, nor the policy's the critic's (one group: the global norm)
        norms = []
        for group in self.optimizer.param_groups:
            grads = [m for m in group["params"] if m.grad is not None]
            if not grads:
                continue
            # (both handle FSDP2's sharded gradients: the norm of the whole tensors)
            if self.max_grad_norm is not None:
                group_norm = torch.nn.utils.clip_grad_norm_(grads, self.max_grad_norm)
            else:
                group_norm = torch.nn.utils.get_total_norm([m.grad for m in grads])
            norms.append(full_tensor(group_norm))
        norm = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
        if not torch.isfinite(norm):   # (clipping may have made the gradients NaN)
            self.zero_grad()
            self.skipped = True
            return float(norm)
        kill_point("step")   # (crash tests: gradients summed, weights not yet updated)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.low_precision:
            with torch.no_grad():   # (FSDP2: shard into shard; DTensors have no foreach copy)
                torch._foreach_copy_(_local(self.params), _local(self.master))
        return float(norm)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self, keep: bool = True) -> dict:
        """Whole tensors, as one process has them (FSDP2: the shards gathered, a collective;
        processes without `keep` take part and get nothing)."""
        return gathered({"optimizer": self.optimizer.state_dict(),
                         "master": [m.detach().clone() for m in self.master]}, keep)

    def load_state_dict(self, state: dict) -> None:
        by_id = dict(enumerate(self.master))   # the optimizer state's keys index its params
        optimizer = state["optimizer"]
        optimizer = {**optimizer, "state": {
            i: {k: sharded_like(v, by_id[i]) if getattr(v, "dim", lambda: 0)() else v
                for k, v in entry.items()} for i, entry in optimizer["state"].items()}}
        self.optimizer.load_state_dict(optimizer)
        with torch.no_grad():
            for m, saved, p in zip(self.master, state["master"], self.params, strict=True):
                m.copy_(sharded_like(saved, m))
                p.copy_(sharded_like(saved, p))


def _local(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """This process's shard of each FSDP2 DTensor (a view: writes go to the parameter)."""
    return [t.to_local() if is_dtensor(t) else t for t in tensors]


def build_optimizer(params: list, cfg: TrainerConfig) -> torch.optim.Optimizer:
    """`params`: tensors, or torch parameter groups (each may set its own "lr")."""
    if cfg.optimizer == "adamw":
        # fused: one kernel over all tensors (CPU too, torch >= 2.4), ~2x the foreach speed
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 fused=True)
    if cfg.optimizer == "adamw_kahan":
        import optimi

        # torch's AdamW defaults (optimi's are betas (0.9, 0.99), eps 1e-6); kahan_sum is
        # what makes bf16 weights safe to step in place (on fp32 weights it does nothing)
        return optimi.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=cfg.weight_decay, kahan_sum=True)
    if cfg.optimizer == "rmsprop":  # the DPO and SPIN papers' choice
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainerConfig, total_steps: int):
    """Linear warm-up from 0, then constant / linear decay to 0 / cosine decay to 0."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.scheduler == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        progress = min(1.0, progress)
        if cfg.scheduler == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
