"""One run per output folder.

Two runs writing into one `output_dir` interleave their checkpoints, metrics and `final/`
and neither notices. The first run holds an exclusive `flock` on `output_dir/.run.lock`,
which also records who holds it (pid, host, start time, command); a second run stops with
that in one line (exit status 2). The kernel drops the lock when its process ends however
it ends, so a crashed run never blocks the next one; the next one sees the record it left
and says that it takes the folder over. Where the file system has no `flock` (some network
mounts) the record alone decides: its pid still running, with the same start time, on this
host means the folder is in use.

One process of a run holds the lock (the main one); building a second trainer in the same
process (tests, notebooks) is the same run.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

from alignment.errors import TrainingError

LOCK_NAME = ".run.lock"


class RunLockedError(TrainingError):
    """Another run is using the output folder."""


class RunLock:
    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> str | None:
        """Take the folder (RunLockedError if another live run has it). Returns a note when
        a run that ended without releasing it (killed, crashed) left its record."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        previous = _read(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if previous.get("pid") == os.getpid():
                return None   # this process holds it already
            raise RunLockedError(self._in_use(previous)) from None
        except OSError as exc:   # no flock here: the record decides
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            if previous.get("pid") != os.getpid() and _alive(previous):
                os.close(fd)
                raise RunLockedError(self._in_use(previous)) from None
        self.fd = fd
        _write(fd, {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    "ticks": _start_ticks(os.getpid()), "command": " ".join(sys.argv)[:300]})
        if previous.get("pid") and previous["pid"] != os.getpid():
            return (f"note: the run before this one in {self.path.parent} (pid "
                    f"{previous['pid']}, started {previous.get('started', '?')}) ended "
                    "without releasing it (killed or crashed); taking it over")
        return None

    def release(self) -> None:
        """Give the folder up: the record is emptied (a clean end), then the lock dropped."""
        if self.fd is None:
            return
        import fcntl

        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def _in_use(self, holder: dict) -> str:
        who = (f"pid {holder['pid']} on {holder.get('host', '?')}, started "
               f"{holder.get('started', '?')}" if holder.get("pid") else "another process")
        command = f" ({holder['command']})" if holder.get("command") else ""
        return (f"output_dir {self.path.parent} is in use by another run: {who}{command}. "
                "Wait for it to finish or stop it, or choose another output_dir")


def _read(fd: int) -> dict:
    try:
        data = os.pread(fd, 65536, 0)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}


def _write(fd: int, record: dict) -> None:
    data = json.dumps(record).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), which tells a reused
    pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    pid = holder.get("pid")
    if not pid:
        return False
    if holder.get("host") != socket.gethostname():
        return True   # another machine's process: no way to tell, so assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    ticks = _start_ticks(pid)
    return ticks is None or holder.get("ticks") in (None, ticks)
