"""The check made at start-up with `memory_estimate`: the estimate against what this
machine can give the run, and, when it does not fit, a refusal that lists the estimate term
by term and the recipe keys that would bring it down (each estimated alone)."""

from __future__ import annotations

import math
from pathlib import Path

from alignment.config import Recipe
from alignment.config.schema import is_online
from alignment.errors import TrainingError
from alignment.memory_estimate import (
    DataLengths,
    MemoryEstimate,
    _gb,
    data_lengths,
    estimate_memory,
)


class NotEnoughMemoryError(TrainingError):
    """The recipe's estimated peak memory exceeds what this machine has."""


def available_memory() -> int:
    """Bytes this machine can give a new run: MemAvailable, or less where a cgroup limit
    (v2 memory.max, v1 memory.limit_in_bytes) minus the group's usage (without its
    reclaimable inactive page cache) leaves less."""
    values = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                values.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit, usage, stat, inactive in (
            ("memory.max", "memory.current", "memory.stat", "inactive_file"),
            ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes",
             "memory/memory.stat", "total_inactive_file")):
        root = Path("/sys/fs/cgroup")
        try:
            text = (root / limit).read_text().strip()
            if text == "max" or int(text) >= 1 << 60:
                continue
            used = int((root / usage).read_text())
            for line in (root / stat).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == inactive:
                    used -= int(value)
            values.append(max(0, int(text) - used))
        except (OSError, ValueError):
            continue
    if not values:
        import psutil

        values.append(psutil.virtual_memory().available)
    return min(values)


def _own_rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def check_memory(recipe: Recipe, *, available: int | None = None) -> MemoryEstimate | None:
    """Refuse (NotEnoughMemoryError) a recipe whose estimated peak, times the processes it starts on
    this machine, exceeds what the machine has; return the estimate (None when skipped:
    trainer.memory_check false, a model that is not a local folder, a CUDA machine). What
    this process already holds counts as part of the estimate's runtime term."""
    if not recipe.trainer.memory_check or _cuda():
        return None
    lengths = data_lengths(recipe)
    try:
        est = estimate_memory(recipe, lengths=lengths)
    except ValueError:
        return None
    have = available_memory() if available is None else available
    need = est.machine_total - min(_own_rss(), est.runtime)
    if need <= have:
        return est
    raise NotEnoughMemoryError(refusal(recipe, est, have, lengths))


def refusal(recipe: Recipe, est: MemoryEstimate, have: int,
            lengths: DataLengths | None = None) -> str:
    """The message: the estimate by term, what is available, and the keys that lower it."""
    per = f" ({est.processes} processes x {_gb(est.total)})" if est.processes > 1 else ""
    lines = [f"estimated peak memory {_gb(est.machine_total)}{per} exceeds the "
             f"{_gb(have)} available on this machine:", *est.lines(),
             "what would bring it down (each alone; per process):"]
    budget = (have + min(_own_rss(), est.runtime)) // max(1, est.processes)
    for key, saving in remedies(recipe, est, lengths, budget):
        lines.append(f"  {key:<46} saves {_gb(saving)} (-> {_gb(est.total - saving)})")
    if est.processes > 1:   # (the machine's total, not one process's)
        fewer = max(1, est.processes // 2)
        lines.append(f"  {f'launch.num_processes={fewer}':<46} machine total -> "
                     f"{_gb(est.total * fewer)}")
    lines.append("(trainer.memory_check=false skips this check)")
    return "\n".join(lines)


def remedies(recipe: Recipe, est: MemoryEstimate, lengths: DataLengths | None = None,
             budget: int | None = None) -> list[tuple[str, int]]:
    """(override, bytes it saves per process) for the keys that lower the estimate,
    largest saving first; each is estimated alone from the same recipe. `budget`: bytes
    one process may take (the batch size suggested is then the largest that fits)."""
    import copy

    def saving(*changes: tuple[str, object]) -> int:
        r = copy.deepcopy(recipe)
        for path, value in changes:
            obj = r
            *parents, last = path.split(".")
            for part in parents:
                obj = getattr(obj, part)
            setattr(obj, last, value)
        return est.total - estimate_memory(r, lengths=lengths, processes=est.processes).total

    out = []
    batch = recipe.trainer.batch_size
    if batch > 1:   # the largest that fits (halving), else 1; offline: same examples per step
        smaller = batch // 2
        while smaller > 1 and budget is not None and \
                est.total - saving(("trainer.batch_size", smaller)) > budget:
            smaller //= 2
        smaller = max(1, smaller)
        accum = recipe.trainer.grad_accum * math.ceil(batch / smaller)
        key = (f"trainer.batch_size={smaller} trainer.grad_accum={accum}"
               if not is_online(recipe) else f"trainer.batch_size={smaller}")
        out.append((key, saving(("trainer.batch_size", smaller))))
    if not recipe.model.gradient_checkpointing:
        out.append(("model.gradient_checkpointing=true",
                    saving(("model.gradient_checkpointing", True))))
    if recipe.model.lora.r == 0:
        out.append(("model.lora.r=16", saving(("model.lora.r", 16))))
    if est.master and recipe.trainer.optimizer == "adamw":
        out.append(("trainer.optimizer=adamw_kahan",
                    saving(("trainer.optimizer", "adamw_kahan"))))
    if est.kv_cache and recipe.rollout.kv_cache_gb == "auto":
        half = f"{est.kv_cache / 2 / (1 << 30):.3g}"
        out.append((f"rollout.kv_cache_gb={half} (sequences wait their turn)",
                    est.kv_cache // 2))
    elif est.kv_cache:
        out.append(("rollout.kv_cache_gb=auto", saving(("rollout.kv_cache_gb", "auto"))))
    if est.engine:
        out.append(("rollout.backend=hf (no engine copy, slower rollouts)",
                    est.engine + est.kv_cache))
    return sorted([(k, s) for k, s in out if s > 0], key=lambda ks: -ks[1])


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False
