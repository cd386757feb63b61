"""Typed recipe fields: a dataclass field with its help text and value bounds in one place.

Every recipe key is declared exactly once, with `param(...)`, next to its documentation.
The loader (`alignment.config.loader`) reads the type annotation, the bounds and the
choices (`Literal[...]`) from here to validate a recipe before any model is loaded.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def param(default: Any = dataclasses.MISSING, help: str = "", *, ge: float | None = None,
          gt: float | None = None, le: float | None = None, path: bool = False,
          source: bool = False, default_factory: Any = dataclasses.MISSING) -> Any:
    """Declare a recipe field.

    ge / gt / le: numeric bounds (inclusive / exclusive / inclusive).
    path: the value is a file or directory that must exist (checked by `alignment check`).
    source: the value names data (`alignment.data.sources`: a file, folder, glob, hub id or
    mapping); a local one must exist, a malformed one is refused.
    """
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "path": path, "source": source}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type) -> Any:
    """A nested recipe section (e.g. `model.lora`) with its own defaults."""
    return dataclasses.field(default_factory=cls, metadata={"help": (cls.__doc__ or "").strip()})
