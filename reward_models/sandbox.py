"""Run untrusted Python (model-written code) in a contained child process.

`run_python(code)` runs `code` with a fresh interpreter (`python -I -S`: no site-packages, no
environment variables, no current directory on `sys.path`, so neither the project nor its
virtual environment can be imported) and returns a `SandboxResult`. Standard library only.

How the child is contained (strongest available mode first; `sandbox_mode()` tells which one
this machine got, probed once per process):

"namespaces" (running as root with CAP_SYS_ADMIN, the normal case on our machines)
    A small trusted launcher (a separate `python -I -S` started with `start_new_session=True`,
    so the run has its own session and process group) unshares new mount, network, PID, IPC
    and UTS namespaces, then
      * network: the new network namespace has no interfaces (not even an up loopback), so no
        connection of any kind leaves the sandbox;
      * filesystem: every mount is bind-remounted read-only; /tmp and /dev/shm get fresh,
        size-limited tmpfs mounts (the working directory lives in that /tmp, so it and anything
        written to /tmp vanish with the namespace); the project checkout, the virtual
        environment and $HOME are covered by empty read-only tmpfs mounts; the interpreter's
        installation is bind-mounted read-only at its own path when it sits under a directory
        the sandbox user could not enter (e.g. pyenv under /root);
      * processes: it forks the namespace's init (pid 1, root, a reaper), which forks the user
        process; that one sets resource limits, drops to a fresh unprivileged uid/gid drawn at
        random for this run (no supplementary groups, no capabilities, `no_new_privs`), and
        execs the interpreter. RLIMIT_NPROC counts processes per uid and never applies to root;
        the per-run uid makes it an exact cap on this run's processes (a fork bomb gets
        EAGAIN), keeps concurrent runs from sharing that budget or signalling each other, and
        denies signals to every other process (the parent and its launcher are root). When the
        user process exits (or the parent asks the launcher to stop it), pid 1 exits and the
        kernel kills and reaps every process left in the namespace, including ones that called
        setsid() or double-forked: nothing survives a run and nothing is left as a zombie;
      * the parent can see the run's session id as `SandboxResult.pid`.
"uid" (root without the right to unshare, e.g. a default Docker container)
    The same per-run uid, rlimits, read-only-by-permissions filesystem, with the launcher as a
    child subreaper that kills every process of that uid when the run ends, plus a sweep of
    world-writable directories (/tmp, /var/tmp, /dev/shm, /run/lock) for files that uid
    created. No network isolation beyond the prelude below.
"userns" (not root, unprivileged user namespaces allowed)
    New user+network+PID+mount namespaces with the same network, process and (best-effort)
    read-only filesystem treatment as above, but the code runs as the calling user (without
    capabilities): no per-run uid, and a mount the kernel refuses to make read-only stays
    writable for that user. RLIMIT_NPROC is per user namespace and therefore still exact.
"plain" (nothing else works)
    Resource limits, own process group and the prelude only; RLIMIT_NPROC is approximate (the
    user's current process count plus the limit). Not a security boundary.

In every mode a prelude, run before the user code, makes socket creation, DNS and
`create_connection` raise PermissionError and refuses `os.kill`/`os.killpg` of processes
outside the sandbox's own process group or session. It is defence in depth (user code can
undo it, e.g. with ctypes), never the boundary.

Resource limits on the user process (inherited by its children): RLIMIT_AS (memory, per
process: a run can hold at most max_processes * memory_mb; its processes get oom_score_adj
1000, so under memory pressure the kernel kills them before anything else),
RLIMIT_CPU (timeout + 1 s, SIGXCPU reads as "timeout"), RLIMIT_NPROC, RLIMIT_FSIZE,
RLIMIT_NOFILE and RLIMIT_CORE = 0. The wall-clock timeout and the output cap are enforced by
the parent, which reads stdout/stderr in chunks and stops the run as soon as either goes over
`max_output_bytes`. The limits are set by the launcher (a fresh single-threaded process) and
not in a `preexec_fn`, which Python documents as unsafe in threaded programs (scorers run
samples on a thread pool and trainers are heavily threaded).
"""

from __future__ import annotations

import marshal
import os
import random
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass

__all__ = ["SandboxError", "SandboxResult", "STATUSES", "run_python", "sandbox_mode"]

