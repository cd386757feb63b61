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
import os
import types
import typing
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
    "python_io": "reward_models.python_io:PythonIOScorer",
    "reward_model": "reward_models.reward_model:RewardModelScorer",
}


def build_scorer(name: str, **options: Any) -> Scorer:
    target = BUILTIN.get(name)
    if target is None and not ("." in name or ":" in name):
        close = difflib.get_close_matches(name, list(BUILTIN), n=1, cutoff=0.6)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown scorer '{name}'{hint} (built-in: {', '.join(BUILTIN)}; or "
                         "a dotted path 'package.module:Name' to your own)")
    obj = import_object(target or name)
    problems = [f"scorer '{name}', option {p}" if _names_option(p, options) else p
                for p in option_problems(name, obj, options)]
    if problems:
        raise ValueError("; ".join(problems))
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
_EXPECTED = {"name": "a string", "weight": "a number", "constraint": "true or false",
             "label": "a string", "on_error": "'zero' or 'raise'"}
# built-ins whose constructor is cheap (no model, no process): `check_specs` builds them
# once, so every check their constructor makes is also made at recipe time
CHEAP_TO_BUILD = ("exact_answer", "digit_match", "math_equiv", "regex", "python_tests",
                  "python_io")


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


def data_columns(specs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The data columns the reward parts read, column -> the part's name: every constructor
    parameter named `column` or `*_column` (e.g. exact_answer's `answer_column`), with the
    spec's value or the default. Nothing is built; unknown names are skipped (their problem
    is `check_specs`'s)."""
    needed: dict[str, str] = {}
    for spec in specs:
        name = spec.get("name") if isinstance(spec, Mapping) else None
        if not isinstance(name, str) or (name not in BUILTIN and ":" not in name):
            continue
        try:
            target = import_object(BUILTIN.get(name, name))
            params = inspect.signature(target).parameters if inspect.isclass(target) else {}
        except (ValueError, TypeError, ImportError):
            continue
        for param in params.values():
            if param.name == "column" or param.name.endswith("_column"):
                column = spec.get(param.name, param.default)
                if isinstance(column, str) and column:
                    needed.setdefault(column, name)
    return needed


def check_specs(specs: Any, where: str = "rewards",
                deferred: Callable[[Any], bool] | None = None) -> list[str]:
    """Every problem in a list of reward specs, without loading any model: unknown scorer
    names and options get a did-you-mean; option types, the scorer's own `check_options`
    and (for the cheap built-ins) its constructor's checks are run. An option whose value
    `deferred` is true for (a folder an earlier training stage has yet to write) is left out
    of the scorer's own check."""
    if not isinstance(specs, (list, tuple)) or not specs:
        return [f"{where}: expected a non-empty list of reward specs like "
                "[{name: exact_answer, weight: 1.0}]"]
    problems = []
    keys: dict[str, int] = {}
    for i, spec in enumerate(specs):
        at = f"{where}[{i}]"
        if not isinstance(spec, Mapping):
            problems.append(f"{at}: expected a mapping like {{name: exact_answer}}, got {spec!r}")
            continue
        name = spec.get("name")
        builtins = f"a built-in: {', '.join(BUILTIN)}; or 'package.module:Name'"
        if name is None:
            problems.append(f"{at}: missing 'name' ({builtins})")
            continue
        if not isinstance(name, str):
            problems.append(f"{at}.name: expected a string ({builtins}), got {name!r}")
            continue
        for key, kind in SPEC_KEYS.items():
            value = spec.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)
                                      and kind is not bool):
                problems.append(f"{at}.{key}: expected {_EXPECTED[key]} (got {value!r})")
        if spec.get("on_error", "zero") not in ("zero", "raise"):
            problems.append(f"{at}.on_error: must be 'zero' or 'raise' (got "
                            f"{spec['on_error']!r})")
        try:
            target = import_object(BUILTIN.get(name) or _known_name(name))
        except ValueError as exc:
            problems.append(f"{at}: {exc}")
            continue
        key = spec.get("label") if isinstance(spec.get("label"), str) else _part_name(name, target)
        if key in keys:   # a composite logs each part under its name
            problems.append(f"{at}: a second part named '{key}' (the first is "
                            f"{where}[{keys[key]}]): give one of them a 'label'")
        keys.setdefault(key, i)
        options = {k: v for k, v in spec.items() if k not in SPEC_KEYS}
        found = option_problems(name, target, options, deferred)
        if not found and name in CHEAP_TO_BUILD:
            try:
                target(**options)
            except (TypeError, ValueError) as exc:
                found = [f"scorer '{name}': {exc}"]
        problems.extend(f"{at}.{p}" if _names_option(p, options) else f"{at}: {p}"
                        for p in found)
    return problems


