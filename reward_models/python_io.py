"""`python_io`: run the completion's code on input/output cases (the APPS / TACO convention).

The row's `input_output` column (a JSON string or a mapping) holds `inputs` and `outputs`, one
per case, and optionally `fn_name`:

  * with `fn_name` (call-based): one sandbox run defines the code and calls `fn_name(*inputs[i])`
    (or `Solution().fn_name`, LeetCode style) for every case; each return value is turned into
    plain JSON data inside the sandbox (tuples and namedtuples as lists; anything that is not
    plain data fails the case) and compared here, in the scorer's process, with `outputs[i]`
    (or with `outputs[i][0]`, the APPS habit of wrapping a single return value in a list).
    The expected outputs never enter the sandbox, and an object that claims equality to
    everything never meets the comparison: it is not plain data.
  * without `fn_name` (standard I/O): one sandbox run per case, `inputs[i]` on stdin (a list of
    lines is joined with newlines), passed when the program exits with status 0 and its
    stdout matches `outputs[i]` token by token (whitespace and line breaks are not
    significant; numbers that both parse as floats may differ by 1e-6).

Reward: 1.0 when every case passes, else 0.0; with `partial: true`, the share of cases passed.
`max_cases` caps the cases run per row (the first ones). The sandbox options are
`python_tests`'s: timeout_s (per run), memory_mb, workers (samples in parallel), isolation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from reward_models.base import RowError, ScoreResult
from reward_models.python_tests import SandboxedScorer, check_rows, extract_code, failure_reason
from reward_models.sandbox import IsolationError, SandboxError, run_python


class PythonIOScorer(SandboxedScorer):
    name = "python_io"

    def __init__(self, column: str = "input_output", partial: bool = False,
                 max_cases: int | None = None, timeout_s: float = 5.0, memory_mb: int = 512,
                 workers: int = 2, isolation: str | None = None):
        super().__init__(timeout_s=timeout_s, memory_mb=memory_mb, workers=workers,
                         isolation=isolation)
        if not isinstance(partial, bool):
            raise ValueError(f"{self.name}: partial must be true or false, got {partial!r}")
        if max_cases is not None and (isinstance(max_cases, bool) or not isinstance(max_cases, int)
                                      or max_cases < 1):
            raise ValueError(f"{self.name}: max_cases must be an integer >= 1, got {max_cases!r}")
        self.column = column
        self.partial = partial
        self.max_cases = max_cases

    def cases_of(self, row: Mapping[str, Any] | None) -> tuple[str | None, list, list]:
        """(fn_name or None, inputs, outputs) from the row; ValueError naming what is wrong."""
        spec = row.get(self.column) if row is not None else None
        where = f"{self.name}: column {self.column!r}"
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where} is not valid JSON: {exc}") from None
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where} is missing or not an object with inputs and outputs")
        inputs, outputs = spec.get("inputs"), spec.get("outputs")
        if not isinstance(inputs, list) or not isinstance(outputs, list):
            raise ValueError(f"{where}: 'inputs' and 'outputs' must both be lists")
        if len(inputs) != len(outputs):
            raise ValueError(f"{where}: {len(inputs)} inputs but {len(outputs)} outputs")
        if not inputs:
            raise ValueError(f"{where}: no cases (empty inputs)")
        fn_name = spec.get("fn_name")
        if fn_name is not None and (not isinstance(fn_name, str) or not fn_name.isidentifier()):
            raise ValueError(f"{where}: fn_name must be a Python identifier, got {fn_name!r}")
        if fn_name is not None and not all(isinstance(args, list) for args in inputs):
            raise ValueError(f"{where}: with fn_name, each input must be a list of arguments")
        if self.max_cases is not None:
            inputs, outputs = inputs[:self.max_cases], outputs[:self.max_cases]
        return fn_name, inputs, outputs

    def score(self, prompts: Sequence[str], completions: Sequence[str],
              rows: Sequence[Mapping[str, Any]] | None = None) -> ScoreResult:
        check_rows(self.name, self.column, "the cases", prompts, completions, rows)
        jobs = []
        for i, (completion, row) in enumerate(zip(completions, rows, strict=True)):
            try:
                jobs.append((extract_code(completion), *self.cases_of(row)))
            except ValueError as exc:
                raise RowError(i, str(exc)) from None
        return self.score_jobs(jobs, lambda job: self._one(*job))

    def _one(self, code: str, fn_name: str | None, inputs: list,
             outputs: list) -> tuple[float, str | None]:
        try:
            if fn_name is not None:
                passed, why = self._call_cases(code, fn_name, inputs, outputs)
            else:
                passed, why = self._stdio_cases(code, inputs, outputs)
        except IsolationError:
            raise
        except SandboxError as exc:
            return 0.0, f"sandbox failure: {exc}"
        reward = passed / len(inputs) if self.partial else float(passed == len(inputs))
        return reward, why

    def _call_cases(self, code: str, fn_name: str, inputs: list,
                    outputs: list) -> tuple[int, str | None]:
        result = run_python(code, call=(fn_name, inputs), timeout_s=self.timeout_s,
                            memory_mb=self.memory_mb, isolation=self.isolation)
        got: dict[int, dict] = {}
        for line in result.reports:
            try:
                item = json.loads(line)
                got.setdefault(int(item["case"]), item)
            except (ValueError, KeyError, TypeError):
                continue
        passed, why = 0, None
        for i, expected in enumerate(outputs):
            item = got.get(i)
            if item is None:
                why = why or f"case {i}: no result ({failure_reason(result)})"
            elif "error" in item:
                why = why or f"case {i}: {item['error']}"
            elif call_output_matches(item.get("out"), expected):
                passed += 1
            else:
                why = why or f"case {i}: expected {_short(expected)}, got {_short(item.get('out'))}"
        return passed, why

    def _stdio_cases(self, code: str, inputs: list, outputs: list) -> tuple[int, str | None]:
        passed, why = 0, None
        for i, (given, expected) in enumerate(zip(inputs, outputs, strict=True)):
            stdin = "\n".join(map(str, given)) if isinstance(given, list) else str(given)
            result = run_python(code, stdin=stdin, timeout_s=self.timeout_s,
                                memory_mb=self.memory_mb, isolation=self.isolation)
            if result.status != "ok":
                why = why or f"case {i}: {failure_reason(result)}"
            elif stdout_matches(result.stdout, expected):
                passed += 1
            else:
                why = why or (f"case {i}: expected {_short(expected)}, got "
                              f"{_short(result.stdout)}")
            if why and not self.partial:
                break       # all-or-nothing: the rest cannot change the reward
        return passed, why


def call_output_matches(got: Any, expected: Any) -> bool:
    """Plain data compared as data; APPS wraps a single return value in a list."""
    if _same(got, expected):
        return True
    return isinstance(expected, list) and len(expected) == 1 and _same(got, expected[0])


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, tuple):
        b = list(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (math.isfinite(a) and math.isfinite(b)
                          and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def stdout_matches(got: str, expected: Any) -> bool:
    """Token by token; tokens that both parse as floats may differ by 1e-6."""
    if isinstance(expected, list):
        expected = "\n".join(map(str, expected))
    got_tokens, want_tokens = got.split(), str(expected).split()
    if got_tokens == want_tokens:
        return True
    if len(got_tokens) != len(want_tokens):
        return False
    for g, w in zip(got_tokens, want_tokens, strict=True):
        if g == w:
            continue
        try:
            if not math.isclose(float(g), float(w), rel_tol=1e-6, abs_tol=1e-6):
                return False
        except ValueError:
            return False
    return True


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
