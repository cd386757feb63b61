"""What one online step carries: the prompts, the scored samples, the step's rollout
statistics, and the small helpers that group samples into micro-batches and average the
metrics of several updates (used by `alignment.trainers.online`)."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

from alignment.rollout import Rollouts


@dataclass
class PromptExample:
    prompt_ids: list[int]
    text: str                                   # the rendered prompt
    row: dict = field(default_factory=dict)     # answer, tests, ... for the scorers
    where: str = ""
    index: int = 0                              # position in its data set (sample seeds)
    reset_ids: list[int] | None = None          # DR-PO: the reference response, tokenised
    raw: Any = None                             # the prompt as scorers see it (as in the data)


@dataclass
class Sample:
    """One scored completion, ready for a micro-batch."""

    prompt_ids: list[int]
    completion_ids: list[int]
    sampling_logps: list[float]
    loss_mask: list[bool]          # False on forced (prefix) tokens and masked samples
    reward: float
    advantage: float = 0.0
    group: int = 0                 # samples of one prompt share a group (and its prompt)


class RoundStats:
    """Rewards, parts, accuracy and lengths over every sampling round of a step."""

    def __init__(self):
        self.rewards: list[float] = []
        self.parts: dict[str, list[float]] = {}
        self.correct: list[float] = []
        self.lengths: list[int] = []
        self.truncated: list[bool] = []
        self.errors = 0
        self.nonfinite = 0              # samples with a NaN/inf reward (left out below)
        self.examples: list[dict] = []
        self.groups = 0
        self.groups_with_signal = 0
        self.episode: dict[str, list[float]] = {}   # multi-turn: per-episode values

    def add_episodes(self, info) -> None:
        """An `EpisodeInfo`'s turns, reply tokens, aborts and step metrics."""
        values = {"turns": info.turns, "reply_tokens": info.reply_tokens,
                  "aborted": [float(a is not None) for a in info.aborted]}
        for key in sorted({k for m in info.metrics for k in m}):
            values[key] = [m[key] for m in info.metrics if key in m]
        for key, xs in values.items():
            self.episode.setdefault(key, []).extend(float(x) for x in xs)

    def add(self, result, rollouts: Rollouts, truncated: list[bool], verifier_key):
        # non-finite values are counted apart (`nonfinite`): a mean over them would be NaN
        finite = lambda xs: [x for x in xs if math.isfinite(x)]  # noqa: E731
        self.rewards.extend(finite(result.rewards))
        for key, values in result.parts.items():
            self.parts.setdefault(key, []).extend(finite(values))
        if verifier_key is not None:
            self.correct.extend(float(v > 0) for v in finite(result.parts[verifier_key]))
        self.lengths.extend(len(c) for c in rollouts.completion_ids)
        self.truncated.extend(truncated)

    def totals(self) -> dict[str, tuple[float, float]]:
        """metric -> (sum, count) on this process: summed over processes, then divided."""
        tally = lambda xs: (float(sum(xs)), float(len(xs)))  # noqa: E731
        out = {"reward": tally(self.rewards), "completion_length": tally(self.lengths),
               "truncated": tally([float(t) for t in self.truncated]),
               "reward_errors": (float(self.errors), 1.0),
               "reward_nonfinite": (float(self.nonfinite), 1.0)}
        out.update({f"rewards/{k}": tally(v) for k, v in self.parts.items()})
        out.update({f"episode/{k}": tally(v) for k, v in self.episode.items()})
        if self.correct:
            out["accuracy"] = tally(self.correct)
        out["groups_with_signal"] = (float(self.groups_with_signal), float(self.groups))
        return out


def _runs(samples: list[Sample]) -> list[list[Sample]]:
    """Consecutive samples of the same group."""
    runs: list[list[Sample]] = []
    for s in samples:
        if runs and runs[-1][0].group == s.group:
            runs[-1].append(s)
        else:
            runs.append([s])
    return runs


def _micro_batches(samples: list[Sample], size: int) -> list[list[Sample]]:
    """Whole groups per micro-batch, about `size` samples each (at least one group)."""
    out: list[list[Sample]] = []
    for run in _runs(samples):
        if out and len(out[-1]) + len(run) <= size:
            out[-1].extend(run)
        else:
            out.append(list(run))
    return out


def _mean_metrics(updates: list[dict]) -> dict:
    """The mean of each metric over a step's optimizer updates (lr and skips: the last)."""
    if not updates:
        return {}
    out = {k: sum(u[k] for u in updates if k in u) / sum(k in u for u in updates)
           for k in updates[-1]}
    out.update({k: updates[-1][k] for k in ("lr", "skipped") if k in updates[-1]})
    out["updates"] = float(len(updates))
    return out


@contextlib.contextmanager
def _timed(times: dict, key: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        times[key] += time.perf_counter() - start
