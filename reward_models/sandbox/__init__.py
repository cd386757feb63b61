"""Run untrusted Python (model-written code) in a contained child process.

`run_python(code)` runs `code` with a fresh interpreter (`python -I -S`: no site-packages, no
environment variables, no current directory on `sys.path`, so neither the project nor its
virtual environment can be imported) and returns a `SandboxResult`. Standard library only.

The parts:
  modes.py     which isolation this machine allows; failing closed when it is too weak
  run.py       the parent side: start, feed, collect, clean up
  launcher.py  trusted code in a fresh process: namespaces, mounts, limits, privilege drop
  runner.py    the code around the untrusted code, inside: the secret, the audit hook, tests
  uids.py      per-run uids and the clean-up that goes with them

Isolation modes, strongest first (`sandbox_mode()` tells which one this machine has; a run
asks for a minimum with `isolation=` and gets an IsolationError, not a weaker mode, when the
machine cannot give it):

"namespaces" (root with CAP_SYS_ADMIN, the normal case on our machines)
    The launcher (started with its own session and process group) unshares new mount,
    network, PID, IPC and UTS namespaces, then
      * network: the new network namespace has no interfaces (not even loopback);
      * filesystem: every mount is bind-remounted read-only (a failure is an error); /tmp and
        /dev/shm get fresh size-limited tmpfs mounts (the working directory lives there and
        vanishes with the namespace); the project checkout, the virtual environment and $HOME
        are covered by empty read-only tmpfs mounts; the interpreter's installation is
        bind-mounted read-only where the sandbox user could not otherwise reach it; /proc is
        remounted to show only the namespace's processes (a failure is an error);
      * processes: the namespace's init (pid 1, a reaper) forks the user process, which sets
        resource limits and a lower CPU priority (nice 10), drops to a fresh unprivileged
        uid/gid drawn at random for this run (no groups, no capabilities, `no_new_privs`) and
        execs the interpreter. RLIMIT_NPROC counts processes per uid, so the per-run uid makes
        it an exact cap on this run's processes (a fork bomb gets EAGAIN) and denies signals
        to every other process. When the user process exits, pid 1 exits and the kernel kills
        every process left in the namespace, including ones that called setsid().
"userns" (not root, unprivileged user namespaces allowed)
    New user+network+PID+mount namespaces, the same network, process and read-only treatment
    (the kernel may refuse to remount mounts it locked: those stay as they are), but the code
    runs as the calling user: no per-run uid. RLIMIT_NPROC is per user namespace: exact.
"uid" (root without the right to unshare, e.g. a default Docker container)
    The per-run uid, limits and permission-based read-only filesystem, the launcher as a child
    subreaper that kills every process of that uid when the run ends, plus a sweep of the
    world-writable directories for files that uid created. No network namespace.
"plain"
    Resource limits and the in-process guards only. Not a security boundary.

Memory: RLIMIT_AS per process (memory_mb), at most max_processes processes, and, where the
machine lets root create a memory cgroup, one cgroup per run that holds all of its processes
to memory_mb together (so concurrent workers use at most workers × memory_mb); sandboxed
processes get oom_score_adj 1000, so the kernel kills them before the trainer. RLIMIT_CPU is
timeout + 1 s (SIGXCPU reads as "timeout"); RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE = 0. The
wall-clock timeout and the output cap are enforced by the parent.

In every mode the runner (runner.py) guards the process from the inside before the code runs:
no sockets, no os.kill of processes outside the run, and an audit hook that keeps the per-run
secret (the proof that the code and its tests returned) out of the code's reach.
"""

from __future__ import annotations

from reward_models.sandbox import modes
from reward_models.sandbox.errors import STATUSES, IsolationError, SandboxError, SandboxResult
from reward_models.sandbox.modes import MODES, sandbox_mode
from reward_models.sandbox.run import run_in_mode

__all__ = ["IsolationError", "MODES", "SandboxError", "SandboxResult", "STATUSES", "run_python",
           "sandbox_mode"]


def run_python(code: str, *, timeout_s: float = 5.0, memory_mb: int = 512,
               max_processes: int = 16, max_output_bytes: int = 64_000,
               max_file_bytes: int = 1_000_000, mode: str | None = None,
               isolation: str | None = None, tests: str | None = None,
               call: tuple[str, list] | None = None,
               stdin: str | bytes | None = None) -> SandboxResult:
    """Run `code` contained; never raises for anything the code does.

    isolation: the weakest mode acceptable (default: the strongest this kind of machine can
        give, "namespaces" for root, "userns" otherwise); IsolationError when unavailable.
    mode: force one mode (tests of the weaker modes); must be available here.
    tests: Python asserts run after the code (result.completed: they all returned).
    call: (fn_name, cases): call fn_name(*case) for each case (result.reports: one JSON line
        per case with "out" or "error").
    stdin: the program's standard input.
    Raises SandboxError only when the sandbox itself fails (IsolationError when it cannot
    give the isolation asked for).
    """
    if mode is None:
        mode = modes.require(isolation)
    elif mode not in MODES:
        raise ValueError(f"unknown sandbox mode {mode!r}; expected one of {MODES}")
    python = modes.uid_interpreter() if mode == "uid" else None
    job: dict = {"kind": "script"}
    if tests is not None:
        job["tests"] = tests
    if call is not None:
        job.update(kind="call", fn_name=call[0], cases=[list(args) for args in call[1]])
    return run_in_mode(code, mode, timeout_s=timeout_s, memory_mb=memory_mb,
                       max_processes=max_processes, max_output_bytes=max_output_bytes,
                       max_file_bytes=max_file_bytes, python=python, job=job, stdin=stdin)
