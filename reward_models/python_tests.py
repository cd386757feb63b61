"""`python_tests`: run the code in a completion against the row's Python asserts, sandboxed.

The program run is the completion's code — the last ```python fenced block, else the last
fenced block of any kind, else the whole completion; a fence left open at the end (a
generation cut off by the token limit) counts as a block — followed by a blank line and the
row's `tests` (asserts; a list of strings is joined with newlines). Reward 1.0 when the
program exits cleanly within the limits, else 0.0. The code runs in `reward_models.sandbox`
(see there for what is contained and how); samples of a batch run concurrently on a small
thread pool.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reward_models.base import Scorer, ScoreResult
from reward_models.sandbox import SandboxError, SandboxResult, run_python

_PYTHON_BLOCK_RE = re.compile(r"```[ \t]*(?:python3?|py)\b[^\n`]*\n(.*?)(?:```|\Z)",
                              re.DOTALL | re.IGNORECASE)
_ANY_BLOCK_RE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(completion: str) -> str:
    """The code to run from a completion (see the module docstring)."""
    for pattern in (_PYTHON_BLOCK_RE, _ANY_BLOCK_RE):
        blocks = pattern.findall(completion)
        if blocks:
            return blocks[-1]
    return completion


class PythonTestsScorer(Scorer):
    name = "python_tests"

    def __init__(self, timeout_s: float = 5.0, memory_mb: int = 512,
                 tests_column: str = "tests", workers: int = 2):
        if workers < 1:
            raise ValueError(f"{self.name}: workers must be >= 1, got {workers}")
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.tests_column = tests_column
        self.workers = workers

    def tests_of(self, row: Mapping[str, Any]) -> str:
        tests = row.get(self.tests_column) if row is not None else None
        if isinstance(tests, (list, tuple)):
            tests = "\n".join(str(t) for t in tests)
        if not isinstance(tests, str) or not tests.strip():
            raise ValueError(f"{self.name}: the row has no tests: column "
                             f"{self.tests_column!r} is missing or empty")
        return tests

    def program(self, completion: str, row: Mapping[str, Any]) -> str:
        return extract_code(completion) + "\n\n" + self.tests_of(row)

    def run(self, prompt: str, completion: str, row: Mapping[str, Any]) -> SandboxResult:
        return run_python(self.program(completion, row), timeout_s=self.timeout_s,
                          memory_mb=self.memory_mb)

    def score_one(self, prompt: str, completion: str, row: Mapping[str, Any]) -> float:
        return 1.0 if self.run(prompt, completion, row).status == "ok" else 0.0

    def score(self, prompts: Sequence[str], completions: Sequence[str],
              rows: Sequence[Mapping[str, Any]] | None = None) -> ScoreResult:
        if rows is None:
            raise ValueError(f"{self.name}: needs the dataset rows (column "
                             f"{self.tests_column!r} holds the tests)")
        if not len(prompts) == len(completions) == len(rows):
            raise ValueError(f"{self.name}: {len(prompts)} prompts, {len(completions)} "
                             f"completions and {len(rows)} rows: they must match")
        programs = [self.program(c, r) for c, r in zip(completions, rows, strict=True)]

        def one(program: str) -> tuple[float, str | None]:
            try:
                result = run_python(program, timeout_s=self.timeout_s,
                                    memory_mb=self.memory_mb)
            except SandboxError as exc:
                return 0.0, f"sandbox failure: {exc}"
            if result.status == "ok":
                return 1.0, None
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            return 0.0, f"{result.status}: {lines[-1].strip()}" if lines else result.status

        if not programs:
            return ScoreResult([], {self.name: []}, [])
        with ThreadPoolExecutor(max_workers=min(self.workers, len(programs))) as pool:
            outcomes = list(pool.map(one, programs))
        rewards = [reward for reward, _ in outcomes]
        return ScoreResult(rewards, {self.name: list(rewards)}, [err for _, err in outcomes])
