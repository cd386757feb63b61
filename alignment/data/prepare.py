"""A data source, validated and tokenised once, kept as memory-mapped Arrow.

    rows   = open_source(data.train)                     # alignment.data.sources
    table  = rows.map(validate + chat template + tokenise, num_proc=cores)
    cached under $ALIGNMENT_CACHE/tokenized/<fingerprint>.arrow

The fingerprint covers the rows (the datasets fingerprint, plus size and mtime of local
files), the data kind, the tokenizer (its vocabulary, special tokens and chat template),
the length settings, and the source code of the data layer, so the second run of a recipe
tokenises nothing and any change that could alter a token re-tokenises. Rows stay in Arrow:
`TokenizedRows[i]` decodes row i when a batch asks for it, and `lengths` is one column
read, so a 100k-row set costs no Python object per row.

Each row's outcome is a column: kept, skipped (over-long, or identical chosen and rejected)
or an error message. The first error is raised after the map with the row's location
(`file line N` / `source row N`); skips are reported as `tokenize_examples` reports them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alignment.data import formats, sources, templates, tokenize
from alignment.data.formats import Row, check_kind_columns, is_unpaired, pair_unpaired
from alignment.data.io import DataError
from alignment.data.local_files import decode_row
from alignment.data.tokenize import SkipReport, TokenizedExample, tokenize_example

# Columns this module adds (prefixed so they never meet a user's column).
PREFIX = "_tok_"
COMPLETIONS = {"preference": ("chosen", "rejected"), "sft": ("completion",), "prompt": ()}
# A row's own columns that are not passed on as `extra` (they became the tokens).
CONSUMED = {"preference": {"prompt", "chosen", "rejected", "completion", "label"},
            "sft": {"messages", "prompt", "completion", "text"}, "prompt": {"prompt"}}
ROWS_PER_PROCESS = 4000   # below this, a second tokenising process costs more than it saves


@dataclass(frozen=True)
class TokenizeSettings:
    max_length: int
    max_prompt_length: int
    too_long: str = "skip"
    chat_template: bool = True
    system_prompt: str | None = None
    tools: str | None = None   # JSON function schemas for rows without a `tools` column


class TokenizedRows(Sequence):
    """The kept rows of a tokenised source; item i is a `TokenizedExample` (decoded on
    access), `lengths[i]` its prompt + longest completion tokens."""

    def __init__(self, table, kind: str, locate, report: SkipReport, label: str,
                 cache_file: str | None, json_columns: tuple[str, ...] = ()):
        self.table, self.kind, self.locate = table, kind, locate
        self.json_columns = json_columns
        self.report, self.label, self.cache_file = report, label, cache_file
        self._extra = [c for c in table.column_names
                       if not c.startswith(PREFIX) and c not in CONSUMED[kind]]
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        row = self.table[int(i)]
        return TokenizedExample(
            prompt_ids=row[PREFIX + "prompt"],
            completion_ids={n: row[PREFIX + n] for n in COMPLETIONS[self.kind]},
            extra=decode_row({c: row[c] for c in self._extra}, self.json_columns),
            where=self.locate(row[PREFIX + "row"]),
            raw_prompt=json.loads(row[PREFIX + "raw"]), prompt_text=row[PREFIX + "text"])

    @property
    def lengths(self) -> list[int]:
        if self._lengths is None:
            self._lengths = self.table[PREFIX + "length"]
        return self._lengths

    @property
    def columns(self) -> list[str]:
        """The source's own columns."""
        return [c for c in self.table.column_names if not c.startswith(PREFIX)]

    @property
    def fingerprint(self) -> str:
        """Changes whenever any kept row's tokens could have changed."""
        return self.table._fingerprint

    def content_digest(self) -> str:
        """A hash of the kept rows' token ids themselves (not of where they came from: the
        same pairs under another path give the same digest), read from the Arrow buffers
        without a Python object per token."""
        import numpy as np
        import pyarrow.compute as pc

        digest = hashlib.sha256()
        data = self.table.data
        for name in ("prompt", *COMPLETIONS[self.kind]):
            for chunk in data.column(PREFIX + name).chunks:
                digest.update(pc.list_value_length(chunk).to_numpy(zero_copy_only=False)
                              .astype(np.int64).tobytes())
                digest.update(chunk.flatten().to_numpy(zero_copy_only=False)
                              .astype(np.int32).tobytes())
        kept = self.table._indices   # rows left after skips (None: all of them)
        if kept is not None:
            for chunk in kept.column(0).chunks:
                digest.update(chunk.to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
        return digest.hexdigest()[:16]


class MappedRows(Sequence):
    """`rows` seen through `convert(i, example)` on access (a trainer's own example type),
    keeping `lengths` and `fingerprint`: a training set that stays in Arrow."""

    def __init__(self, rows: TokenizedRows, convert):
        self.rows, self.convert = rows, convert

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]   # a negative index counts from the end; IndexError past it
        return self.convert(i, self.rows[i])

    @property
    def lengths(self) -> list[int]:
        return self.rows.lengths

    @property
    def fingerprint(self) -> str:
        return self.rows.fingerprint

    def content_digest(self) -> str:
        return self.rows.content_digest()


