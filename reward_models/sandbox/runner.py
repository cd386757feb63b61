"""What runs inside the sandbox, around the untrusted code: `python -I -S -c <this file>`.

`run.py` passes this file's text to `-c` with two file descriptors as arguments: the job (a
marshalled dict from the parent: a per-run secret, and the tests or the call cases) and the
report channel back to the parent. The parent believes "the tests ran to the end" only from a
report line that starts with the secret, so the runner keeps the secret where the code
cannot reach it. Before any untrusted code runs, the runner

  * reads the whole job and closes its descriptor (nothing left to read there);
  * makes the process non-dumpable: no other process of this uid may read its memory through
    /proc or ptrace;
  * installs an audit hook (PEP 578: it cannot be removed) that refuses what would reach the
    runner's frames or memory from Python: `sys._getframe` (as ValueError, which
    `collections.namedtuple`, `enum` and `typing` expect and handle), traceback/generator
    frames, tracing and profiling, garbage-collector walks, ctypes, new audit hooks, crafted
    code objects, reading /proc; signal handlers (the one way the interpreter hands Python
    code a frame without an audit event) are installed with the frame argument removed;
  * keeps the secret only in that hook's closure, and writes a report line only when the
    request comes from the runner's own `_main` frame, after the tests returned.

So exiting early in any way (sys.exit, os._exit, SystemExit, atexit, an excepthook, a thread,
a signal) leaves no report, and the parent scores 0.

Jobs:
  script  run solution.py as __main__; with `tests`, they are parsed on their own (code cannot
          swallow them, e.g. in an unterminated string), run after it as the body of a
          function with the built-ins as they were before the code ran, and their
          comparisons (==, !=, <, in, ...) take plain data or same-typed operands only: an
          object "equal to everything" compares unequal. Report `done`.
  call    run solution.py, then call `fn_name` (or `Solution().fn_name`) on each case's
          arguments; each return value is converted to plain JSON data here and compared
          with the expected output in the parent (which never sends it): one report per case.

This module is also imported by the parent (`wrap_tests`, to check a row's tests before a run);
importing it has no side effects.
"""

import sys

TESTS_FUNCTION = "__sandbox_tests__"
COMPARE = "__sandbox_compare__"
BLOCKED_EVENTS = frozenset({
    "sys._current_frames", "sys._current_exceptions", "sys.settrace", "sys.setprofile",
    "sys.addaudithook", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.addressof", "ctypes.cdata", "ctypes.string_at",
    "ctypes.wstring_at", "ctypes.call_function", "ctypes.PyObj_FromPtr", "code.__new__",
})
FRAME_ATTRS = frozenset({"tb_frame", "f_back", "gi_frame", "cr_frame", "ag_frame", "f_code"})
BLOCKED_IMPORTS = frozenset({"_signal", "ctypes", "_ctypes", "_testcapi", "_testinternalcapi",
                             "_xxsubinterpreters", "_xxinterpchannels", "_testbuffer"})
PROC_ALLOWED = frozenset({"/proc/cpuinfo", "/proc/meminfo"})


def wrap_tests(source):
    """The tests as `def __sandbox_tests__(__sandbox_compare__): <tests>` with every single
    comparison routed through the strict one (raises SyntaxError for tests that do not parse)."""
    import ast

    names = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
             ast.GtE: ">=", ast.In: "in", ast.NotIn: "not in"}

    class Strict(ast.NodeTransformer):
        def visit_Compare(self, node):
            self.generic_visit(node)
            if len(node.ops) != 1 or type(node.ops[0]) not in names:
                return node     # chained or `is`: evaluated natively
            call = ast.Call(func=ast.Name(id=COMPARE, ctx=ast.Load()),
                            args=[ast.Constant(names[type(node.ops[0])]), node.left,
                                  node.comparators[0]], keywords=[])
            return ast.copy_location(call, node)

    tree = Strict().visit(ast.parse(source, "tests.py"))
    params = ast.arguments(posonlyargs=[], args=[ast.arg(arg=COMPARE)], vararg=None,
                           kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])
    function = ast.FunctionDef(name=TESTS_FUNCTION, args=params, body=tree.body or [ast.Pass()],
                               decorator_list=[], returns=None, type_comment=None, lineno=1,
                               col_offset=0)
    module = ast.Module(body=[function], type_ignores=[])
    return ast.fix_missing_locations(module)


