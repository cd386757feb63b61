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


def load_examples(source, kind: str, limit: int | None = None, *, role: str = "eval",
                  answer_column: str | None = "answer") -> list[Example]:
    """Read and validate a data source (file, folder, glob, hub id: `sources`) as `kind`
    ('preference', 'prompt' or 'sft') rows, as Python objects: for the small sets that
    evaluation and best-of-N read. Training data goes through `prepare.tokenize_source`."""
    from alignment.data.local_files import decode_row
    from alignment.data.sources import open_source

    opened = open_source(source, role=role, limit=limit)
    rows = [Row(decode_row(values, opened.json_columns), opened.locate(i))
            for i, values in enumerate(opened.dataset)]
    return parse_examples(rows, kind, opened.label, answer_column)


__all__ = ["DataError", "Example", "Row", "SkipReport", "TokenizedExample", "load_examples",
           "parse_examples", "read_rows", "render_completion", "render_prompt", "scorer_prompt",
           "tokenize_examples"]