STATUSES = ("ok", "error", "timeout", "memory", "output_limit", "killed")
MODES = ("namespaces", "uid", "userns", "plain")


@dataclass
class SandboxResult:
    ok: bool              # exited with code 0 within every limit
    status: str           # one of STATUSES
    returncode: int | None  # exit code, or -signal when the user process was killed by one
    stdout: str           # each stream truncated to max_output_bytes
    stderr: str
    seconds: float        # wall time of the whole run, set-up included
    pid: int | None = None  # the launcher's pid = session id = process group id of the run
    mode: str = ""        # the isolation mode used (see the module docstring)


class SandboxError(RuntimeError):
    """The sandbox itself could not run the code (not a verdict on the code)."""


# --- the code that runs inside the sandbox, before and around the user's code -------------

_RUNNER = r'''
def _sandbox_prelude():
    # Patch the C module `_socket`, which `socket` builds on: socket.socket, create_connection,
    # getaddrinfo... all go through it, and importing `socket` here would cost ~10 ms a run.
    import os, _socket

    def _no_network(*args, **kwargs):
        raise PermissionError(1, "network access is disabled in the sandbox")

    class _NoSocket(_socket.socket):
        __slots__ = ()

        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None:          # wrapping an existing fd (socketpair) stays possible
                _no_network()
            super().__init__(family, type, proto, fileno)

    _socket.socket = _socket.SocketType = _NoSocket
    for _name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
                  "getnameinfo"):
        setattr(_socket, _name, _no_network)

    _kill, _killpg = os.kill, os.killpg

    def _ours(pid):
        try:
            return (os.getpgid(pid) == os.getpgid(0)) or (os.getsid(pid) == os.getsid(0))
        except OSError:
            return False

    def kill(pid, sig):
        if pid == 0 or (pid > 0 and _ours(pid)) or (pid < -1 and _ours(-pid)):
            return _kill(pid, sig)
        raise PermissionError(1, "os.kill(%d) is outside the sandbox" % pid)

    def killpg(pgid, sig):
        if pgid == 0 or (pgid > 0 and _ours(pgid)):
            return _killpg(pgid, sig)
        raise PermissionError(1, "os.killpg(%d) is outside the sandbox" % pgid)

    os.kill, os.killpg = kill, killpg


def _sandbox_main():
    import sys
    _sandbox_prelude()
    path = "solution.py"
    with open(path, encoding="utf-8") as f:
        source = f.read()
    module = type(sys)("__main__")
    module.__file__ = path
    module.__builtins__ = __builtins__
    sys.modules["__main__"] = module
    sys.argv = [path]
    try:
        code = compile(source, path, "exec")
        exec(code, module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        sys.exit(1)


_sandbox_main()
'''

# --- the launcher: trusted, runs as the caller (root) in a fresh single-threaded process ---

