"""The Python sandbox (`reward_models.sandbox`) and the `python_tests` scorer built on it.

Every hostile case must be contained: it returns within a bounded wall time, scores 0, and
leaves the test process, the filesystem and the process table as they were.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from reward_models.python_tests import PythonTestsScorer, extract_code
from reward_models.sandbox import run_python, sandbox_mode

MODE = sandbox_mode()[0]
STRONG = MODE in ("namespaces", "userns")      # network + PID namespace isolation
OWN_UID = MODE in ("namespaces", "uid")         # a fresh unprivileged uid per run

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"


def _procs():
    """(pid, ppid, session id, real uid, state) of every process."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                text = f.read()
            fields = text[text.rindex(")") + 2:].split()
            with open(f"/proc/{name}/status") as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration, ValueError):
            continue
        found.append((int(name), int(fields[1]), int(fields[3]), uid, fields[0]))
    return found


def _assert_nothing_left(result, uid=None):
    """No process of the run's session (or, with its own uid, of that uid) survives, and the
    test process has no zombie children."""
    time.sleep(0.05)
    left = [p for p in _procs()
            if p[2] == result.pid or (uid is not None and uid != 0 and p[3] == uid)]
    assert left == [], f"sandbox processes survived: {left}"
    zombies = [p for p in _procs() if p[1] == os.getpid() and p[4] == "Z"]
    assert zombies == []


def _score(completion, tests=ADD_TESTS, **kwargs):
    return PythonTestsScorer(**kwargs).score(["p"], [completion], [{"tests": tests}])


def test_mode_is_the_strongest_here():
    mode, notes = sandbox_mode()
    if os.geteuid() == 0:
        assert mode in ("namespaces", "uid"), notes
    assert mode != "plain" or os.geteuid() != 0


def test_correct_code_passes():
    result = _score(ADD)
    assert result.rewards == [1.0]
    assert result.parts == {"python_tests": [1.0]}
    assert result.errors == [None]


def test_wrong_answer_fails():
    result = _score("def add(a, b):\n    return a - b\n")
    assert result.rewards == [0.0]
    assert result.errors[0].startswith("error: AssertionError")


def test_syntax_error_fails():
    result = run_python("def add(a, b)\n    return a + b\n")
    assert (result.ok, result.status, result.returncode) == (False, "error", 1)
    assert "SyntaxError" in result.stderr
    assert _score("def add(a, b)\n    return a + b\n").rewards == [0.0]


def test_fenced_python_block_is_extracted():
    completion = ("Here is a first try:\n```python\ndef add(a, b):\n    return 0\n```\n"
                  "Better:\n```python\n" + ADD + "```\nThis adds the numbers.")
    assert extract_code(completion).strip() == ADD.strip()
    assert _score(completion).rewards == [1.0]


def test_code_extraction_fallbacks():
    assert extract_code("```\nx = 1\n```\nand\n```text\ny = 2\n```") == "y = 2\n"
    assert extract_code("```py\nx = 1\n```\n```\nnot python\n```") == "x = 1\n"
    assert extract_code("just code = 1") == "just code = 1"
    assert extract_code("cut off:\n```python\ndef f():\n    return 1") == "def f():\n    return 1"


def test_missing_or_empty_tests_column_names_it():
    scorer = PythonTestsScorer(tests_column="unit_tests")
    with pytest.raises(ValueError, match="unit_tests"):
        scorer.score(["p"], [ADD], [{"tests": ADD_TESTS}])
    with pytest.raises(ValueError, match="unit_tests"):
        scorer.score(["p"], [ADD], [{"unit_tests": "  "}])
    with pytest.raises(ValueError, match="unit_tests"):
        scorer.score_one("p", ADD, {})


def test_list_of_asserts_is_accepted():
    result = PythonTestsScorer().score(["p"], [ADD], [{"tests": ["assert add(1, 1) == 2"]}])
    assert result.rewards == [1.0]


def test_infinite_loop_times_out():
    start = time.monotonic()
    result = run_python("while True: pass", timeout_s=2.0)
    assert time.monotonic() - start < 2.0 + 2.0
    assert result.status == "timeout" and not result.ok
    _assert_nothing_left(result)
    assert _score("def add(a, b):\n    while True: pass\n", timeout_s=1.0).rewards == [0.0]


def test_fork_bomb_is_contained():
    code = "import os\nprint(os.getuid(), flush=True)\nwhile True: os.fork()"
    start = time.monotonic()
    result = run_python(code, timeout_s=5.0)
    assert time.monotonic() - start < 5.0 + 2.0
    assert not result.ok and result.status in ("error", "timeout", "killed")
    uid = int(result.stdout.split()[0])
    _assert_nothing_left(result, uid if OWN_UID else None)
    assert _score("import os\nwhile True: os.fork()\n" + ADD).rewards == [0.0]


