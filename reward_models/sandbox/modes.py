"""Which isolation this machine allows (probed once per process), and failing closed.

Modes from strongest to weakest: namespaces > userns > uid > plain (what each does: the
package docstring). A caller asks for a minimum (`isolation=`, default "namespaces" for root
and "userns" otherwise: the strongest a machine of that kind can give); when the machine
cannot give it, `require` raises IsolationError saying what failed and how to allow the
weaker mode explicitly. Nothing runs in a weaker mode unless it was asked for.
"""

from __future__ import annotations

import os
import threading

from reward_models.sandbox import uids
from reward_models.sandbox.errors import IsolationError, SandboxError

MODES = ("namespaces", "userns", "uid", "plain")       # strongest first
WHAT = {
    "namespaces": "new mount, network, PID, IPC and UTS namespaces and a fresh uid per run "
                  "(needs root with CAP_SYS_ADMIN)",
    "userns": "unprivileged user namespaces (network and PID isolation, no per-run uid)",
    "uid": "a fresh unprivileged uid per run, no network namespace (needs root)",
    "plain": "resource limits only: not a security boundary",
}

_lock = threading.Lock()
_mode: str | None = None
_notes: list[str] = []
_uid_interpreter: str | None = None


def sandbox_mode() -> tuple[str, list[str]]:
    """The strongest mode this machine allows and why each stronger one failed."""
    global _mode
    with _lock:
        if _mode is None:
            order = ["namespaces", "uid", "plain"] if os.geteuid() == 0 else ["userns", "plain"]
            for mode in order:
                why = None if mode == "plain" else probe(mode)
                if why is None:
                    _mode = mode
                    break
                _notes.append(f"{mode} unavailable: {why}")
        return _mode, list(_notes)


def default_isolation() -> str:
    return "namespaces" if os.geteuid() == 0 else "userns"


def require(isolation: str | None) -> str:
    """The mode to run in: the strongest available, if it is at least `isolation`."""
    wanted = isolation or default_isolation()
    if wanted not in MODES:
        raise ValueError(f"sandbox isolation must be one of {', '.join(MODES)}, got {wanted!r}")
    mode, notes = sandbox_mode()
    if MODES.index(mode) > MODES.index(wanted):
        weaker = ", ".join(MODES[MODES.index(wanted) + 1:MODES.index(mode) + 1])
        raise IsolationError(
            f"the sandbox needs isolation {wanted!r} ({WHAT[wanted]}) but this machine gives "
            f"only {mode!r} ({WHAT[mode]}): " + "; ".join(notes)
            + f". To accept a weaker mode, say so explicitly: the scorer option "
              f"`isolation: {mode}` (recipe: rewards: [{{name: ..., isolation: {mode}}}]; "
              f"CLI: --set isolation={mode}); weaker modes here: {weaker}")
    return mode


def uid_interpreter() -> str | None:
    """An interpreter an unprivileged uid may execute ('uid' mode), once probed."""
    if _uid_interpreter is None and probe("uid") is not None:
        raise SandboxError("the 'uid' sandbox mode is not available here")
    return _uid_interpreter


def probe(mode: str) -> str | None:
    """None when a trivial program runs correctly in `mode`, else why not."""
    global _uid_interpreter
    from reward_models.sandbox.run import run_in_mode
    candidates: list[str | None] = [None]
    if mode == "uid":
        candidates = list(uids.world_executable_pythons())
        if not candidates:
            return "no Python interpreter that an unprivileged uid may execute"
    why = None
    for python in candidates:
        try:
            result = run_in_mode("print('sandbox-ok')", mode, timeout_s=20.0, memory_mb=512,
                                 max_processes=16, max_output_bytes=64_000,
                                 max_file_bytes=1_000_000, python=python)
        except (OSError, SandboxError) as exc:
            why = str(exc)
            continue
        if result.status == "ok" and result.completed and result.stdout.strip() == "sandbox-ok":
            if mode == "uid":
                _uid_interpreter = python
            return None
        why = f"probe run gave {result.status}: {result.stderr.strip()[-300:]}"
    return why
