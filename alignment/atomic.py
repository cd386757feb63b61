"""Write files and folders so that readers never see a half-written one.

Everything is written under a temporary name in the same folder, flushed and fsynced,
then renamed (`os.replace` is atomic on POSIX within one file system); the folder that
holds the new name is fsynced after the rename. The rename alone protects against a
killed process (the page cache outlives it); the fsyncs make the new file durable before
it replaces the old one, so that a power loss cannot leave a complete-looking name with
empty contents.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the entries of a folder (new names, renames) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file under `path`, then every folder, deepest first (a folder's entry
    for a file is only worth syncing once the file's data is)."""
    for folder, _dirs, files in os.walk(path, topdown=False):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(folder)


def replace_dir(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Put the complete folder `tmp` in place of `path` (which may exist). At every moment
    `path` is either the old complete folder, the new one, or absent with the old one
    still whole at `.NAME.old` (`restore_old` puts it back after a kill there)."""
    tmp, path = Path(tmp), Path(path)
    fsync_tree(tmp)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
        fsync_dir(path.parent)


def restore_old(parent: str | os.PathLike) -> list[Path]:
    """After a kill between `replace_dir`'s two renames: move each `.NAME.old` whose `NAME`
    is missing back to `NAME`. Returns the folders restored."""
    restored = []
    for old in Path(parent).glob(".*.old"):
        target = old.with_name(old.name[1:-len(".old")])
        if not target.exists():
            os.replace(old, target)
            restored.append(target)
    return restored


def remove_dir(path: str | os.PathLike) -> None:
    """Delete a folder so that it is never seen half-deleted under its own name: renamed
    to `.NAME.trash` first (a kill during the deletion leaves only a hidden leftover)."""
    path = Path(path)
    trash = path.with_name(f".{path.name}.trash")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `path` (which may exist) whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