def test_escaped_daemons_do_not_survive():
    # children that leave the process group and session (setsid + double fork) still die
    code = ("import os, time\nprint(os.getuid(), flush=True)\n"
            "for _ in range(3):\n"
            "    if os.fork() == 0:\n"
            "        os.setsid()\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(60)\n"
            "        time.sleep(60)\n"
            "print('parent done')\n")
    start = time.monotonic()
    result = run_python(code, timeout_s=5.0)
    assert time.monotonic() - start < 3.0          # does not wait for the daemons
    assert result.status == "ok" and result.stdout.endswith("parent done\n")
    uid = int(result.stdout.split()[0])
    _assert_nothing_left(result, uid if OWN_UID else None)


@pytest.mark.parametrize("code", ["x = bytearray(10**10)",
                                  "x = []\nwhile True:\n    x.append(' ' * 10**6)"])
def test_memory_bomb_is_contained(code):
    start = time.monotonic()
    result = run_python(code, timeout_s=5.0, memory_mb=256)
    assert time.monotonic() - start < 5.0 + 2.0
    assert result.status in ("memory", "error") and not result.ok
    assert _score(code + "\n" + ADD, memory_mb=256).rewards == [0.0]


def test_writes_outside_the_working_dir_do_not_persist(repo_root):
    tag = uuid.uuid4().hex
    tmp_target = f"/tmp/escape_{tag}.txt"
    project_target = str(repo_root / f"escape_{tag}.txt")
    code = (f"try:\n    open({tmp_target!r}, 'w').write('x')\n"
            f"except OSError as e:\n    print('tmp', e)\n"
            f"open({project_target!r}, 'w').write('x')\n")
    result = run_python(code)
    assert not os.path.exists(project_target)
    assert result.status == "error" and not result.ok       # the project is not writable
    if MODE in ("namespaces", "uid"):
        # namespaces: /tmp is a private tmpfs; uid: the run's files are swept afterwards
        assert not os.path.exists(tmp_target)
    for target in ("/etc/escape_" + tag, "/usr/escape_" + tag):
        result = run_python(f"open({target!r}, 'w').write('x')")
        assert result.status == "error" and not os.path.exists(target)


def test_project_is_invisible_and_not_importable(repo_root):
    result = run_python("import alignment")
    assert result.status == "error" and "No module named 'alignment'" in result.stderr
    result = run_python("import reward_models")
    assert result.status == "error"
    if STRONG:
        result = run_python(f"print(open({str(repo_root / 'pyproject.toml')!r}).read())")
        assert result.status == "error"


def test_network_is_blocked():
    for code in ["import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)",
                 "import socket\nsocket.socket()"]:
        result = run_python(code)
        assert result.status == "error" and "PermissionError" in result.stderr
        assert _score(code + "\n" + ADD).rewards == [0.0]
    if STRONG:   # the boundary itself: a raw connect() from a fresh interpreter (no guards)
        raw = ("import ctypes, os, struct\nlibc = ctypes.CDLL(None, use_errno=True)\n"
               "fd = libc.socket(2, 1, 0)\n"
               "addr = struct.pack('<H', 2) + struct.pack('!H4s8x', 80, bytes([1, 1, 1, 1]))\n"
               "rc = libc.connect(fd, addr, len(addr))\n"
               "print(rc, os.strerror(ctypes.get_errno()), flush=True)\n")
        code = f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {raw!r}])\n"
        result = run_python(code)
        assert result.stdout.startswith("-1 ") and "unreachable" in result.stdout


def test_the_test_process_cannot_be_killed():
    me = os.getpid()
    codes = ["import os\nos.kill(os.getppid(), 9)",
             f"import os, signal\nos.kill({me}, signal.SIGKILL)",
             f"import os, signal\nos.killpg(os.getpgid({me}), signal.SIGKILL)"]
    if MODE != "plain":   # bypassing the prelude: only the uid / PID namespace protect us
        codes.append(f"import ctypes\nctypes.CDLL(None).kill({me}, 9)\n"
                     f"ctypes.CDLL(None).kill(-{os.getpgid(0)}, 9)\n"
                     "ctypes.CDLL(None).kill(-1, 9)")
    for code in codes:
        run_python(code)
    assert os.getpid() == me      # still here
    result = run_python(f"import os, signal\nos.kill({me}, signal.SIGKILL)")
    assert result.status == "error"


def test_output_flood_is_cut():
    start = time.monotonic()
    result = run_python("print('x' * 10**8)", max_output_bytes=64_000)
    assert time.monotonic() - start < 5.0
    assert result.status == "output_limit" and not result.ok
    assert len(result.stdout) == 64_000
    assert _score("print('x' * 10**8)\n" + ADD).rewards == [0.0]


