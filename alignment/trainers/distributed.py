"""Accelerate, DeepSpeed and FSDP2 set-up for the trainer loop (data parallel, ZeRO-2,
ZeRO-3, FSDP2).

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

import contextlib
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
    cpu_processes = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    if cpu_processes:
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    # On a CPU, Accelerate asked for FSDP sets its state to NO (one process: its reduce
    # and barriers do nothing) while several run. We shard ourselves (`shard_fsdp2`), so
    # hide the request from it there and ask for CPU processes: its state is then
    # MULTI_CPU, as for DDP.
    hidden = os.environ.pop("ACCELERATE_USE_FSDP", None) if cpu_processes else None
    try:
        accelerator = Accelerator(kwargs_handlers=handlers, cpu=hidden is not None)
    finally:
        if hidden is not None:
            os.environ["ACCELERATE_USE_FSDP"] = hidden
    kind = str(accelerator.distributed_type).rsplit(".", 1)[-1]
    if accelerator.num_processes > 1 and kind == "NO":   # (reductions would do nothing)
        from alignment.errors import TrainingError

        raise TrainingError(f"{accelerator.num_processes} processes started, but Accelerate "
                            "set up none of its distributed modes (on a CPU it needs "
                            "ACCELERATE_USE_CPU=1): start the run with `alignment train "
                            "RECIPE launch.num_processes=N`, which sets it up")
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


def sharded_inference(model: torch.nn.Module, accelerator) -> torch.nn.Module:
    """A frozen model (a separate π_ref) sharded like the trained one under ZeRO-3: an
    inference-only DeepSpeed engine (no optimizer) partitions its weights over the
    processes and gathers each layer's for its forward, as TRL does for its reference
    model. Every process must then run the same number of forwards (`equal_share`).
    Returns the module itself (hooks installed): callers use it like any model."""
    import copy

    import deepspeed

    config = copy.deepcopy(deepspeed_plugin(accelerator).deepspeed_config)
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    # the engine owns the partitioning: keep it alive as long as the module
    # (plain __dict__: assigning a Module attribute would register it as a submodule)
    model.__dict__["_deepspeed_engine"] = engine
    return model


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

    def state_dict(self, keep: bool = True) -> dict:   # (the engine saves its own state)
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def full_state_dict(model: torch.nn.Module, keep: bool = True) -> dict[str, torch.Tensor]:
    """Every parameter as the forward pass uses it (the 16-bit weights under bf16, not the
    fp32 masters: see `export_final`), gathered from its ZeRO-3 or FSDP2 shards, in fp32,
    one tensor at a time. Collective: all processes call it; those with `keep` false take
    part in the gathers and hold nothing (an empty dict)."""
    out = {}
    for name, param in model.named_parameters():
        if hasattr(param, "ds_id"):   # a ZeRO-3 partition
            import deepspeed

            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                if keep:
                    out[name] = param.detach().float().cpu().clone()
        else:
            whole = full_tensor(param.detach())
            if keep:
                out[name] = whole.float().cpu().clone()
    for name, buffer in model.named_buffers():
        if keep and "rotary" not in name:
            out[name] = buffer.detach().cpu().clone()
    return out


# ---------------------------------------------------------------------------- FSDP2
#
# `launch/fsdp.yaml` (fsdp_version 2): `fully_shard` on every transformer block, on the
# submodules the trainer calls on their own, then on the root; parameters become DTensors
# holding 1/N of each tensor, gathered block by block for each forward and backward,
# gradients reduce-scattered. The trainer's own `MasterWeightOptimizer` steps the shards
# (its fp32 masters are sharded too). Checkpoints gather whole tensors (the layout of one
# process, so a run may resume on another process count) and re-shard on load.
# The sharding is applied here rather than by `Accelerator.prepare`: Accelerate sets FSDP
# up only on accelerators (on a CPU its state stays MULTI_CPU), and its FSDP2 path cannot
# give the units the trainer calls directly their own setting (below). The settings are
# still Accelerate's: `accelerate launch` exports the config file as FSDP_* variables,
# which its plugin class reads.

def fsdp_plugin():
    """Accelerate's FSDP settings when the launch asked for FSDP, else None."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return None
    from accelerate.utils import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin()   # (reads the FSDP_* variables)


def shard_fsdp2(model: torch.nn.Module, plugin, called_directly: list[torch.nn.Module],
                device: torch.device) -> torch.nn.Module:
    """`fully_shard` bottom-up: the blocks (the plugin's class names, else every
    submodule's `_no_split_modules`), the `called_directly` units (the actor-critic's policy
    and critic), the root. Those units and the root keep their own parameters (embeddings,
    final norm, LM head, value head) gathered after their forward, because the log-prob
    path reads the LM head's weight after the forward (`model_logps`). The root is fixed
    as `model`, whichever module runs first (FSDP2 otherwise takes the first one called)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    names = set(plugin.transformer_cls_names_to_wrap or [])
    if not names:
        names = {n for m in model.modules() for n in getattr(m, "_no_split_modules", None) or []}
    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    kwargs = {"mesh": mesh, "offload_policy": plugin.cpu_offload}
    model.to(device)
    blocks = [m for m in reversed(list(model.modules()))   # (descendants before parents)
              if type(m).__name__ in names and m is not model]
    if not blocks:
        from alignment.errors import TrainingError

        raise TrainingError(f"FSDP2: no module of class {', '.join(sorted(names)) or '(none)'} "
                            "in the model to shard; fix fsdp_transformer_layer_cls_to_wrap in "
                            "the Accelerate config, or leave it unset")
    for module in blocks:
        fully_shard(module, reshard_after_forward=plugin.reshard_after_forward, **kwargs)
    for unit in called_directly:
        fully_shard(unit, reshard_after_forward=False, **kwargs)
    fully_shard(model, reshard_after_forward=False, **kwargs)
    model._get_fsdp_state()._lazy_init()   # (private: no public way to name the root)
    return model


@contextlib.contextmanager
def gradient_sync(model: torch.nn.Module, sync: bool):
    """FSDP2: reduce-scatter gradients only on a step's last micro-batch (the others
    accumulate locally), as DDP's `no_sync` does."""
    model.set_requires_gradient_sync(sync)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def full_numel(p: torch.Tensor) -> int:
    """Elements of the whole parameter behind `p` (a ZeRO-3 placeholder or an FSDP2 shard:
    a DTensor's `numel` is already the global one)."""
    return int(getattr(p, "ds_numel", p.numel()))


def is_dtensor(x) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(x, DTensor)


def full_tensor(x: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered whole (collective); any other tensor as it is."""
    return x.full_tensor() if is_dtensor(x) else x


def gathered(obj, keep: bool = True):
    """`obj` (nested dicts / lists / tuples of tensors, e.g. an optimizer state) with every
    DTensor gathered whole, on the CPU. Collective: every process walks the same structure
    in the same order; where `keep` is false the gathered tensors are dropped (None)."""
    if isinstance(obj, torch.Tensor):
        if not is_dtensor(obj):
            return obj
        whole = full_tensor(obj).detach()
        return whole.cpu() if keep else None
    if isinstance(obj, dict):
        return {k: gathered(v, keep) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(gathered(v, keep) for v in obj)
    return obj


def sharded_like(full: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """`full` split as `template` (a DTensor) is: this process's shard, as a DTensor."""
    if not is_dtensor(template) or is_dtensor(full):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(template.device, template.dtype), template.device_mesh,
                             template.placements, src_data_rank=None)


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
