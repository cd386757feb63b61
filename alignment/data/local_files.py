"""Local data files -> Arrow tables, with every row's location ("file line N").

jsonl is read by Arrow's JSON reader into a memory-mapped file under
$ALIGNMENT_CACHE/rows/ (once per file version); parquet through `datasets`. Files that Arrow
cannot read as they are (a byte-order mark, a JSON document wrapped in {"rows": [...]}, a
quoted CSV cell over several lines, csv and json in general) are read by the strict reader
of `alignment.data.io`, which also explains any file it refuses, line by line. A column
whose rows hold different kinds of value is kept as JSON text (`decode_row`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.data.io import SUFFIXES, DataError, read_rows


@dataclass
class Opened:
    """An opened source: the rows, how to name row i in a message, and a fingerprint that
    changes whenever the rows could have changed."""

    dataset: Any                       # datasets.Dataset
    label: str                         # how messages name the source
    locate: Any                        # i -> "file line N" / "source row N"
    fingerprint: str
    json_columns: tuple[str, ...] = ()  # columns held as JSON text (`decode_row`)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:300] if text else type(exc).__name__)


def file_stamp(paths: list[Path]) -> tuple:
    return tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


def open_file(path: Path) -> Opened:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unknown data format '{suffix}' (use one of "
                        f"{', '.join(SUFFIXES)}, a folder, a glob or a hub id)")
    label = str(path)
    stamp = _hash("file", file_stamp([path]))
    if suffix == ".parquet":
        import datasets

        try:
            ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
            read_rows(path)   # "cannot read as parquet (...)", if that is what it is
            raise DataError(f"{path}: {first_line(exc)}") from None
        return Opened(ds, label, row_locator(label), stamp)
    if suffix == ".jsonl":
        ds = _jsonl_as_arrow(path, stamp)
        if ds is not None:
            return Opened(ds, label, _jsonl_locator(path), stamp)
    return _open_strict(path, stamp)


def _jsonl_as_arrow(path: Path, stamp: str):
    """A jsonl file read by Arrow's JSON reader into a memory-mapped file in the cache (not
    `load_dataset("json")`, whose fallback for rows Arrow cannot type reads them with pandas,
    which turns a text "4" into the number 4). None: let the strict reader take it."""
    import datasets
    import pyarrow as pa
    import pyarrow.json as paj

    from alignment.models import cache_dir

    target = cache_dir() / "rows" / f"{stamp}.arrow"
    if not target.is_file():
        try:
            table = paj.read_json(str(path))
            table.validate(full=True)   # Arrow's JSON reader does not check UTF-8 itself
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
            return None
        if table.num_rows == 0:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as out:
            out.write_table(table)
        os.replace(tmp, target)
    return datasets.Dataset.from_file(str(target))


def _open_strict(path: Path, stamp: str) -> Opened:
    """Read with the strict reader (exact line numbers, every format quirk it accepts), then
    hold the rows in an Arrow table. A column whose rows hold different kinds of value (a
    plain prompt here, a conversation there) is kept as JSON text, decoded per row."""
    import datasets

    rows = read_rows(path)
    values = [r.values for r in rows]
    mixed = _mixed_columns(values)
    if mixed:
        values = [{k: json.dumps(v) if k in mixed else v for k, v in r.items()}
                  for r in values]
    try:
        ds = datasets.Dataset.from_list(values)
    except Exception as exc:  # noqa: BLE001 - pyarrow cannot type a column
        raise DataError(f"{path}: cannot be held as a table ({first_line(exc)})") from None
    wheres = [r.where for r in rows]
    return Opened(ds, str(path), lambda i: wheres[i], stamp, tuple(sorted(mixed)))


def _mixed_columns(rows: list[dict]) -> set[str]:
    """Columns whose non-null values are of more than one kind (text, number, list, ...),
    or lists/objects whose items differ in kind."""
    seen: dict[str, str] = {}
    mixed = set()
    for row in rows:
        for key, value in row.items():
            if value is None or key in mixed:
                continue
            kind = _shape(value)
            if seen.setdefault(key, kind) != kind:
                mixed.add(key)
    return mixed


def _shape(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(sorted({_shape(v) for v in value})) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_shape(v)}" for k, v in sorted(value.items())
                              if v is not None) + "}"
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else type(value).__name__


def decode_row(values: dict, json_columns: tuple[str, ...]) -> dict:
    """A row as it was written: the columns `_open_strict` kept as JSON text, decoded."""
    if not json_columns:
        return values
    return {k: json.loads(v) if k in json_columns and v is not None else v
            for k, v in values.items()}


def row_locator(label: str):
    return lambda i: f"{label} row {i}"


def _jsonl_locator(path: Path):
    """Row i of a jsonl file -> its line (blank lines hold no row); the file is scanned
    once, the first time a row is named."""
    lines: list[int] = []

    def locate(i: int) -> str:
        if not lines:
            with path.open("rb") as f:
                lines.extend(n for n, raw in enumerate(f, start=1) if raw.strip())
        return f"{path} line {lines[i]}" if i < len(lines) else f"{path} row {i}"
    return locate


def _hash(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