_LAUNCHER = r'''
import ctypes, marshal, os, resource, signal, sys, time

cfg = marshal.loads(bytes.fromhex(sys.argv[1]))    # data only: dicts, lists, str, int, None
CTL = cfg["ctl"]
os.set_inheritable(CTL, False)
MODE = cfg["mode"]
UID, GID = cfg["uid"], cfg["gid"]
WORK = cfg["workdir"]

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]
libc.unshare.argtypes = [ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                       ctypes.c_ulong]


def say(msg):
    try:
        os.write(CTL, (msg.replace("\n", " ") + "\n").encode())
    except OSError:
        pass


def check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


def enc(s):
    return None if s is None else os.fsencode(s)


def mount(src, target, fstype, flags, data=None):
    check(libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), "mount " + target)


def prctl(option, arg):
    check(libc.prctl(option, arg, 0, 0, 0), "prctl %d" % option)


def describe(status):
    if os.WIFSIGNALED(status):
        return "status signal %d" % os.WTERMSIG(status)
    return "status exit %d" % os.waitstatus_to_exitcode(status)


child = None


def on_term(signum, frame):
    if child is None:
        os._exit(128 + signum)
    try:
        os.kill(child, signal.SIGKILL)
    except ProcessLookupError:
        pass


signal.signal(signal.SIGTERM, on_term)
prctl(PR_SET_PDEATHSIG, signal.SIGKILL)     # the scorer died: so do we (and our namespace)


def unescape(path):
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def readonly_everything():
    with open("/proc/self/mountinfo") as f:
        entries = [line.split(" ") for line in f.read().splitlines()]
    keep = (("nosuid", MS_NOSUID), ("nodev", MS_NODEV), ("noexec", MS_NOEXEC),
            ("noatime", MS_NOATIME), ("nodiratime", MS_NODIRATIME),
            ("relatime", MS_RELATIME), ("strictatime", MS_STRICTATIME))
    for parts in entries:
        target, opts = unescape(parts[4]), set(parts[5].split(","))
        if "ro" in opts:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for name, bit in keep:
            if name in opts:
                flags |= bit
        try:
            mount(None, target, None, flags)
        except OSError:
            if target == "/" and MODE == "namespaces":
                raise


def traversable(path):
    cur = ""
    for comp in path.strip("/").split("/"):
        cur += "/" + comp
        try:
            if not os.stat(cur).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def expose(fd, path, ours):
    """Make `path` (opened as `fd` before anything was hidden) reachable, read-only."""
    if traversable(path):
        return
    cur = ""
    for comp in path.strip("/").split("/"):
        cur += "/" + comp
        try:
            st = os.stat(cur)
        except FileNotFoundError:
            break
        if not st.st_mode & 0o001:
            mount("tmpfs", cur, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,nr_inodes=256,mode=755")
            ours.append(cur)
            break
    os.makedirs(path, 0o755, exist_ok=True)
    mount("/proc/self/fd/%d" % fd, path, None, MS_BIND | MS_REC)
    mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def setup_mounts(source):
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    fds = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in cfg["expose"]]
    readonly_everything()
    for target in ("/tmp", "/dev/shm"):
        if os.path.isdir(target):
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV,
                  "size=%d,nr_inodes=4096,mode=1777" % cfg["tmpfs_bytes"])
    ours = []
    for path in cfg["hide"]:
        if os.path.isdir(path) and not os.path.islink(path):
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,nr_inodes=256,mode=755")
            ours.append(path)
    for fd, path in zip(fds, cfg["expose"]):
        expose(fd, path, ours)
        os.close(fd)
    for path in ours:
        try:    # (root-owned 0755 either way: read-only is belt and braces)
            mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        except OSError:
            pass
    os.mkdir(WORK, 0o700)
    write_solution(source)


def write_solution(source):
    os.chown(WORK, UID, GID)
    fd = os.open(os.path.join(WORK, "solution.py"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(source)


def pids_where(field, value):
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/status" % name) as f:
                for line in f:
                    if line.startswith(field):
                        if int(line.split()[1]) == value:
                            found.append(int(name))
                        break
        except (OSError, ValueError, IndexError):
            pass
    return found


def user_process():
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:    # under memory pressure the kernel kills sandboxed code first, not the trainer
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        os.chdir(WORK)
        for name, value in cfg["limits"].items():
            soft, hard = (value, value) if isinstance(value, int) else value
            resource.setrlimit(getattr(resource, name), (soft, hard))
        if MODE == "plain":
            n = len(pids_where("Uid:", os.getuid())) + cfg["max_processes"]
            resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
        elif MODE == "userns":      # per user namespace: exact (+1 for the namespace init)
            n = cfg["max_processes"] + 1
            resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
        else:
            n = cfg["max_processes"]
            resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
            os.setgroups([])
            os.setresgid(GID, GID, GID)
            os.setresuid(UID, UID, UID)
            if os.getuid() != UID or os.geteuid() != UID or os.getgid() != GID:
                raise OSError("could not drop privileges")
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        os.execve(cfg["python"], [cfg["python"], "-I", "-S", "-c", cfg["runner"]], cfg["env"])
    except BaseException as exc:
        say("setup-error user process: %r" % (exc,))
    os._exit(125)


def namespace_init():
    """pid 1 of the new PID namespace: start the user process, reap everything, report."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        try:        # a /proc that shows only this namespace's processes
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError:
            pass
        user = os.fork()
        if user == 0:
            user_process()
        while True:
            pid, status = os.wait()
            if pid == user:
                say(describe(status))
                break
    except BaseException as exc:
        say("setup-error namespace init: %r" % (exc,))
    os._exit(0)     # the kernel now kills and reaps whatever is left in the namespace


def sweep(uid):
    """After the run (subreaper modes): kill every leftover process, reap all children."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        victims = pids_where("Uid:", uid) if uid is not None else pids_where("PPid:", os.getpid())
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            if not victims:
                return
        time.sleep(0.002)


def main():
    global child
    with open(cfg["solution"], "rb") as f:
        source = f.read()
    if MODE in ("namespaces", "userns"):
        flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
        if MODE == "userns":
            flags |= CLONE_NEWUSER
        check(libc.unshare(flags), "unshare")
        if MODE == "userns":
            for name, text in (("setgroups", "deny"), ("uid_map", "%d %d 1" % (UID, UID)),
                               ("gid_map", "%d %d 1" % (GID, GID))):
                with open("/proc/self/" + name, "w") as f:
                    f.write(text)
        setup_mounts(source)
        child = os.fork()
        if child == 0:
            namespace_init()
        os.waitpid(child, 0)
    else:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        if MODE == "uid":
            os.chown(WORK, UID, GID)
        child = os.fork()
        if child == 0:
            user_process()
        while True:
            pid, status = os.wait()
            if pid == child:
                say(describe(status))
                break
        sweep(UID if MODE == "uid" else None)


try:
    main()
except BaseException as exc:
    say("setup-error launcher: %r" % (exc,))
    if child:
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass
    os._exit(125)
os._exit(0)
'''

