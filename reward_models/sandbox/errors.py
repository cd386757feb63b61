"""What a sandbox run returns, and the error for a sandbox that cannot run as asked."""

from __future__ import annotations

from dataclasses import dataclass, field

STATUSES = ("ok", "error", "timeout", "memory", "output_limit", "killed")


@dataclass
class SandboxResult:
    ok: bool              # exited with code 0 within every limit
    status: str           # one of STATUSES
    returncode: int | None  # exit code, or -signal when the user process was killed by one
    stdout: str           # each stream truncated to max_output_bytes
    stderr: str
    seconds: float        # wall time of the whole run, set-up included
    pid: int | None = None  # the launcher's pid = session id = process group id of the run
    mode: str = ""        # the isolation mode used (see the package docstring)
    completed: bool = False  # the runner reported, with the run's secret, that the code (and
    #                          the tests) returned normally: nothing the code can forge
    reports: list[str] = field(default_factory=list)  # the runner's per-case reports (JSON)


class SandboxError(RuntimeError):
    """The sandbox itself could not run the code (not a verdict on the code)."""


class IsolationError(SandboxError, ValueError):
    """This machine cannot give the isolation that was asked for (a configuration problem:
    the fix is another machine or an explicit, weaker `isolation`)."""
