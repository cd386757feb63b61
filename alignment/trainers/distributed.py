"""Accelerate and DeepSpeed set-up for the trainer loop (data parallel, ZeRO-2, ZeRO-3).

DDP (and one process): the trainer's own `MasterWeightOptimizer` keeps fp32 master weights
and steps; gradients are synchronised by DDP on the last micro-batch of a step.

DeepSpeed (`accelerate launch --config_file launch/deepspeed_zero*.yaml`, or a recipe's
`launch.config_file`): the engine owns the fp32 master weights, the sharded optimizer
state and gradient clipping. The loop stays the same: every micro-batch's loss is scaled by
its share of the step (`engine.backward(..., scale_wrt_gas=False)`: no second division by
the accumulation count), and one `engine.step()` per optimizer step is the accumulation
boundary (`managed_gradient_accumulation: false`), so micro-batch counts may vary between
steps and processes. DeepSpeed averages gradients over processes, as DDP does.

Two accelerate 1.15 details handled here:
- On a machine without GPUs, `Accelerator()` under DeepSpeed chooses no process-group
  backend and then resets `num_processes` to 1 although DeepSpeed started them all
  (accelerate/state.py, `_prepare_backend` returns None; `__init__` then forces one
  process), and DeepSpeed asserts on the batch size. Naming the backend ("gloo") keeps the
  real world size.
- Under DeepSpeed `accelerator.backward` calls `engine.step()` itself whenever gradients
  are "synced" (every call outside `accumulate()`), so the engine is driven directly.
"""

from __future__ import annotations

import os
import warnings

import torch

from alignment.faults import kill_point


def make_accelerator():
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    # DeepSpeed 0.19 calls a collective torch 2.13 deprecates, once per step per process
    warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.* is deprecated")
    handlers = []
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    accelerator = Accelerator(kwargs_handlers=handlers)
    # The recipe's model.dtype IS the precision. Accelerate's state is process-wide and
    # its mixed precision comes from ACCELERATE_MIXED_PRECISION (a user's `accelerate
    # config`) or from whatever built it first (e.g. transformers' TrainingArguments with
    # bf16=True): left on, `prepare` would wrap the model's forward in autocast on top of
    # the chosen dtype (slower on a CPU, other numbers than the recipe asked for).
    accelerator.native_amp = False
    return accelerator


def deepspeed_plugin(accelerator):
    """The active DeepSpeed plugin, or None when DeepSpeed is not in use."""
    return getattr(accelerator.state, "deepspeed_plugin", None)


def zero_stage(accelerator) -> int:
    plugin = deepspeed_plugin(accelerator)
    return int(plugin.zero_stage) if plugin is not None else 0


def configure_deepspeed(accelerator, cfg, dtype: torch.dtype) -> None:
    """Fill the DeepSpeed config with the recipe's values (before `prepare`)."""
    ds = deepspeed_plugin(accelerator).deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = cfg.batch_size        # bookkeeping: batches are
    ds["gradient_accumulation_steps"] = cfg.grad_accum           # fed by the loop itself
    ds["train_batch_size"] = cfg.batch_size * cfg.grad_accum * accelerator.num_processes
    ds["managed_gradient_accumulation"] = False                   # one step() = one boundary
    ds["gradient_clipping"] = float(cfg.max_grad_norm or 0.0)
    ds["bf16"] = {"enabled": dtype == torch.bfloat16}
    ds["fp16"] = {"enabled": dtype == torch.float16}
    zero = ds.setdefault("zero_optimization", {})
    zero["stage3_gather_16bit_weights_on_model_save"] = True     # for get_state_dict
    ds["steps_per_print"] = 10**9
    if zero.get("stage") == 3 or deepspeed_plugin(accelerator).zero3_init_flag:
        # transformers' sharded loading (zero.Init) reads a COPY of the config taken when
        # the Accelerator was made: refresh it, or ZeRO-3 weights load (and train) in fp32
        deepspeed_plugin(accelerator).set_deepspeed_weakref()


class DeepSpeedOptimizer:
    """The engine's optimizer behind the interface of `MasterWeightOptimizer`: DeepSpeed
    keeps the fp32 master weights (sharded under ZeRO), clips and steps."""

    low_precision = False   # the engine's parameters are what `export_final` gathers
    skipped = False         # the last step() was dropped (a non-finite gradient norm)

    def __init__(self, engine, optimizer: torch.optim.Optimizer):
        self.engine = engine
        self.optimizer = optimizer   # the torch AdamW the LR schedule drives

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> float:
        """Step; return the global grad norm (NaN where the engine computed none). The
        ZeRO optimizers drop a step whose gradient norm is not finite themselves (bf16 and
        fp16 check for overflow, any dtype when clipping): `skipped` reports it."""
        kill_point("step")   # (crash tests: gradients reduced, weights not yet updated)
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        norm = float(norm) if norm is not None else float("nan")
        self.skipped = not self.engine.was_step_applied()
        return norm

    def zero_grad(self) -> None:
        self.engine.zero_grad()
        self.engine.optimizer.zero_grad()

    def state_dict(self) -> dict:   # (checkpointed by `save_engine_state`)
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter as the forward pass uses it (the 16-bit weights under bf16, not the
    engine's fp32 masters: see `export_final`), gathered from its ZeRO-3 shards, in fp32
    (collective: all processes call it; every process gets the whole dict, one tensor at
    a time)."""
    import deepspeed

    out = {}
    for name, param in model.named_parameters():
        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            out[name] = param.detach().float().cpu().clone()
    for name, buffer in model.named_buffers():
        if "rotary" not in name:
            out[name] = buffer.detach().cpu().clone()
    return out


def equal_share(batches: list, world: int, rank: int) -> list[tuple[object, bool]]:
    """`batches[rank::world]`, padded with a repeat (marked False) so that every process
    runs the same number of forward passes: under ZeRO-3 each forward gathers parameters
    from all processes, and a process with one pass fewer would leave the others waiting."""
    mine = batches[rank::world]
    most = len(batches[0::world]) if batches else 0
    padded = [(b, True) for b in mine]
    while len(padded) < most:
        padded.append((batches[0], False))
    return padded
