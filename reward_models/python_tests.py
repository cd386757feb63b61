"""`python_tests`: run the code in a completion against the row's Python asserts, sandboxed.

The program run is the completion's code — the last ```python fenced block, else the last
fenced block of any kind, else the whole completion; a fence left open at the end (a
generation cut off by the token limit) counts as a block — followed by a blank line and the
row's `tests` (asserts; a list of strings is joined with newlines), parsed on their own and
run after the code. Reward 1.0 only when the sandbox's runner reports, with the run's secret,
that the tests returned (`SandboxResult.completed`): a program that exits early in any way
(sys.exit, os._exit, SystemExit, atexit, an excepthook, a thread, a signal) scores 0, and so
does an object "equal to everything" in the tests' comparisons. The code runs in
`reward_models.sandbox` (see there for what is contained and how); samples of a batch run
concurrently on a small thread pool. `isolation` is the weakest sandbox mode accepted (the
default refuses to run without the strongest isolation this kind of machine can give).

What it cannot promise: the tests call the code, so a test that calls a library function the
code has monkeypatched (`math.isclose = lambda *a: True`) can be fooled; comparisons of plain
data (==, !=, <, in) cannot. Where that matters, use `python_io`: the verdict is computed
outside the sandbox from plain data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reward_models.base import RowError, Scorer, ScoreResult
from reward_models.sandbox import MODES, IsolationError, SandboxError, SandboxResult, run_python
from reward_models.sandbox.modes import require
from reward_models.sandbox.runner import wrap_tests

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


class SandboxedScorer(Scorer):
    """What `python_tests` and `python_io` share: the sandbox options (checked, and the
    isolation required when the scorer is built, so a too-weak machine fails at recipe
    check, not at the first batch) and samples scored on a small thread pool."""

    def __init__(self, *, timeout_s: float, memory_mb: int, workers: int,
                 isolation: str | None):
        check_sandbox_options(self.name, timeout_s=timeout_s, memory_mb=memory_mb,
                              workers=workers, isolation=isolation)
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.workers = workers
        self.isolation = isolation
        self.mode = require(isolation)

    def score_jobs(self, jobs: list, one) -> ScoreResult:
        """`one(job) -> (reward, error or None)` for every job, `workers` at a time."""
        if not jobs:
            return ScoreResult([], {self.name: []}, [])
        with ThreadPoolExecutor(max_workers=min(self.workers, len(jobs))) as pool:
            outcomes = list(pool.map(one, jobs))
        rewards = [reward for reward, _ in outcomes]
        return ScoreResult(rewards, {self.name: list(rewards)}, [err for _, err in outcomes])


class PythonTestsScorer(SandboxedScorer):
    name = "python_tests"

    def __init__(self, timeout_s: float = 5.0, memory_mb: int = 512,
                 tests_column: str = "tests", workers: int = 2, isolation: str | None = None):
        super().__init__(timeout_s=timeout_s, memory_mb=memory_mb, workers=workers,
                         isolation=isolation)
        self.tests_column = tests_column

    def tests_of(self, row: Mapping[str, Any]) -> str:
        tests = row.get(self.tests_column) if row is not None else None
        if isinstance(tests, (list, tuple)):
            tests = "\n".join(str(t) for t in tests)
        if not isinstance(tests, str) or not tests.strip():
            raise ValueError(f"{self.name}: the row has no tests: column "
                             f"{self.tests_column!r} is missing or empty")
        try:
            wrap_tests(tests)
        except SyntaxError as exc:
            raise ValueError(f"{self.name}: the row's tests (column {self.tests_column!r}) do "
                             f"not parse: {exc.msg} at line {exc.lineno}") from None
        return tests

    def run(self, prompt: str, completion: str, row: Mapping[str, Any]) -> SandboxResult:
        return run_python(extract_code(completion), tests=self.tests_of(row),
                          timeout_s=self.timeout_s, memory_mb=self.memory_mb,
                          isolation=self.isolation)

    def score_one(self, prompt: str, completion: str, row: Mapping[str, Any]) -> float:
        return 1.0 if self.run(prompt, completion, row).completed else 0.0

    def score(self, prompts: Sequence[str], completions: Sequence[str],
              rows: Sequence[Mapping[str, Any]] | None = None) -> ScoreResult:
        check_rows(self.name, self.tests_column, "the tests", prompts, completions, rows)
        jobs = []
        for i, (completion, row) in enumerate(zip(completions, rows, strict=True)):
            try:
                jobs.append((extract_code(completion), self.tests_of(row)))
            except ValueError as exc:
                raise RowError(i, str(exc)) from None

        def one(job: tuple[str, str]) -> tuple[float, str | None]:
            try:
                result = run_python(job[0], tests=job[1], timeout_s=self.timeout_s,
                                    memory_mb=self.memory_mb, isolation=self.isolation)
            except IsolationError:
                raise
            except SandboxError as exc:
                return 0.0, f"sandbox failure: {exc}"
            if result.completed:
                return 1.0, None
            return 0.0, failure_reason(result)

        return self.score_jobs(jobs, one)


def failure_reason(result: SandboxResult) -> str:
    """Why a run did not pass, in one line (the last line of stderr, or how it ended)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.status == "ok":
        return ("exited before the tests finished (exit status 0, no completion report)"
                if not result.completed else "ok")
    return f"{result.status}: {lines[-1].strip()}" if lines else result.status


def check_rows(name: str, column: str, holds: str, prompts: Sequence[str],
               completions: Sequence[str], rows: Sequence[Mapping[str, Any]] | None) -> None:
    """Sandboxed scorers need one dataset row per sample (the row holds what to check)."""
    if rows is None:
        raise ValueError(f"{name}: needs the dataset rows (column {column!r} holds {holds})")
    if not len(prompts) == len(completions) == len(rows):
        raise ValueError(f"{name}: {len(prompts)} prompts, {len(completions)} completions "
                         f"and {len(rows)} rows: they must match")


def check_sandbox_options(name: str, *, timeout_s: float, memory_mb: int, workers: int,
                          isolation: str | None) -> None:
    """Options every sandboxed scorer shares: a bad one is a ValueError naming it."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"{name}: workers must be an integer >= 1, got {workers!r}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
        raise ValueError(f"{name}: timeout_s must be a number > 0, got {timeout_s!r}")
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < 16:
        raise ValueError(f"{name}: memory_mb must be an integer >= 16, got {memory_mb!r}")
    if isolation is not None and isolation not in MODES:
        raise ValueError(f"{name}: isolation must be one of {', '.join(MODES)}, got "
                         f"{isolation!r}")
