"""Scorers by name: the built-ins, or a user's own class / function by dotted import path.

    build_scorer("exact_answer")
    build_scorer("regex", pattern=r"#### -?\\d+\\s*$")
    build_scorer("my_pkg.rewards:LengthPenalty", max_tokens=200)   # a Scorer subclass
    build_scorer("my_pkg.rewards:brevity")   # fn(prompts, completions, rows) -> list[float]
    build_composite([{"name": "exact_answer", "weight": 1.0},
                     {"name": "regex", "pattern": "####", "constraint": True}])
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reward_models.base import Scorer, ScoreResult, check_batch
from reward_models.composite import CompositeScorer, Part

BUILTIN = {
    "exact_answer": "reward_models.verifiers:ExactAnswerScorer",
    "math_equiv": "reward_models.verifiers:MathEquivScorer",
    "regex": "reward_models.verifiers:RegexScorer",
    "python_tests": "reward_models.python_tests:PythonTestsScorer",
    "reward_model": "reward_models.reward_model:RewardModelScorer",
}


def build_scorer(name: str, **options: Any) -> Scorer:
    target = BUILTIN.get(name)
    if target is None and not ("." in name or ":" in name):
        close = difflib.get_close_matches(name, list(BUILTIN), n=1, cutoff=0.6)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown scorer '{name}'{hint} (built-in: {', '.join(BUILTIN)}; or "
                         "a dotted path 'package.module:Name' to your own)")
    obj = _import(target or name)
    if inspect.isclass(obj) and issubclass(obj, Scorer):
        try:
            scorer = obj(**options)
        except TypeError as exc:
            raise ValueError(f"scorer '{name}': bad options {sorted(options)}: {exc}") from None
    elif callable(obj) and not inspect.isclass(obj):
        if options:
            raise ValueError(f"scorer '{name}' is a function: it takes no options, got "
                             f"{sorted(options)}")
        scorer = FunctionScorer(obj, name)
    else:
        raise ValueError(f"scorer '{name}' is neither a Scorer subclass nor a function")
    return scorer


def build_composite(specs: Sequence[Mapping[str, Any]], on_violation: str = "zero",
                    penalty: float = 1.0) -> Scorer:
    """From recipe-style specs: {name, weight=1, constraint=False, label=None, **options}."""
    parts = []
    for spec in specs:
        spec = dict(spec)
        if "name" not in spec:
            raise ValueError(f"reward spec {spec} has no 'name'")
        name = spec.pop("name")
        weight = float(spec.pop("weight", 1.0))
        constraint = bool(spec.pop("constraint", False))
        label = spec.pop("label", None)
        parts.append(Part(build_scorer(name, **spec), weight, constraint, label))
    return CompositeScorer(parts, on_violation=on_violation, penalty=penalty)


class FunctionScorer(Scorer):
    """Wraps fn(prompts, completions, rows) -> list[float]."""

    def __init__(self, fn: Callable, name: str):
        self.fn = fn
        self.name = name.rpartition(":")[2].rpartition(".")[2]

    def score(self, prompts, completions, rows=None) -> ScoreResult:
        rows = check_batch(self.name, prompts, completions, rows)
        values = [float(v) for v in self.fn(list(prompts), list(completions), list(rows))]
        if len(values) != len(prompts):
            raise ValueError(f"scorer '{self.name}' returned {len(values)} rewards for "
                             f"{len(prompts)} samples")
        return ScoreResult(values, {self.name: list(values)}, [None] * len(values))


def _import(path: str) -> Any:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"scorer '{path}': cannot import module '{module_name}' ({exc})") \
            from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"scorer '{path}': module '{module_name}' has no '{attr}'") from None
