"""A rollout engine that fails or hangs stops the run in one line, resumable.

vLLM runs inside the trainer's process (`vllm_engine`), so "the engine died" means one of
its calls raised (out of memory, an internal error) or never returned (a deadlock, a stuck
collective under ZeRO-3 lockstep decoding). `GuardedEngine` wraps every engine call:
  - an exception becomes `EngineFailure` (the call, the backend, the cause; the traceback
    goes to `output_dir/engine_error.log`);
  - a call still running after `rollout.timeout_s` calls `on_hang` from a watchdog thread
    (the trainer saves a checkpoint if it can and ends the process: the stuck call cannot
    be interrupted from Python).
Restarting the engine inside the same process is not attempted: after an internal failure
neither its memory nor its state can be trusted; a fresh process resumed from the
checkpoint can (about 20 s of vLLM start-up).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from alignment.errors import TrainingError
from alignment.faults import fault_point

EXIT_ENGINE = 3   # the process's status when the engine died or hung (resumable)


class EngineFailure(TrainingError):
    """An engine call raised. `call`: which ("generate", "sync_weights")."""

    def __init__(self, message: str, call: str):
        super().__init__(message)
        self.call = call


class GuardedEngine:
    """`engine` with its calls watched; every other attribute is the engine's own."""

    GUARDED = ("generate", "sync_weights")

    def __init__(self, engine, *, timeout_s: float, on_hang: Callable[[str, float], None],
                 log_dir: Path | None = None):
        self.engine, self.timeout_s, self.on_hang, self.log_dir = (engine, timeout_s, on_hang,
                                                                    log_dir)

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, *args, **kwargs):
        return self._call("generate", *args, **kwargs)

    def sync_weights(self, *args, **kwargs):
        return self._call("sync_weights", *args, **kwargs)

    def _call(self, name: str, *args, **kwargs):
        timer = None
        if self.timeout_s:
            timer = threading.Timer(self.timeout_s, self.on_hang, args=(name, self.timeout_s))
            timer.daemon = True
            timer.start()
        try:
            if name == "generate":
                fault_point("engine_error")
                fault_point("engine_hang")
            return getattr(self.engine, name)(*args, **kwargs)
        except TrainingError:   # the engine's own verdicts (e.g. stale weights) as they are
            raise
        except Exception as exc:
            where = self._log(name)
            raise EngineFailure(f"the rollout engine ({self.engine.backend}) failed in {name}: "
                                f"{type(exc).__name__}: {_first_line(exc)}{where}",
                                call=name) from exc
        finally:
            if timer is not None:
                timer.cancel()

    def _log(self, name: str) -> str:
        if self.log_dir is None:
            return ""
        try:
            path = self.log_dir / "engine_error.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(f"--- {name}\n{traceback.format_exc()}\n")
            return f" (traceback in {path})"
        except OSError:
            return ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else "(no message)"
