"""A full disk, said in one line while the previous checkpoint is intact.

Before a checkpoint (or `final/`) is written its size is estimated and compared with the
free space where it goes (`require_space`); a disk that fills anyway (another process
writing, an estimate too low) is recognised in whatever error the writer raised
(`is_disk_full`: Python's ENOSPC, safetensors' "StorageFull", torch's zip writer's "file
write failed" / "unexpected pos" which lose the errno) and becomes the same `DiskFullError`.
Checkpoints are assembled under a temporary name (`alignment.atomic`), so a write that
fails leaves the earlier ones as they were.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from alignment.errors import TrainingError

# what a disk-full error looks like once a library has re-raised it without its errno
FULL = ("no space left on device", "disk quota exceeded", "storagefull")
# torch's zip writer on a failed write (disk full, or another I/O error: then the free
# space decides)
WRITE_FAILED = ("file write failed", "unexpected pos")


class DiskFullError(TrainingError):
    """Not enough free space to write what the run must write. The free space in the
    message is read when it is shown: after a failed write's partial files are gone."""

    def __init__(self, what: str, where: Path, need: int, kept: str):
        super().__init__(what)
        self.what, self.where, self.need, self.kept = what, Path(where), need, kept

    def __str__(self) -> str:
        return (f"disk full: {self.what} needs about {size_text(self.need)} but "
                f"{self.where} has {size_text(free_bytes(self.where))} free; {self.kept}")


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes on the file system of `path` (or of its nearest existing parent)."""
    path = Path(path).expanduser().absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def size_text(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def require_space(where: Path, need: int, what: str, kept: str) -> None:
    """Stop with DiskFullError when `where` has less than `need` bytes free. `what`: what
    was to be written; `kept`: what is intact and how to go on (one clause)."""
    if free_bytes(where) < need:
        raise DiskFullError(what, where, need, kept)


def is_disk_full(exc: BaseException, where: Path | None = None, need: int = 0) -> bool:
    """Whether `exc` (or an error it was raised from) is a full disk or quota. torch's
    writer errors count when `where` has less than `need` bytes free now."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc).lower()
        if any(s in text for s in FULL):
            return True
        if where is not None and any(s in text for s in WRITE_FAILED) \
                and free_bytes(where) < max(need, 1 << 20):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def disk_full_stops(where: Path, need: int, what: str, kept: str) -> Iterator[None]:
    """Turn a full disk met inside the block into DiskFullError (other errors pass). Use it
    inside the temporary folder's block, so that the free space is read before the partial
    write is cleared away."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if not is_disk_full(exc, where, need):
            raise
        raise DiskFullError(what, where, need, kept) from exc


def save_torch(obj, path: Path, what: str) -> None:
    """`torch.save` to `path` whole or not at all (a temporary name, then a rename); a full
    disk stops the run as DiskFullError naming `what`."""
    import torch

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    kept = "the checkpoints are intact: free space, then run the same command"
    try:
        with disk_full_stops(path.parent, 0, what, kept):
            torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