def tests_code(source):
    """The code object of the tests function (compiled from `wrap_tests`)."""
    module = compile(wrap_tests(source), "tests.py", "exec", dont_inherit=True)
    return next(c for c in module.co_consts if getattr(c, "co_name", None) == TESTS_FUNCTION)


def make_compare():
    """compare(op, a, b): native on plain data (exact built-in types, recursively) and on two
    objects of the same type; data converted with `plain` when both sides convert; any other
    mix (an object of the code's making against plain data) is unequal and unordered."""
    import builtins as b
    import operator
    type, all, any, isinstance = b.type, b.all, b.any, b.isinstance
    ops = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
           ">": operator.gt, ">=": operator.ge}
    plain = make_plain()
    scalars = (int, float, complex, bool, str, bytes, type(None))
    sequences, sets = (list, tuple), (set, frozenset)

    def exact(x, depth=0):
        t = type(x)
        if t in scalars:
            return True
        if depth > 100:
            return False
        if t in sequences:
            return all(exact(v, depth + 1) for v in x)
        if t is dict:
            return all(type(k) in scalars and exact(v, depth + 1) for k, v in x.items())
        if t in sets:
            return all(type(v) in scalars for v in x)
        return False

    def compare(op, a, b):
        if op in ("in", "not in"):
            if exact(a) and exact(b):
                found = a in b
            elif type(b) in sequences or type(b) in sets:
                found = any(compare("==", a, v) for v in b)
            elif type(b) is dict:
                found = any(compare("==", a, k) for k in b)
            else:
                found = False
            return found if op == "in" else not found
        if exact(a) and exact(b):
            return ops[op](a, b)
        if op in ("==", "!="):
            try:
                return ops[op](plain(a), plain(b))
            except TypeError:
                pass
        if type(a) is type(b) and not isinstance(a, (int, str)):   # both the code's own kind
            return ops[op](a, b)
        return op == "!="

    return compare


def make_plain():
    """plain(x): x as plain JSON-like data (exact built-in scalars, lists, str-keyed dicts;
    tuples, namedtuples and sets become lists) or TypeError."""
    import builtins as b
    type, getattr, hasattr, isinstance = b.type, b.getattr, b.hasattr, b.isinstance
    sorted, repr, all = b.sorted, b.repr, b.all
    scalars = (int, float, bool, str, type(None))
    tuple_iter, list_iter, dict_items = tuple.__iter__, list.__iter__, dict.items
    tuple_methods = ("__eq__", "__ne__", "__iter__", "__len__", "__getitem__")

    def is_namedtuple(x):
        t = type(x)
        return (isinstance(x, tuple) and hasattr(t, "_fields")
                and all(getattr(t, m) is getattr(tuple, m) for m in tuple_methods))

    def plain(x, depth=0):
        t = type(x)
        if t in scalars:
            return x
        if depth > 100:
            raise TypeError("data nested deeper than 100 levels")
        if t is tuple or is_namedtuple(x):
            return [plain(v, depth + 1) for v in tuple_iter(x)]
        if t is list:
            return [plain(v, depth + 1) for v in list_iter(x)]
        if t is dict:
            out = {}
            for k, v in dict_items(x):
                if type(k) not in scalars:
                    raise TypeError("a dict key of type %s is not plain data" % type(k).__name__)
                out[k] = plain(v, depth + 1)
            return out
        if t in (set, frozenset):
            return sorted((plain(v, depth + 1) for v in x), key=repr)
        raise TypeError("%s is not plain data" % t.__name__)

    return plain


