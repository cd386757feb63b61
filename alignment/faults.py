"""Kill points for the crash tests (`bench/kill_resume.py`, `tests/test_kill_resume.py`).

`ALIGNMENT_KILL_AT=<point>:<n>` makes the process SIGKILL itself the n-th time it passes
`<point>`; without the variable `kill_point` does nothing. A random external kill rarely
lands exactly inside a checkpoint write or between a step's gradients and its optimizer
update; these points make those moments testable on demand. The kill is a real SIGKILL:
nothing is flushed or cleaned up, exactly as when the machine's OOM killer strikes.

Points: "step" (gradients summed, optimizer not yet stepped), "checkpoint" (model and
trainer.pt written into the temporary folder, trainer_state.json not yet), "sync" (the
online loop's update done, the engine not yet given the new weights).
"""

from __future__ import annotations

import os
import signal

ENV = "ALIGNMENT_KILL_AT"
_passes: dict[str, int] = {}


def kill_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
