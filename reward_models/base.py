"""The scorer interface every reward model and verifier implements.

A scorer takes a batch of (prompt, completion, row) — `row` is the dataset row the prompt
came from, holding e.g. the reference `answer` or the `tests` of a coding task — and
returns one float reward per sample plus named parts (logged separately by trainers).

A scorer that raises on one sample must not kill a training run: with `on_error="zero"`
(the default) that sample scores 0 and its error is reported in `ScoreResult.errors`;
with `on_error="raise"` a `ScorerError` names the scorer, the sample and the cause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class ScorerError(RuntimeError):
    """A scorer failed on a sample (raised only with on_error='raise')."""


class RowError(ValueError):
    """A data row a scorer cannot use (e.g. no tests to run): `index` is the sample's
    position in the batch, so the caller can name the row's file and line."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"sample {index}: {reason}")
        self.index, self.reason = index, reason


@dataclass
class ScoreResult:
    rewards: list[float]
    parts: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str | None] = field(default_factory=list)   # per sample; None = fine

    @property
    def n_errors(self) -> int:
        return sum(e is not None for e in self.errors)


class Scorer:
    """Subclasses set `name` and implement `score_one` (or `score` for batched models)."""

    name: str = "scorer"
    on_error: str = "zero"

    def score(self, prompts: Sequence[str], completions: Sequence[str],
              rows: Sequence[Mapping[str, Any]] | None = None) -> ScoreResult:
        rows = check_batch(self.name, prompts, completions, rows)
        return self.score_each(prompts, completions, rows, self.score_one)

    def score_each(self, prompts, completions, rows, score_one) -> ScoreResult:
        """`score_one(prompt, completion, row)` per sample; a sample that raises scores 0
        and is reported (or, with on_error="raise", stops with a ScorerError naming it)."""
        rewards, errors = [], []
        for i, (p, c, r) in enumerate(zip(prompts, completions, rows, strict=True)):
            try:
                rewards.append(float(score_one(p, c, r)))
                errors.append(None)
            except Exception as exc:  # noqa: BLE001 - user scorers may raise anything
                message = f"{self.name}: sample {i}: {type(exc).__name__}: {exc}"
                if self.on_error == "raise":
                    raise ScorerError(message) from exc
                rewards.append(0.0)
                errors.append(message)
        return ScoreResult(rewards, {self.name: list(rewards)}, errors)

    def score_one(self, prompt: str, completion: str, row: Mapping[str, Any]) -> float:
        raise NotImplementedError(f"{type(self).__name__} must implement score_one or score")


def check_batch(name: str, prompts: Sequence[str], completions: Sequence[str],
                rows: Sequence[Mapping[str, Any]] | None) -> Sequence[Mapping[str, Any]]:
    rows = rows if rows is not None else [{}] * len(prompts)
    if not len(prompts) == len(completions) == len(rows):
        raise ValueError(f"{name}: {len(prompts)} prompts, {len(completions)} completions "
                         f"and {len(rows)} rows: they must match")
    return rows
