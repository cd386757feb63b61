"""Which examples go into which micro-batch, on which process, at which step.

Each epoch is a seeded permutation of the data. To waste little compute on padding, the
permutation is cut into chunks of many micro-batches, each chunk is sorted by length and
cut into micro-batches, and the micro-batches are shuffled again (so the order of lengths
stays random). A step takes `grad_accum x processes` consecutive micro-batches; process r
takes every r-th one. The plan depends only on (seed, epoch), so a resumed run, or a run
with another number of processes but the same global batch, sees the same examples.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def epoch_plan(lengths: Sequence[int], *, batch_size: int, seed: int, epoch: int,
               chunk_batches: int = 16) -> list[list[int]]:
    """Micro-batches (lists of example indices) for one epoch; the last partial one dropped
    only when the data set holds at least one full micro-batch."""
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * chunk_batches
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda i: lengths[i])
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    full = [b for b in batches if len(b) == batch_size]
    batches = full or batches
    rng.shuffle(batches)
    return batches


def steps_per_epoch(n_batches: int, grad_accum: int, processes: int) -> int:
    return n_batches // (grad_accum * processes)


def step_batches(plan: list[list[int]], step_in_epoch: int, *, grad_accum: int,
                 processes: int, rank: int) -> list[list[int]]:
    """The micro-batches process `rank` runs for one optimiser step."""
    per_step = grad_accum * processes
    window = plan[step_in_epoch * per_step:(step_in_epoch + 1) * per_step]
    return window[rank::processes]


def eval_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Evaluation: sorted by length (least padding); processes take them round-robin
    (`Trainer.eval_share`)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
