"""Fault injection for the crash and fault tests (`bench/kill_resume.py`,
`tests/test_kill_resume.py`, `tests/test_faults.py`). Without the variables below every
function here does nothing.

`ALIGNMENT_KILL_AT=<point>:<n>` makes the process SIGKILL itself the n-th time it passes
`<point>`. A random external kill rarely lands exactly inside a checkpoint write or between
a step's gradients and its optimizer update; these points make those moments testable on
demand. The kill is a real SIGKILL: nothing is flushed or cleaned up, exactly as when the
machine's OOM killer strikes. Points: "step" (gradients summed, optimizer not yet stepped),
"checkpoint" (model and trainer.pt written into the temporary folder, trainer_state.json
not yet), "sync" (the online loop's update done, the engine not yet given the new weights).

`ALIGNMENT_FAULT=<fault>:<n>` injects a fault the n-th time its point is passed:
  fill_disk     (checkpoint write, before trainer.pt) a file `filler-PID` in output_dir
                takes all the free space left, so the write that follows meets a real
                ENOSPC; on a disk with more than 256 MB free (not a test mount) an ENOSPC
                OSError is raised instead
  engine_error  (rollout engine call) the engine raises, as a vLLM worker that died would
  engine_hang   (rollout engine call) the engine never returns
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

ENV = "ALIGNMENT_KILL_AT"
FAULT_ENV = "ALIGNMENT_FAULT"
_passes: dict[str, int] = {}
FILL_AT_MOST = 256 << 20   # fill_disk fills only a disk with less free space (a test mount)


def _nth_pass(variable: str, name: str) -> bool:
    spec = os.environ.get(variable)
    if not spec:
        return False
    point, _, nth = spec.partition(":")
    if point != name:
        return False
    key = f"{variable}:{name}"
    _passes[key] = _passes.get(key, 0) + 1
    return _passes[key] == int(nth or 1)


def kill_point(name: str) -> None:
    if _nth_pass(ENV, name):
        os.kill(os.getpid(), signal.SIGKILL)


def fault_point(name: str, folder: str | os.PathLike | None = None) -> None:
    """Inject fault `name` here if ALIGNMENT_FAULT asks for it (see the module docstring);
    `folder`: where fill_disk fills."""
    if not _nth_pass(FAULT_ENV, name):
        return
    if name == "fill_disk":
        _fill(Path(folder or "."))
    elif name == "engine_error":
        raise RuntimeError("EngineCore encountered an issue (injected: ALIGNMENT_FAULT="
                           "engine_error)")
    elif name == "engine_hang":
        while True:
            time.sleep(3600)


def _fill(folder: Path) -> None:
    import shutil

    if shutil.disk_usage(folder).free > FILL_AT_MOST:   # never fill a real disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (injected)")
    filler = folder / f"filler-{os.getpid()}"
    chunk = b"\0" * (1 << 20)
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(chunk)
                f.flush()
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return   # the disk is full now (the filler stays: the next write fails for real)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))   # (unreachable on a real disk)
