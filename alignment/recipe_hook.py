"""Make a recipe file runnable as a Python "script".

`accelerate launch recipes/dpo.yaml` starts `python recipes/dpo.yaml` (once per process).
Python cannot run YAML, so the package installs a one-line `.pth` file
(`zz_alignment_recipe_hook.pth`, processed by `site` at interpreter start-up) that calls
`run_if_recipe()` when the first argument ends in `.yaml`/`.yml`. If that file is a recipe
(it has a top-level `algorithm:` key) we run `alignment train <recipe> <overrides...>` and
leave the interpreter before it tries to compile the YAML as Python.

We are inside `site` start-up here, where `SystemExit` is a fatal error, so we exit with
`os._exit` after running the `atexit` handlers and flushing the standard streams ourselves.
The `.pth` name starts with `zz_` so that it runs after the editable-install `.pth` files
that put this package on `sys.path`.
"""

from __future__ import annotations

import atexit
import os
import sys


def _is_recipe(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError:
        return False
    # bytes: a recipe that is not valid UTF-8 is still ours (`alignment train` says what is
    # wrong with it); an exception here would escape into site start-up as a traceback
    return any(line.startswith(b"algorithm:") for line in head.splitlines())


def run_if_recipe() -> None:
    path = sys.argv[0]
    if os.environ.get("ALIGNMENT_NO_RECIPE_HOOK") or not _is_recipe(path):
        return  # not ours: let Python carry on (and fail on the YAML as it always did)
    from alignment.cli import main

    try:
        code = main(["train", path, *sys.argv[1:]])
    except SystemExit as exc:  # argparse and friends
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - we must not fall back into site start-up
        import traceback

        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
