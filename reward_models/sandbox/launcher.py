"""The sandbox launcher: trusted code, run as the caller in a fresh `python -I -S -c` process.

Not imported: `run.py` reads this file and passes its text to `-c`, with the run's
configuration (data only, marshalled) as argv[1]. A fresh single-threaded process is the only
safe place to set resource limits and drop privileges (`preexec_fn` is documented unsafe in
threaded programs, and scorers run samples on a thread pool). What each isolation mode does
is described in `reward_models/sandbox/__init__.py`. Every set-up failure is reported on the
control pipe as a `setup-error` line and ends the run: a sandbox that cannot be built as asked
does not run the code in a weaker one.
"""

import ctypes
import marshal
import os
import resource
import signal
import sys
import time

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
NICE = 10       # sandboxed code yields the CPU to the trainer and the engine

cfg = marshal.loads(bytes.fromhex(sys.argv[1]))    # data only: dicts, lists, str, int, None
CTL = cfg["ctl"]
os.set_inheritable(CTL, False)
MODE = cfg["mode"]
UID, GID = cfg["uid"], cfg["gid"]
WORK = cfg["workdir"]

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]
libc.unshare.argtypes = [ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                       ctypes.c_ulong]
child = None


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


def report_exit_of(user):
    """Reap children (orphans are ours to reap) until the user process exits; report how."""
    while True:
        pid, status = os.wait()
        if pid == user:
            say(describe(status))
            return


def describe(status):
    if os.WIFSIGNALED(status):
        return "status signal %d" % os.WTERMSIG(status)
    return "status exit %d" % os.waitstatus_to_exitcode(status)


def on_term(signum, frame):
    if child is None:
        os._exit(128 + signum)
    try:
        os.kill(child, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --- the filesystem (namespace modes) -----------------------------------------------------

def unescape(path):
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def readonly_everything():
    """Bind-remount every writable mount read-only. A mount that cannot be made read-only is
    an error in 'namespaces' mode (root may do it; failing means something is off) and left
    as it is in 'userns' mode, where the kernel refuses it for mounts it locked (documented)."""
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
            if MODE == "namespaces" and os.path.exists(target):
                raise
            # (a mount point that vanished under us, or userns' locked mounts)


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
    for path in ours:   # root-owned 0755 either way; read-only as well
        mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.mkdir(WORK, 0o700)
    write_solution(source)


def write_solution(source):
    os.chown(WORK, UID, GID)
    fd = os.open(os.path.join(WORK, "solution.py"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(source)


# --- processes ----------------------------------------------------------------------------

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


def feed_stdin(data):
    """The program's stdin: an anonymous in-memory file (no path the program could find)."""
    fd = os.memfd_create("stdin")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    os.dup2(fd, 0)
    os.close(fd)


def user_process(stdin):
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:    # under memory pressure the kernel kills sandboxed code first, not the trainer
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
        if stdin is not None:
            feed_stdin(stdin)
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
        args = [cfg["python"], "-I", "-S", "-c", cfg["runner"], str(cfg["job_fd"]),
                str(cfg["report_fd"])]
        os.execve(cfg["python"], args, cfg["env"])
    except BaseException as exc:
        say("setup-error user process: %r" % (exc,))
    os._exit(125)


def namespace_init(stdin):
    """pid 1 of the new PID namespace: start the user process, reap everything, report."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        # a /proc that shows only this namespace's processes: without it the code would see
        # (and could read the command lines of) every process on the machine
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        user = os.fork()
        if user == 0:
            user_process(stdin)
        close_channels()
        report_exit_of(user)
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


def close_channels():
    """Only the user process holds the job and the report channel (the report ends when it
    and its children are gone)."""
    for fd in (cfg["job_fd"], cfg["report_fd"]):
        try:
            os.close(fd)
        except OSError:
            pass


def join_memory_cgroup():
    """All of the run's processes together stay under memory_mb (the kernel's OOM killer acts
    inside the group): a bound that per-process RLIMIT_AS cannot give for many processes."""
    path = cfg["cgroup"]
    if path:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))


def main():
    global child
    signal.signal(signal.SIGTERM, on_term)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)     # the scorer died: so do we (and our namespace)
    join_memory_cgroup()
    with open(cfg["solution"], "rb") as f:
        source = f.read()
    stdin = None
    if cfg["stdin"] is not None:
        with open(cfg["stdin"], "rb") as f:
            stdin = f.read()
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
            namespace_init(stdin)
        close_channels()
        os.waitpid(child, 0)
    else:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        if MODE == "uid":
            os.chown(WORK, UID, GID)
        child = os.fork()
        if child == 0:
            user_process(stdin)
        close_channels()
        report_exit_of(child)
        sweep(UID if MODE == "uid" else None)


if __name__ == "__main__":
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
