"""A pipeline's stages (`first_stage`): when one counts as trained, and which paths of a
later stage wait for an earlier one."""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any


def stage_trained(output_dir: str | os.PathLike) -> bool:
    """Whether a training run's output_dir holds its exported model (final/): a pipeline's
    earlier stage is then not run again."""
    return (Path(output_dir).expanduser() / "final" / "config.json").is_file()


def inside_pending(value: Any, pending: typing.Sequence[str]) -> bool:
    """Whether `value` is a path inside (or equal to) one of the `pending` folders."""
    if not isinstance(value, str) or not pending:
        return False
    target = Path(value).expanduser().resolve()
    return any(target.is_relative_to(Path(p).expanduser().resolve()) for p in pending)
