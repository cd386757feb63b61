"""`python_tool`: the model may run Python. A turn holding a ```python block is a tool call:
the block runs in the fail-closed sandbox of `reward_models.sandbox` (no network, read-only
filesystem, its own processes, time and memory limits) and what it printed comes back as
the tool's reply (a `tool` turn; the exception's line when it failed; cut to
`max_output_chars`). A turn without a block is the answer and ends the episode.

A call that runs out of time or memory, floods its output past `max_output_bytes`, or
trips one of the sandbox's guards (sockets, signals to other processes, ...) ends the
episode with reward 0 and the reason logged (`Step.abort`); the run goes on. A machine that
cannot give the isolation asked for (`isolation`, default: the strongest this kind of
machine has) is refused when the environment is built, not at the first call.
"""

from __future__ import annotations

import re

from alignment.environments.base import Environment, Step
from reward_models.python_tests import check_sandbox_options
from reward_models.sandbox import run_python
from reward_models.sandbox.modes import require

_BLOCK = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
# what the sandbox's in-process guards say when code reaches outside (runner.py)
_GUARDS = re.compile(r"(is disabled in the sandbox|is outside the sandbox)")


def tool_code(text: str) -> str | None:
    """The code of the last complete ```python block of a turn, or None (no tool call)."""
    blocks = _BLOCK.findall(text)
    return blocks[-1] if blocks else None


class PythonTool(Environment):
    def __init__(self, timeout_s: float = 5.0, memory_mb: int = 256,
                 max_output_chars: int = 400, max_output_bytes: int = 16_000,
                 isolation: str | None = None, role: str = "tool"):
        check_sandbox_options("python_tool", timeout_s=timeout_s, memory_mb=memory_mb,
                              workers=1, isolation=isolation)
        if max_output_chars < 1 or max_output_bytes < max_output_chars:
            raise ValueError("python_tool: need 1 <= max_output_chars <= max_output_bytes, got "
                             f"{max_output_chars} and {max_output_bytes}")
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.max_output_chars = max_output_chars
        self.max_output_bytes = max_output_bytes
        self.mode = require(isolation)   # IsolationError now, not mid-run
        self.role = role

    def step(self, text: str) -> Step:
        code = tool_code(text)
        if code is None:
            return Step(done=True)
        result = run_python(code, timeout_s=self.timeout_s, memory_mb=self.memory_mb,
                            max_output_bytes=self.max_output_bytes, mode=self.mode)
        abort = {"timeout": f"tool call ran past its {self.timeout_s:g} s",
                 "memory": f"tool call ran out of its {self.memory_mb} MB",
                 "output_limit": f"tool call printed more than {self.max_output_bytes} bytes",
                 "killed": f"tool call was killed (status {result.returncode})"}.get(result.status)
        guard = _GUARDS.search(result.stderr)
        if abort is None and guard:
            line = next(x for x in result.stderr.splitlines() if _GUARDS.search(x))
            abort = f"tool call reached outside the sandbox: {line.strip()[-200:]}"
        if abort:
            return Step(done=True, abort=abort, metrics={"tool_calls": 1.0})
        output = result.stdout
        if result.status != "ok":   # the traceback's last line: the exception
            lines = result.stderr.strip().splitlines()
            output += "\n" + (lines[-1] if lines else f"exit status {result.returncode}")
        if len(output) > self.max_output_chars:
            output = output[:self.max_output_chars] + "\n[output truncated]"
        return Step(observation=output.strip() or "(no output)", role=self.role,
                    metrics={"tool_calls": 1.0, "tool_errors": float(result.status != "ok")})
