"""Weighted sums of scorers, with parts that act as constraints (mixture-of-judges style).

    reward = Σ_k w_k · r_k(x, y)           over the ordinary parts
    if any constraint part scores <= 0 on a sample (it is violated):
        reward = 0                         (on_violation="zero")
        reward = reward − penalty          (on_violation="penalty")

Every part's raw scores are kept under its name (and `constraints/violated` per sample),
so trainers log each one separately. Errors of any part are collected per sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reward_models.base import Scorer, ScoreResult, check_batch


@dataclass
class Part:
    scorer: Scorer
    weight: float = 1.0
    constraint: bool = False
    label: str | None = None       # name in the logs (default: the scorer's name)

    @property
    def key(self) -> str:
        return self.label or self.scorer.name


class CompositeScorer(Scorer):
    name = "composite"

    def __init__(self, parts: Sequence[Part], on_violation: str = "zero", penalty: float = 1.0):
        if not parts:
            raise ValueError("a composite scorer needs at least one part")
        keys = [p.key for p in parts]
        if len(set(keys)) != len(keys):
            raise ValueError(f"composite parts need distinct names, got {keys} (set 'label')")
        if on_violation not in ("zero", "penalty"):
            raise ValueError(f"on_violation must be 'zero' or 'penalty', got {on_violation!r}")
        self.parts = list(parts)
        self.on_violation = on_violation
        self.penalty = penalty

    def score(self, prompts: Sequence[str], completions: Sequence[str],
              rows: Sequence[Mapping[str, Any]] | None = None) -> ScoreResult:
        rows = check_batch(self.name, prompts, completions, rows)
        n = len(prompts)
        rewards = [0.0] * n
        violated = [0.0] * n
        parts: dict[str, list[float]] = {}
        errors: list[str | None] = [None] * n
        for part in self.parts:
            result = part.scorer.score(prompts, completions, rows)
            parts[part.key] = result.rewards
            for i, (value, error) in enumerate(zip(result.rewards, result.errors or [None] * n,
                                                   strict=True)):
                if error is not None:
                    errors[i] = error if errors[i] is None else f"{errors[i]}; {error}"
                if part.constraint:
                    violated[i] = max(violated[i], float(value <= 0))
                else:
                    rewards[i] += part.weight * value
        for i in range(n):
            if violated[i]:
                rewards[i] = 0.0 if self.on_violation == "zero" else rewards[i] - self.penalty
        if any(p.constraint for p in self.parts):
            parts["constraints/violated"] = violated
        return ScoreResult(rewards, parts, errors)