def tokenize_source(tokenizer, source, kind: str, settings: TokenizeSettings, *,
                    limit: int | None = None, role: str = "train",
                    answer_column: str | None = "answer", num_proc: int | None = None
                    ) -> TokenizedRows:
    """Open, validate and tokenise `source` as `kind` rows (see the module docstring)."""
    opened = sources.open_source(source, role=role, limit=limit)
    ds, locate, label = opened.dataset, opened.locate, opened.label
    present = set(ds.column_names)
    check_kind_columns(present, kind, label, answer_column if kind == "prompt" else None)
    fingerprint = opened.fingerprint
    if kind == "preference" and is_unpaired(present):
        ds, locate, fingerprint = _paired(ds, locate, label, fingerprint)
    fingerprint = _hash(fingerprint, kind, answer_column, asdict(settings),
                        tokenizer_fingerprint(tokenizer), _code_version())
    cache_file = str(_cache_dir() / f"{fingerprint}.arrow")
    if num_proc is None:
        num_proc = min(_cores(), len(ds) // ROWS_PER_PROCESS) or None
    table = ds.map(
        _tokenize_batch, features=_features(ds.features, kind), batched=True, batch_size=256,
        with_indices=True, num_proc=num_proc,
        fn_kwargs={"tokenizer": tokenizer, "kind": kind, "settings": settings, "label": label,
                   "answer_column": answer_column, "json_columns": opened.json_columns},
        new_fingerprint=fingerprint, cache_file_name=cache_file,
        load_from_cache_file=True, desc=f"tokenising {label}")
    return _outcome(table, kind, locate, label, cache_file, opened.json_columns)


def _outcome(table, kind: str, locate, label: str, cache_file: str,
             json_columns: tuple[str, ...]) -> TokenizedRows:
    """Raise the first row error; count the skips; keep the rest (row i of the map is row i
    of the source)."""
    report, kept = SkipReport(), []
    for i, status in enumerate(table[PREFIX + "status"]):
        if status.startswith("error "):
            raise DataError(status[6:].replace(f"{label} row {i}", locate(i), 1))
        report.truncated += "truncated" in status
        if "too_long" in status:
            report.too_long.append(locate(i))
        elif "identical" in status:
            report.identical.append(locate(i))
        else:
            kept.append(i)
    rows = table if len(kept) == len(table) else table.select(kept)
    return TokenizedRows(rows, kind, locate, report, label, cache_file, json_columns)


def _tokenize_batch(batch: dict, indices: list[int], *, tokenizer, kind: str,
                    settings: TokenizeSettings, label: str, answer_column: str | None,
                    json_columns: tuple[str, ...] = ()) -> dict:
    """datasets.map function: one batch of rows -> token columns plus each row's status
    ("" kept, "truncated", "too_long", "identical", or "error <message>")."""
    names = COMPLETIONS[kind]
    out: dict[str, list] = {PREFIX + k: [] for k in ("prompt", "status", "raw", "text",
                                                      "length", "row", *names)}
    columns = list(batch)
    for j, index in enumerate(indices):
        row = Row(decode_row({c: batch[c][j] for c in columns}, json_columns),
                  f"{label} row {index}")
        prompt, completions, status, text, raw = [], {}, "", "", None
        try:
            ex = (formats.prompt_example(row, answer_column) if kind == "prompt"
                  else formats.KINDS[kind][1](row))
            prompt, completions, status, text = tokenize_example(
                tokenizer, ex, **asdict(settings))
            raw = formats.scorer_prompt(ex) if ex.text is None else ex.text
        except DataError as exc:
            status = f"error {exc}"
        out[PREFIX + "prompt"].append(prompt)
        for n in names:
            out[PREFIX + n].append(completions.get(n, []))
        out[PREFIX + "status"].append(status)
        out[PREFIX + "raw"].append(json.dumps(raw))
        out[PREFIX + "text"].append(text)
        out[PREFIX + "length"].append(len(prompt) + max(map(len, completions.values()),
                                                        default=0))
        out[PREFIX + "row"].append(index)
    return out


def _features(source_features, kind: str):
    """The map's output schema: the source's columns plus ours (token ids as int32)."""
    from datasets import Sequence, Value

    features = source_features.copy()
    ids = Sequence(Value("int32"))
    features.update({PREFIX + "prompt": ids, PREFIX + "status": Value("string"),
                     PREFIX + "raw": Value("string"), PREFIX + "text": Value("string"),
                     PREFIX + "length": Value("int32"), PREFIX + "row": Value("int64")})
    features.update({PREFIX + n: ids for n in COMPLETIONS[kind]})
    return features


def _paired(ds, locate, label: str, fingerprint: str):
    """Unpaired preference rows (prompt, completion, label) -> a table of pairs."""
    import datasets

    rows = [Row(r, locate(i)) for i, r in enumerate(ds)]
    pairs, unmatched = pair_unpaired(rows, label)
    if unmatched:
        print(f"{label}: {unmatched} unpaired row(s) found no partner of the other label "
              "for their prompt and are not used", flush=True)
    wheres = [p.where for p in pairs]
    table = datasets.Dataset.from_list([p.values for p in pairs])
    return table, lambda i: wheres[i], _hash(fingerprint, "paired")


def tokenizer_fingerprint(tokenizer) -> str:
    """What decides the tokens: vocabulary and merges, special tokens, chat template, and
    the stop ids a completion must hold one of (`alignment.models.stop_token_ids`)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(
        sorted(tokenizer.get_vocab().items()))
    return _hash(vocab, tokenizer.chat_template, tokenizer.eos_token, tokenizer.bos_token,
                 tokenizer.pad_token, str(tokenizer.special_tokens_map),
                 getattr(tokenizer, "alignment_stop_ids", None))


@functools.cache
def _code_version() -> str:
    """The data layer's own source: a change to how rows become tokens re-tokenises."""
    text = "".join(Path(m.__file__).read_text() for m in (formats, templates, tokenize))
    return _hash(text, Path(__file__).read_text())


def _cache_dir() -> Path:
    from alignment.models import cache_dir

    path = cache_dir() / "tokenized"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def _hash(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]



__all__ = ["MappedRows", "TokenizeSettings", "TokenizedRows", "tokenize_source",
           "tokenizer_fingerprint"]