# --- set-up, before any untrusted code ----------------------------------------------------

def _read_job(fd):
    import marshal
    import os
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return marshal.loads(b"".join(chunks))


def _undumpable():
    import ctypes
    pr_set_dumpable = 4
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_DUMPABLE, 0) failed")
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]       # importing it again is a (refused) import


def _no_network():
    # Patch the C module `_socket`, which `socket` builds on (defence in depth: the network
    # namespace has no interfaces; in the weaker modes this is what stops casual use).
    import _socket

    def refuse(*args, **kwargs):
        raise PermissionError(1, "network access is disabled in the sandbox")

    class NoSocket(_socket.socket):
        __slots__ = ()

        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None:          # wrapping an existing fd (socketpair) stays possible
                refuse()
            super().__init__(family, type, proto, fileno)

    _socket.socket = _socket.SocketType = NoSocket
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
                 "getnameinfo"):
        setattr(_socket, name, refuse)


def _no_foreign_kill():
    import os
    kill_, killpg_ = os.kill, os.killpg

    launcher = os.getppid()     # in the session too, but the run's keeper, not the code's

    def ours(pid):
        if pid == launcher:
            return False
        try:
            return (os.getpgid(pid) == os.getpgid(0)) or (os.getsid(pid) == os.getsid(0))
        except OSError:
            return False

    def kill(pid, sig):
        if pid == 0 or (pid > 0 and ours(pid)) or (pid < -1 and ours(-pid)):
            return kill_(pid, sig)
        raise PermissionError(1, "os.kill(%d) is outside the sandbox" % pid)

    def killpg(pgid, sig):
        if pgid == 0 or (pgid > 0 and ours(pgid)):
            return killpg_(pgid, sig)
        raise PermissionError(1, "os.killpg(%d) is outside the sandbox" % pgid)

    os.kill, os.killpg = kill, killpg


def _bare_function(source, **names):
    """A function defined in a globals dict of its own (no built-ins, only `names`): whoever
    holds it reaches nothing of the runner through __globals__ or __closure__."""
    scope = {"__builtins__": {}, **names}
    exec(source, scope)
    return scope["f"]


def _install_guard(secret, report_fd, main_code):
    import _imp
    import _signal
    import _thread
    import os
    realpath, write, getframe = os.path.realpath, os.write, sys._getframe
    real_signal, real_create_builtin = _signal.signal, _imp.create_builtin
    blocked, frame_attrs, blocked_imports = BLOCKED_EVENTS, FRAME_ATTRS, BLOCKED_IMPORTS
    local = _thread._local()      # per thread: "this event comes from the guard itself"
    strip_frame = _bare_function("def f(handler):\n"
                                 "    def without_frame(signum, frame):\n"
                                 "        return handler(signum, None)\n"
                                 "    return without_frame\n")

    def refuse(what):
        raise PermissionError(1, "%s is disabled in the sandbox" % what)

    def caller_is_main():
        local.busy = True
        try:
            return getframe(2).f_code is main_code
        finally:
            local.busy = False

    def guard(event, args):
        if getattr(local, "busy", False):
            return
        if event in blocked:
            refuse(event)
        elif event == "sys._getframe":
            raise ValueError("frame inspection is disabled in the sandbox")
        elif event == "object.__getattr__":
            if args[1] in frame_attrs:
                refuse("access to ." + args[1])
        elif event == "import":
            if args[0] in blocked_imports:
                refuse("importing " + args[0])
        elif event in ("open", "os.listdir", "os.scandir", "os.chdir"):
            path = args[0]
            if isinstance(path, bytes):
                path = path.decode("utf-8", "surrogateescape")
            if isinstance(path, str):
                real = realpath(path)
                if (real == "/proc" or real.startswith("/proc/")) and real not in PROC_ALLOWED:
                    refuse("reading " + real)
        elif event == "sandbox.signal":
            signum, handler = args
            if callable(handler):
                handler = strip_frame(handler)
            real_signal(signum, handler)
        elif event == "sandbox.create_builtin":
            spec, box = args
            if getattr(spec, "name", None) in blocked_imports:
                refuse("importing " + spec.name)
            box.append(real_create_builtin(spec))
        elif event == "sandbox.report":
            if not caller_is_main():
                refuse("reporting")
            data = secret + b" " + args[0].encode("utf-8", "backslashreplace") + b"\n"
            while data:
                data = data[write(report_fd, data):]

    sys.addaudithook(guard)
    audit = sys.audit
    _signal.signal = _bare_function(
        "def f(signalnum, handler):\n"
        "    previous = getsignal(signalnum)\n"
        "    audit('sandbox.signal', signalnum, handler)\n"
        "    return previous\n", getsignal=_signal.getsignal, audit=audit)
    _imp.create_builtin = _bare_function(
        "def f(spec):\n"
        "    box = []\n"
        "    audit('sandbox.create_builtin', spec, box)\n"
        "    return box[0]\n", audit=audit)
    if "signal" in sys.modules:
        sys.modules["signal"]._signal = _signal


