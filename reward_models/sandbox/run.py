"""The parent side of a sandbox run: start the launcher, feed the job, collect, clean up."""

from __future__ import annotations

import marshal
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from reward_models.sandbox import uids
from reward_models.sandbox.errors import SandboxError, SandboxResult

_HERE = Path(__file__).resolve().parent
LAUNCHER = (_HERE / "launcher.py").read_text()
RUNNER = (_HERE / "runner.py").read_text()
_PROJECT_ROOT = str(_HERE.parent.parent)
_BIN_PATH = "/usr/local/bin:/usr/bin:/bin"
_LAUNCHER_ENV = {"PATH": _BIN_PATH, "LC_ALL": "C.UTF-8"}
_CGROUP_V1 = "/sys/fs/cgroup/memory"
_REPORT_CAP = 16 << 20


def run_in_mode(code: str, mode: str, *, timeout_s: float, memory_mb: int, max_processes: int,
                max_output_bytes: int, max_file_bytes: int, python: str | None = None,
                job: dict | None = None, stdin: str | bytes | None = None) -> SandboxResult:
    """One run of `code` in `mode` (see the package docstring). `job` is what the runner
    does with it (default: run it as a script); `stdin` the program's standard input."""
    start = time.monotonic()
    job = {"kind": "script", **(job or {}), "secret": secrets.token_hex(16)}
    if mode in ("namespaces", "uid"):
        uid = uids.alloc_uid()
        gid = uid
    else:
        uid, gid = os.getuid(), os.getgid()
    host_dir = tempfile.mkdtemp(prefix="sandbox-")
    fds: list[int] = []
    proc = None
    cgroup = None
    try:
        with open(os.path.join(host_dir, "solution.py"), "w", encoding="utf-8",
                  errors="surrogateescape") as f:
            f.write(code)
        stdin_path = None
        if stdin is not None:
            stdin_path = os.path.join(host_dir, "stdin")
            with open(stdin_path, "wb") as f:
                f.write(stdin.encode() if isinstance(stdin, str) else stdin)
        python = python or os.path.realpath(sys.executable)
        # in the namespace modes the working directory is a fresh one in the private /tmp
        workdir = ("/tmp/" + os.path.basename(host_dir) if mode in ("namespaces", "userns")
                   else host_dir)
        expose, hide = _expose_and_hide(python) if mode in ("namespaces", "userns") else ([], [])
        cpu = max(1, int(timeout_s + 0.999)) + 1
        memory = int(memory_mb) * 1024 * 1024
        cgroup = _memory_cgroup(memory)
        job_fd = _memfd(marshal.dumps(job))
        fds.append(job_fd)
        ctl_r, ctl_w = os.pipe()
        report_r, report_w = os.pipe()
        fds += [ctl_r, report_r]
        cfg = {
            "mode": mode, "uid": uid, "gid": gid, "workdir": workdir,
            "solution": os.path.join(host_dir, "solution.py"), "stdin": stdin_path,
            "python": python, "runner": RUNNER, "expose": expose, "hide": hide,
            "tmpfs_bytes": max(16 << 20, 4 * int(max_file_bytes)),
            "max_processes": int(max_processes), "cgroup": cgroup,
            "limits": {"RLIMIT_AS": memory, "RLIMIT_CPU": [cpu, cpu + 1],
                       "RLIMIT_FSIZE": int(max_file_bytes), "RLIMIT_CORE": 0,
                       "RLIMIT_NOFILE": 256},
            "env": {"PATH": _BIN_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"},
            "ctl": ctl_w, "job_fd": job_fd, "report_fd": report_w,
        }
        launcher = os.path.realpath(sys.executable)
        try:
            proc = subprocess.Popen(
                [launcher, "-I", "-S", "-c", LAUNCHER, marshal.dumps(cfg).hex()],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(ctl_w, job_fd, report_w), start_new_session=True, close_fds=True,
                cwd="/", env=_LAUNCHER_ENV)
        finally:
            os.close(ctl_w)
            os.close(report_w)
        try:
            stdout, stderr, report, reason = _collect(proc, start + timeout_s, max_output_bytes,
                                                      report_r)
        finally:
            _stop(proc)
        control = _read_all(ctl_r)
        report += _read_all(report_r).encode()
    finally:
        for fd in fds:
            os.close(fd)
        if mode == "uid":
            uids.kill_uid(uid)
            uids.remove_files_of(uid)
        shutil.rmtree(host_dir, ignore_errors=True)
        if mode in ("namespaces", "uid"):
            uids.release_uid(uid)
        out_of_memory = _remove_cgroup(cgroup)
    seconds = time.monotonic() - start

    setup_errors = [line for line in control.splitlines() if line.startswith("setup-error")]
    if setup_errors and reason is None:
        raise SandboxError("; ".join(setup_errors) + " | " + stderr.decode(errors="replace")[-500:])
    returncode = None
    for line in control.splitlines():
        if line.startswith("status exit "):
            returncode = int(line.split()[2])
        elif line.startswith("status signal "):
            returncode = -int(line.split()[2])
    out = stdout.decode("utf-8", errors="replace")
    err = stderr.decode("utf-8", errors="replace")
    if reason is not None:
        status = reason
        returncode = returncode if returncode is not None else -signal.SIGKILL
    elif returncode is None:
        status, returncode = "killed", proc.returncode
    elif returncode == 0:
        status = "ok"
    elif returncode == -signal.SIGXCPU:
        status = "timeout"
    elif _memory_error(err) or (out_of_memory and returncode < 0):
        status = "memory"
    elif returncode < 0:
        status = "killed"
    else:
        status = "error"
    completed, reports = _parse_report(report, job["secret"])
    return SandboxResult(status == "ok", status, returncode, out, err, seconds,
                         proc.pid, mode, completed, reports)


def _parse_report(data: bytes, secret: str) -> tuple[bool, list[str]]:
    """Lines that start with the run's secret; the rest (anything else written to the
    channel) is ignored."""
    prefix = secret + " "
    lines = [line[len(prefix):] for line in data.decode("utf-8", errors="replace").splitlines()
             if line.startswith(prefix)]
    return "done" in lines, [line for line in lines if line != "done"]


def _memfd(data: bytes) -> int:
    """The job, in an anonymous in-memory file (no path, nothing left behind)."""
    fd = os.memfd_create("sandbox-job", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _memory_cgroup(limit: int) -> str | None:
    """A memory cgroup (v1) for one run, holding all of its processes to `limit` bytes together;
    None where this machine does not let us make one (the per-process limits still hold)."""
    if os.geteuid() != 0 or not os.access(_CGROUP_V1, os.W_OK):
        return None
    path = os.path.join(_CGROUP_V1, "alignment-sandbox-" + uuid.uuid4().hex[:16])
    try:
        os.mkdir(path)
        Path(path, "memory.limit_in_bytes").write_text(str(limit))
        return path
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        return None


def _memory_cgroup_possible() -> bool:
    path = _memory_cgroup(64 << 20)
    _remove_cgroup(path)
    return path is not None


def _remove_cgroup(path: str | None) -> bool:
    """Remove the run's cgroup; whether the kernel had to kill something in it for memory."""
    if path is None:
        return False
    out_of_memory = False
    try:
        control = Path(path, "memory.oom_control").read_text()
        out_of_memory = any(line.split()[-1] != "0" for line in control.splitlines()
                            if line.startswith("oom_kill "))
        out_of_memory = out_of_memory or Path(path, "memory.failcnt").read_text().strip() != "0"
    except OSError:
        pass
    deadline = time.monotonic() + 5.0
    while True:
        try:
            os.rmdir(path)
            break
        except FileNotFoundError:
            break
        except OSError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
    return out_of_memory


def _collect(proc: subprocess.Popen, deadline: float, cap: int,
             report_fd: int) -> tuple[bytes, bytes, bytes, str | None]:
    """Read stdout, stderr and the report channel until all close, the deadline, or an
    output stream goes over `cap` bytes."""
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray(),
            report_fd: bytearray()}
    reason = None
    exited_at = None
    with selectors.DefaultSelector() as sel:
        for fd in bufs:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map() and reason is None:
            now = time.monotonic()
            if now >= deadline:
                reason = "timeout"
                break
            if exited_at is None and _exited(proc.pid):
                exited_at = now
            elif exited_at is not None and now - exited_at > 0.5:
                break       # the launcher is gone but something still holds the pipes
            for key, _ in sel.select(min(deadline - now, 0.1)):
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                buf = bufs[key.fd]
                room = (_REPORT_CAP if key.fd == report_fd else cap) - len(buf)
                buf += chunk[:max(room, 0)]
                if len(chunk) > room:
                    reason = "output_limit"
                    break
    return (bytes(bufs[proc.stdout.fileno()]), bytes(bufs[proc.stderr.fileno()]),
            bytes(bufs[report_fd]), reason)


def _exited(pid: int) -> bool:
    """Whether the launcher has exited, without reaping it (its pid keeps the group reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_exit(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not _exited(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True


def _stop(proc: subprocess.Popen) -> None:
    """Make sure the run is over: ask the launcher to stop it, then kill the group, reap."""
    if not _exited(proc.pid):
        try:
            os.kill(proc.pid, signal.SIGTERM)      # the launcher kills its child (the namespace)
        except ProcessLookupError:
            pass
        if not _wait_exit(proc.pid, 3.0):
            _killpg(proc.pid)
            _wait_exit(proc.pid, 5.0)
    _killpg(proc.pid)     # stragglers of the group; the unreaped launcher keeps the id reserved
    proc.wait()
    for f in (proc.stdout, proc.stderr):
        f.close()


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_all(fd: int) -> str:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _memory_error(stderr: str) -> bool:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return (last.startswith("MemoryError") or "Cannot allocate memory" in last
            or "[Errno 12]" in last)


def _expose_and_hide(python: str) -> tuple[list[str], list[str]]:
    """Directories to keep reachable (the interpreter) and to cover (project, venv, $HOME)."""
    prefix = os.path.realpath(sys.base_prefix)
    expose = [prefix]
    if not python.startswith(prefix + os.sep):
        expose.append(os.path.dirname(os.path.dirname(python)))
    hide = []
    for path in (_PROJECT_ROOT, os.path.realpath(sys.prefix), os.environ.get("HOME")):
        if path and os.path.isabs(path):
            path = os.path.realpath(path)
            if path not in ("/", "/tmp", "/usr", "/dev", "/proc", prefix):
                hide.append(path)
    # a path inside another hidden one is hidden already
    hide = [p for p in dict.fromkeys(hide)
            if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in hide)]
    return expose, hide


