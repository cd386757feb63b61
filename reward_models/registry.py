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
    "digit_match": "reward_models.verifiers:DigitMatchScorer",
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


# keys of a recipe reward spec that are not scorer options
SPEC_KEYS = {"name": str, "weight": (int, float), "constraint": bool, "label": str,
             "on_error": str}


def build_composite(specs: Sequence[Mapping[str, Any]], on_violation: str = "zero",
                    penalty: float = 1.0) -> Scorer:
    """From recipe-style specs: {name, weight=1, constraint=False, label=None,
    on_error="zero", **options}."""
    problems = check_specs(specs)
    if problems:
        raise ValueError("bad reward specs:\n  " + "\n  ".join(problems))
    parts = []
    for spec in specs:
        spec = dict(spec)
        name = spec.pop("name")
        weight = float(spec.pop("weight", 1.0))
        constraint = bool(spec.pop("constraint", False))
        label = spec.pop("label", None)
        on_error = spec.pop("on_error", "zero")
        scorer = build_scorer(name, **spec)
        scorer.on_error = on_error
        parts.append(Part(scorer, weight, constraint, label))
    return CompositeScorer(parts, on_violation=on_violation, penalty=penalty)


def check_specs(specs: Any, where: str = "rewards") -> list[str]:
    """Every problem in a list of reward specs, without building any scorer (no model is
    loaded): unknown scorer names and options get a did-you-mean."""
    if not isinstance(specs, (list, tuple)) or not specs:
        return [f"{where}: expected a non-empty list of reward specs like "
                "[{name: exact_answer, weight: 1.0}]"]
    problems = []
    for i, spec in enumerate(specs):
        at = f"{where}[{i}]"
        if not isinstance(spec, Mapping):
            problems.append(f"{at}: expected a mapping like {{name: exact_answer}}, got {spec!r}")
            continue
        name = spec.get("name")
        if not isinstance(name, str):
            problems.append(f"{at}: missing 'name' (a built-in: {', '.join(BUILTIN)}; or "
                            "'package.module:Name')")
            continue
        for key, kind in SPEC_KEYS.items():
            value = spec.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)
                                      and kind is not bool):
                problems.append(f"{at}.{key}: bad value {value!r}")
        if spec.get("on_error", "zero") not in ("zero", "raise"):
            problems.append(f"{at}.on_error: must be 'zero' or 'raise' (got "
                            f"{spec['on_error']!r})")
        try:
            target = _import(BUILTIN.get(name) or _known_name(name))
        except ValueError as exc:
            problems.append(f"{at}: {exc}")
            continue
        options = {k: v for k, v in spec.items() if k not in SPEC_KEYS}
        found = _check_options(name, target, options)
        if not found and hasattr(target, "check_options"):   # the scorer's own checks
            found = target.check_options(options)
        problems.extend(f"{at}: {p}" for p in found)
    return problems


def _known_name(name: str) -> str:
    if "." in name or ":" in name:
        return name
    close = difflib.get_close_matches(name, list(BUILTIN), n=1, cutoff=0.6)
    hint = f" — did you mean '{close[0]}'?" if close else ""
    raise ValueError(f"unknown scorer '{name}'{hint} (built-in: {', '.join(BUILTIN)}; or a "
                     "dotted path 'package.module:Name' to your own)")


def _check_options(name: str, target: Any, options: dict) -> list[str]:
    if not (inspect.isclass(target) and issubclass(target, Scorer)):
        return [f"scorer '{name}' is a function and takes no options, got {sorted(options)}"] \
            if options else []
    params = inspect.signature(target.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return []
    allowed = [p for p in params if p != "self"]
    problems = []
    for key in options:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed + list(SPEC_KEYS), n=1, cutoff=0.6)
            hint = f" — did you mean '{close[0]}'?" if close else ""
            problems.append(f"unknown option '{key}' for scorer '{name}'{hint} (options: "
                            f"{', '.join(allowed) or 'none'}; spec keys: {', '.join(SPEC_KEYS)})")
    for key, p in params.items():
        if key != "self" and p.default is p.empty and key not in options and \
                p.kind is not p.VAR_POSITIONAL:
            problems.append(f"scorer '{name}' needs option '{key}'")
    return problems


class FunctionScorer(Scorer):
    """Wraps fn(prompts, completions, rows) -> list[float]."""

    def __init__(self, fn: Callable, name: str):
        self.fn = fn
        self.name = name.rpartition(":")[2].rpartition(".")[2]

    def score(self, prompts, completions, rows=None) -> ScoreResult:
        rows = check_batch(self.name, prompts, completions, rows)
        try:
            values = self._call(prompts, completions, rows)
        except Exception:  # noqa: BLE001 - find the sample(s) that fail, score the rest
            return self.score_each(prompts, completions, rows,
                                   lambda p, c, r: self._call([p], [c], [r])[0])
        return ScoreResult(values, {self.name: list(values)}, [None] * len(values))

    def _call(self, prompts, completions, rows) -> list[float]:
        values = [float(v) for v in self.fn(list(prompts), list(completions), list(rows))]
        if len(values) != len(prompts):
            raise ValueError(f"scorer '{self.name}' returned {len(values)} rewards for "
                             f"{len(prompts)} samples")
        return values


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