# --- the job --------------------------------------------------------------------------------

def _print_exception(exc):
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    sys.__excepthook__(type(exc), exc.with_traceback(tb), tb)


def _main():
    import builtins
    import json
    import os
    import types

    job = _read_job(int(sys.argv[1]))
    report_fd = int(sys.argv[2])
    _undumpable()
    _no_network()
    _no_foreign_kill()
    path = "solution.py"
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        source = f.read()
    # everything is compiled before any of it runs: a syntax error is the code's verdict
    try:
        code = compile(source, path, "exec", dont_inherit=True)
        tests = tests_code(job["tests"]) if job.get("tests") is not None else None
    except SyntaxError as exc:
        _print_exception(exc)
        os._exit(1)
    # from here on only locals bound now: the code may replace any built-in or module attribute
    run, function, audit, dumps = exec, types.FunctionType, sys.audit, json.dumps
    exit_now, exit_type, base_type = os._exit, SystemExit, BaseException
    dict_type, enumerate_, str_ = dict, enumerate, str
    builtins_before = dict(builtins.__dict__)
    compare, plain = make_compare(), make_plain()
    kind, fn_name, cases = job["kind"], job.get("fn_name"), job.get("cases") or []
    _install_guard(job.pop("secret").encode(), report_fd, _main.__code__)
    del job
    module = type(sys)("__main__")
    module.__file__ = path
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.argv = [path]
    namespace = module.__dict__
    try:
        run(code, namespace)
        if tests is not None:
            scope = dict_type(namespace)
            scope["__builtins__"] = builtins_before
            function(tests, scope)(compare)
        if kind == "call":
            fn = _resolve(namespace, fn_name)
            for i, args in enumerate_(cases):
                try:
                    line = dumps({"case": i, "out": plain(fn(*args))})
                except exit_type:
                    raise
                except base_type as exc:     # the case's verdict
                    line = dumps({"case": i, "error": type(exc).__name__ + ": "
                                  + str_(exc)[:200]})
                audit("sandbox.report", line)
    except exit_type:
        raise           # the code's own exit: its status stands, and there is no report
    except base_type as exc:
        _print_exception(exc)
        exit_now(1)
    audit("sandbox.report", "done")
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:        # threads, atexit handlers and the like get no chance to change anything
        exit_now(0)


def _resolve(namespace, name):
    fn = namespace.get(name)
    if fn is None and isinstance(namespace.get("Solution"), type):
        fn = getattr(namespace["Solution"](), name, None)
    if not callable(fn):
        raise NameError("the code defines no function %r" % name)
    return fn


if __name__ == "__main__":
    _main()
