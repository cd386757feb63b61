"""The recipe reference page (docs/reference/recipe-keys.md), written from the schema.

Every key's type, default, bounds and help text come from its one declaration in
`alignment.config.schema`; `scripts/recipe_reference.py` writes the page and
`tests/test_docs.py` fails when the committed page differs from what this writes, so the
reference cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import json

from alignment.config.loader import _hints, _type_name
from alignment.config.schema import Recipe

HEADER = """# Recipe keys

Every key a recipe can set, generated from `alignment/config/schema.py` by
`python scripts/recipe_reference.py` (do not edit by hand: `tests/test_docs.py` checks that
this page matches the schema). Keys are written as YAML sections (`trainer:` then `lr:`) or
as dotted overrides on the command line (`alignment train recipes/dpo.yaml trainer.lr=1e-5`);
an unknown key is an error with a did-you-mean. `alignment check --keys` prints the same
list in a terminal. See [Recipes](../recipes.md) for how a recipe runs.
"""


def reference_markdown() -> str:
    """The whole page: the top-level keys, then one section per recipe section."""
    top, sections = [], []
    for f in dataclasses.fields(Recipe):
        tp = _hints(Recipe)[f.name]
        if dataclasses.is_dataclass(tp):
            sections.append((f.name, tp))
        else:
            top.append(_row(f.name, f, tp))
    parts = [HEADER, "## Top level\n", _table(top)]
    for name, cls in sections:
        parts.append(f"## `{name}`\n")
        doc = " ".join((cls.__doc__ or "").split())
        if doc:
            parts.append(doc + "\n")
        parts.append(_table(_rows(cls, name + ".")))
    return "\n".join(parts)


def _rows(cls: type, prefix: str) -> list[str]:
    rows = []
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(_rows(tp, f"{prefix}{f.name}."))
        else:
            rows.append(_row(prefix + f.name, f, tp))
    return rows


def _row(key: str, f: dataclasses.Field, tp) -> str:
    meta = f.metadata
    bounds = [f"{sign} {meta[k]:g}" for k, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"))
              if meta.get(k) is not None]
    if meta.get("path"):
        bounds.append("must exist")
    if meta.get("source"):
        bounds.append("data source")
    kind = ", ".join([_type_name(tp), *bounds])
    cells = [f"`{key}`", _cell(_default(f)), _cell(f"*{kind}* — {meta.get('help', '')}")]
    return "| " + " | ".join(cells) + " |"


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(rows: list[str]) -> str:
    return "\n".join(["| key | default | type, bounds — what it does |",
                      "|---|---|---|", *rows]) + "\n"
