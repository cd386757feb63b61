"""Per-run uids ('namespaces' and 'uid' modes) and the clean-up that goes with them."""

from __future__ import annotations

import os
import random
import shutil
import signal
import stat
import sys
import threading
import time

from reward_models.sandbox.errors import SandboxError

_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()


def _mapped_range(path: str) -> list[tuple[int, int]]:
    try:
        with open(path) as f:
            rows = [line.split() for line in f if line.strip()]
        return [(int(inside), int(inside) + int(count) - 1) for inside, _, count in rows]
    except (OSError, ValueError):
        return [(0, 2**32 - 2)]


def alloc_uid() -> int:
    """A fresh uid (= gid) for one run: unused by any account, any other run, mapped here."""
    lo, hi = 1_000_000_000, 2_000_000_000
    ranges = []
    for a, b in _mapped_range("/proc/self/uid_map"):
        for c, d in _mapped_range("/proc/self/gid_map"):
            ranges.append((max(a, c, 100_000), min(b, d, 2**31 - 2)))
    ranges = [(a, b) for a, b in ranges if b - a > 1000]
    if ranges:
        lo, hi = max(ranges, key=lambda r: r[1] - r[0])
        if lo <= 1_000_000_000 <= hi - 1000:
            lo = 1_000_000_000
    else:
        raise SandboxError("no unused uid range is mapped in this user namespace")
    with _uid_lock:
        while True:
            uid = random.randint(lo, hi)
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def _pids_of_uid(uid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            found.append(int(name))
                        break
        except (OSError, ValueError, IndexError):
            pass
    return found


def kill_uid(uid: int) -> None:
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        pids = _pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.005)


def remove_files_of(uid: int) -> None:
    """'uid' mode: delete what the run's uid created in the world-writable directories."""
    todo = [(d, 0) for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")]
    while todo:
        directory, depth = todo.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_uid == uid:
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    try:
                        os.unlink(entry.path)
                    except OSError:
                        pass
            elif stat.S_ISDIR(st.st_mode) and st.st_mode & 0o002 and depth < 4:
                todo.append((entry.path, depth + 1))


def world_executable_pythons() -> list[str]:
    """Interpreters an unprivileged uid can run ('uid' mode cannot bind-mount one into view)."""
    candidates = [os.path.realpath(sys.executable),
                  os.path.realpath(getattr(sys, "_base_executable", sys.executable))]
    for name in (f"python{sys.version_info[0]}.{sys.version_info[1]}", "python3"):
        for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
            candidates.append(os.path.realpath(os.path.join(directory, name)))
    found = []
    for path in candidates:
        if path in found or not os.path.isfile(path):
            continue
        ok = all(os.stat(parent).st_mode & 0o001 for parent in _parents(path))
        if ok and os.stat(path).st_mode & 0o005 == 0o005:
            found.append(path)
    return found


def _parents(path: str) -> list[str]:
    parents, cur = [], os.path.dirname(path)
    while True:
        parents.append(cur)
        if cur == "/":
            return parents
        cur = os.path.dirname(cur)


def release_uid(uid: int) -> None:
    with _uid_lock:
        _uids_in_use.discard(uid)