# --- the parent side ------------------------------------------------------------------------

_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BIN_PATH = "/usr/local/bin:/usr/bin:/bin"
_LAUNCHER_ENV = {"PATH": _BIN_PATH, "LC_ALL": "C.UTF-8"}

_mode_lock = threading.Lock()
_mode: str | None = None
_mode_notes: list[str] = []
_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()
_uid_interpreter: str | None = None


def sandbox_mode() -> tuple[str, list[str]]:
    """The isolation mode runs get here (probed once per process) and why stronger ones failed."""
    global _mode
    with _mode_lock:
        if _mode is None:
            order = ["namespaces", "uid", "plain"] if os.geteuid() == 0 else ["userns", "plain"]
            for mode in order:
                why = None if mode == "plain" else _probe(mode)
                if why is None:
                    _mode = mode
                    break
                _mode_notes.append(f"{mode} unavailable: {why}")
            if _mode != order[0]:
                warnings.warn(f"python sandbox runs in the weaker {_mode!r} mode: "
                              + "; ".join(_mode_notes), RuntimeWarning, stacklevel=2)
        return _mode, list(_mode_notes)


def _probe(mode: str) -> str | None:
    global _uid_interpreter
    candidates = [None]
    if mode == "uid":
        candidates = _world_executable_pythons()
        if not candidates:
            return "no Python interpreter that an unprivileged uid may execute"
    why = None
    for python in candidates:
        try:
            result = _run("print('sandbox-ok')", mode, 20.0, 512, 16, 64_000, 1_000_000,
                          python=python)
        except (OSError, SandboxError) as exc:
            why = str(exc)
            continue
        if result.status == "ok" and result.stdout.strip() == "sandbox-ok":
            if mode == "uid":
                _uid_interpreter = python
            return None
        why = f"probe run gave {result.status}: {result.stderr.strip()[-300:]}"
    return why


def run_python(code: str, *, timeout_s: float = 5.0, memory_mb: int = 512,
               max_processes: int = 16, max_output_bytes: int = 64_000,
               max_file_bytes: int = 1_000_000, mode: str | None = None) -> SandboxResult:
    """Run `code` contained (see the module docstring); never raises for anything the code does.

    `mode` forces an isolation mode (for tests); by default the strongest available one.
    Raises SandboxError only when the sandbox itself fails.
    """
    if mode is None:
        mode = sandbox_mode()[0]
    elif mode not in MODES:
        raise ValueError(f"unknown sandbox mode {mode!r}; expected one of {MODES}")
    python = None
    if mode == "uid":
        if _uid_interpreter is None and _probe("uid") is not None:
            raise SandboxError("the 'uid' sandbox mode is not available here")
        python = _uid_interpreter
    return _run(code, mode, timeout_s, memory_mb, max_processes, max_output_bytes,
                max_file_bytes, python=python)