def option_problems(name: str, target: Any, options: dict,
                    deferred: Callable[[Any], bool] | None = None) -> list[str]:
    """Unknown or missing options, values of the wrong type, and the scorer's own
    `check_options` (a classmethod returning problems; one about a single option starts
    with 'OPTION: '), which does not see the options `deferred` is true for."""
    found = _check_options(name, target, options)
    if not found:
        found = _check_types(target, options)
    if not found and hasattr(target, "check_options"):
        found = list(target.check_options(
            {k: v for k, v in options.items() if not (deferred and deferred(v))}))
    return found


def _names_option(problem: str, options: dict) -> bool:
    key, sep, _ = problem.partition(": ")
    return bool(sep) and key in options


def _part_name(name: str, target: Any) -> str:
    """The name a composite logs a part under (Part.key without a label)."""
    if inspect.isclass(target) and issubclass(target, Scorer):
        return target.name
    return name.rpartition(":")[2].rpartition(".")[2]


def _check_types(target: Any, options: dict) -> list[str]:
    """Options against the constructor's annotations (int, float, str, bool, X | None)."""
    if not inspect.isclass(target):
        return []
    try:
        hints = typing.get_type_hints(target.__init__)
    except Exception:  # noqa: BLE001 - an annotation we cannot resolve: nothing to check
        return []
    problems = []
    for key, value in options.items():
        allowed = _simple_types(hints.get(key))
        if allowed is None or any(_is(value, t) for t in allowed):
            continue
        names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
        problems.append(f"{key}: expected {names} (got {value!r})")
    return problems


def _simple_types(tp: Any) -> tuple | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        parts = [_simple_types(a) for a in typing.get_args(tp)]
        return None if any(p is None for p in parts) else sum(parts, ())
    return (tp,) if tp in (int, float, str, bool, type(None)) else None


def _is(value: Any, tp: type) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is str:   # a path may come as a Path
        return isinstance(value, (str, os.PathLike))
    return isinstance(value, tp)


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
    return signature_problems(target, options, f" for scorer '{name}'", f"scorer '{name}' ",
                              also_known=SPEC_KEYS)


def signature_problems(cls: type, options: dict, for_whom: str = "", who: str = "", *,
                       also_known: tuple[str, ...] = ()) -> list[str]:
    """Options `cls(**options)` would refuse: unknown ones (with a did-you-mean, also among
    `also_known` keys accepted elsewhere) and missing required ones."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return []
    allowed = [p for p in params if p != "self"]
    problems = []
    for key in options:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed + list(also_known), n=1, cutoff=0.6)
            hint = f" — did you mean '{close[0]}'?" if close else ""
            spec = f"; spec keys: {', '.join(also_known)}" if also_known else ""
            problems.append(f"unknown option '{key}'{for_whom}{hint} (options: "
                            f"{', '.join(allowed) or 'none'}{spec})")
    problems += [f"{who}needs option '{key}'" for key, p in params.items()
                 if key != "self" and p.default is p.empty and key not in options
                 and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
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


def import_object(path: str, what: str = "scorer") -> Any:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{what} '{path}': cannot import module '{module_name}' ({exc})") \
            from None
    except Exception as exc:  # noqa: BLE001 - the user's module fails as it loads
        raise ValueError(f"{what} '{path}': importing module '{module_name}' failed: "
                         f"{type(exc).__name__}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{what} '{path}': module '{module_name}' has no '{attr}'") from None
