"""Data: read any common file format, validate columns, apply chat templates, tokenize."""

from __future__ import annotations

from alignment.data.formats import Example, parse_examples, scorer_prompt
from alignment.data.io import DataError, Row, read_rows
from alignment.data.templates import render_completion, render_prompt
from alignment.data.tokenize import (
    SkipReport,
    TokenizedExample,
    tokenize_examples,
)


def load_examples(path: str, kind: str, limit: int | None = None) -> list[Example]:
    """Read and validate `path` as `kind` ('preference', 'prompt' or 'sft') data."""
    rows = read_rows(path)
    if limit is not None:
        rows = rows[:limit]
    return parse_examples(rows, kind, str(path))


__all__ = ["DataError", "Example", "Row", "SkipReport", "TokenizedExample", "load_examples",
           "parse_examples", "read_rows", "render_completion", "render_prompt", "scorer_prompt",
           "tokenize_examples"]