def _run(code: str, mode: str, timeout_s: float, memory_mb: int, max_processes: int,
         max_output_bytes: int, max_file_bytes: int, python: str | None = None) -> SandboxResult:
    start = time.monotonic()
    if mode in ("namespaces", "uid"):
        uid = _alloc_uid()
        gid = uid
    else:
        uid, gid = os.getuid(), os.getgid()
    host_dir = tempfile.mkdtemp(prefix="sandbox-")
    ctl_r = -1
    proc = None
    try:
        with open(os.path.join(host_dir, "solution.py"), "w", encoding="utf-8") as f:
            f.write(code)
        python = python or os.path.realpath(sys.executable)
        # in the namespace modes the working directory is a fresh one in the private /tmp
        workdir = ("/tmp/" + os.path.basename(host_dir) if mode in ("namespaces", "userns")
                   else host_dir)
        expose, hide = _expose_and_hide(python) if mode in ("namespaces", "userns") else ([], [])
        cpu = max(1, int(timeout_s + 0.999)) + 1
        memory = int(memory_mb) * 1024 * 1024
        cfg = {
            "mode": mode, "uid": uid, "gid": gid, "workdir": workdir,
            "solution": os.path.join(host_dir, "solution.py"),
            "python": python, "runner": _RUNNER, "expose": expose, "hide": hide,
            "tmpfs_bytes": max(16 << 20, 4 * int(max_file_bytes)),
            "max_processes": int(max_processes),
            "limits": {"RLIMIT_AS": memory, "RLIMIT_CPU": [cpu, cpu + 1],
                       "RLIMIT_FSIZE": int(max_file_bytes), "RLIMIT_CORE": 0,
                       "RLIMIT_NOFILE": 256},
            "env": {"PATH": _BIN_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"},
        }
        ctl_r, ctl_w = os.pipe()
        cfg["ctl"] = ctl_w
        launcher = os.path.realpath(sys.executable)
        try:
            proc = subprocess.Popen(
                [launcher, "-I", "-S", "-c", _LAUNCHER, marshal.dumps(cfg).hex()],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(ctl_w,), start_new_session=True, close_fds=True, cwd="/",
                env=_LAUNCHER_ENV)
        finally:
            os.close(ctl_w)
        try:
            stdout, stderr, reason = _collect(proc, start + timeout_s, max_output_bytes)
        finally:
            _stop(proc)
        report = _read_all(ctl_r)
    finally:
        if ctl_r >= 0:
            os.close(ctl_r)
        if mode == "uid":
            _kill_uid(uid)
            _remove_files_of(uid)
        shutil.rmtree(host_dir, ignore_errors=True)
        if mode in ("namespaces", "uid"):
            with _uid_lock:
                _uids_in_use.discard(uid)
    seconds = time.monotonic() - start

    setup_errors = [line for line in report.splitlines() if line.startswith("setup-error")]
    if setup_errors and reason is None:
        raise SandboxError("; ".join(setup_errors) + " | " + stderr.decode(errors="replace")[-500:])
    returncode = None
    for line in report.splitlines():
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
    elif _memory_error(err):
        status = "memory"
    elif returncode < 0:
        status = "killed"
    else:
        status = "error"
    return SandboxResult(status == "ok", status, returncode, out, err, seconds,
                         proc.pid, mode)


def _collect(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[bytes, bytes, str | None]:
    """Read stdout/stderr until both close, the deadline, or one goes over `cap` bytes."""
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
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
                room = cap - len(buf)
                buf += chunk[:max(room, 0)]
                if len(chunk) > room:
                    reason = "output_limit"
                    break
    return bytes(bufs[proc.stdout.fileno()]), bytes(bufs[proc.stderr.fileno()]), reason


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


def _mapped_range(path: str) -> list[tuple[int, int]]:
    try:
        with open(path) as f:
            rows = [line.split() for line in f if line.strip()]
        return [(int(inside), int(inside) + int(count) - 1) for inside, _, count in rows]
    except (OSError, ValueError):
        return [(0, 2**32 - 2)]


def _alloc_uid() -> int:
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


def _kill_uid(uid: int) -> None:
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


def _remove_files_of(uid: int) -> None:
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


def _world_executable_pythons() -> list[str]:
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