def test_parent_environment_is_not_visible(monkeypatch):
    monkeypatch.setenv("SANDBOX_TEST_SECRET", "hunter2-secret")
    code = "import os\nprint(sorted(os.environ.items()))\n"
    if MODE != "plain":     # (same uid in "plain": /proc/<pid>/environ is readable there)
        code += (f"try:\n    print(open('/proc/{os.getpid()}/environ').read())\n"
                 "except OSError as e:\n    print('no access')\n")
    result = run_python(code)
    assert result.status == "ok"
    assert "hunter2-secret" not in result.stdout and "SANDBOX_TEST_SECRET" not in result.stdout


def test_working_dir_is_removed():
    result = run_python("import os\nopen('scratch.txt', 'w').write('x')\nprint(os.getcwd())")
    assert result.status == "ok"
    workdir = result.stdout.strip()
    assert os.path.basename(workdir).startswith("sandbox-")
    assert not os.path.exists(workdir)


def test_concurrent_batch_keeps_order():
    wrong = "def add(a, b):\n    return a * b\n"
    completions = [ADD, wrong, "```python\n" + ADD + "```", "def add(:", ADD, wrong,
                   "import time\ntime.sleep(0.3)\n" + ADD, "raise SystemExit(3)\n" + ADD]
    expected = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    scorer = PythonTestsScorer(workers=2)
    result = scorer.score(["p"] * 8, completions, [{"tests": ADD_TESTS}] * 8)
    assert result.rewards == expected
    assert [e is None for e in result.errors] == [r == 1.0 for r in expected]
    assert result.parts == {"python_tests": expected}


@pytest.mark.skipif(os.geteuid() != 0 or MODE == "uid", reason="needs root; tested as default")
def test_uid_fallback_mode_contains_escapes():
    """The mode used where namespaces are unavailable (root in a default container)."""
    tag = uuid.uuid4().hex
    code = ("import os, time\nprint(os.getuid(), flush=True)\n"
            f"open('/tmp/escape_{tag}', 'w').write('x')\n"
            "if os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n")
    result = run_python(code, mode="uid")
    assert result.status == "ok", result.stderr
    uid = int(result.stdout.split()[0])
    assert uid not in (0, os.getuid())
    _assert_nothing_left(result, uid)
    assert not os.path.exists(f"/tmp/escape_{tag}")
    result = run_python(f"import ctypes, os\nctypes.CDLL(None).kill({os.getpid()}, 9)\n"
                        "while True: os.fork()", mode="uid")
    assert not result.ok


# --- failing closed ---------------------------------------------------------------------------

def _pretend_machine_gives(monkeypatch, mode, why):
    from reward_models.sandbox import modes
    monkeypatch.setattr(modes, "_mode", mode)
    monkeypatch.setattr(modes, "_notes", [why])


def test_too_weak_isolation_stops_with_what_is_missing_and_how_to_allow_it(monkeypatch):
    from reward_models.python_io import PythonIOScorer
    from reward_models.sandbox import IsolationError
    _pretend_machine_gives(monkeypatch, "uid", "namespaces unavailable: unshare: EPERM")
    for scorer in (PythonTestsScorer, PythonIOScorer):
        with pytest.raises(IsolationError) as err:
            scorer(isolation="namespaces")
        message = str(err.value)
        assert "needs isolation 'namespaces'" in message and "gives only 'uid'" in message
        assert "unshare: EPERM" in message and "isolation: uid" in message
    with pytest.raises(IsolationError):
        run_python("print(1)", isolation="namespaces")
    # asked for explicitly, the weaker mode runs
    assert _score(ADD, isolation="uid").rewards == [1.0]
    assert run_python("print(1)", isolation="uid").mode == "uid"


def test_too_weak_isolation_is_a_recipe_error(monkeypatch, tmp_path, capsys):
    from alignment.cli import main
    _pretend_machine_gives(monkeypatch, "plain", "userns unavailable: no user namespaces")
    recipe = tmp_path / "code.yaml"
    recipe.write_text("algorithm: grpo\nrewards: [{name: python_tests}]\n")
    assert main(["check", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "gives only 'plain'" in err and "Traceback" not in err
    recipe.write_text("algorithm: grpo\nrewards: [{name: python_tests, isolation: plain}]\n")
    assert main(["check", str(recipe)]) == 0


def test_unknown_isolation_is_named():
    with pytest.raises(ValueError, match="isolation must be one of namespaces, userns, uid, "
                                         "plain, got 'strong'"):
        PythonTestsScorer(isolation="strong")


def test_set_up_failure_is_an_error_not_a_verdict():
    from reward_models.sandbox import SandboxError
    from reward_models.sandbox.run import run_in_mode
    with pytest.raises(SandboxError, match="setup-error"):
        run_in_mode("print(1)", MODE, timeout_s=5, memory_mb=256, max_processes=8,
                    max_output_bytes=1000, max_file_bytes=1000, python="/no/such/python")
