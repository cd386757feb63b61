"""Read rows from any of the formats Hugging Face users keep data in.

jsonl, json (a list of rows, or {"data"|"train"|"rows": [...]}), parquet, csv, and folders
written by `datasets.Dataset.save_to_disk`. Every row remembers where it came from
(`file line N` for jsonl, `file row N` otherwise) so that errors can point at it.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.errors import not_utf8


class DataError(ValueError):
    """A problem with a data file; the message names the file, the row and the column."""


@dataclass
class Row:
    values: dict[str, Any]
    where: str  # "data/x.jsonl line 7"


SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
_BOM = b"\xef\xbb\xbf"   # a UTF-8 byte-order mark some editors write first


def read_rows(path: str | Path) -> list[Row]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_dataset_dir(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".csv"):
        _check_text(path, suffix)
    if suffix == ".jsonl":
        rows = _read_jsonl(path)
    elif suffix == ".json":
        rows = _read_json(path)
    elif suffix == ".parquet":
        rows = _read_parquet(path)
    elif suffix == ".csv":
        rows = _read_csv(path)
    else:
        raise DataError(f"{path}: unknown data format '{suffix}' (use one of "
                        f"{', '.join(SUFFIXES)} or a datasets folder)")
    if not rows:
        raise DataError(f"{path}: the file has no rows")
    return rows


def _check_text(path: Path, suffix: str) -> None:
    with path.open("rb") as f:
        head = f.read(8192)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: UTF-16 text (it starts with a UTF-16 byte-order mark); "
                        "save the file as UTF-8")
    if b"\x00" in head:   # no UTF-8 text holds NUL bytes
        raise DataError(f"{path}: a binary file, not {suffix} text (it holds NUL bytes); "
                        "data files are UTF-8 text, or parquet / a datasets folder")


def _decode(data: bytes, path: Path, line: int | None = None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"{path} line {line}" if line is not None else str(path)
        raise DataError(f"{where}: {not_utf8(data, exc, line=line)}; save the file as "
                        "UTF-8") from None


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            line = _decode(raw.removeprefix(_BOM) if n == 1 else raw, path, n)
            if not line.strip():
                continue  # blank lines (e.g. a trailing one) are not rows
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {n}: not valid JSON ({exc.msg} at column "
                                f"{exc.colno})") from None
            if not isinstance(value, dict):
                raise DataError(f"{path} line {n}: expected a JSON object per line, got "
                                f"{type(value).__name__}")
            rows.append(Row(value, f"{path} line {n}"))
    return rows


def _read_json(path: Path) -> list[Row]:
    try:
        value = json.loads(_decode(path.read_bytes().removeprefix(_BOM), path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); for one "
                        "object per line name the file .jsonl") from None
    if isinstance(value, dict):
        for key in ("data", "train", "rows"):
            if isinstance(value.get(key), list):
                value = value[key]
                break
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a list of row objects (or {{\"data\": [...]}})")
    rows = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise DataError(f"{path} row {i}: expected an object, got {type(item).__name__}")
        rows.append(Row(item, f"{path} row {i}"))
    return rows


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
        raise DataError(f"{path}: cannot read as parquet ({exc})") from None
    return [Row(r, f"{path} row {i}") for i, r in enumerate(table.to_pylist())]


def _read_csv(path: Path) -> list[Row]:
    text = _decode(path.read_bytes().removeprefix(_BOM), path)
    rows = []
    # strict: an unterminated quote is an error, not the rest of the file in one cell
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    last_line = 1  # the header
    try:
        for r in reader:
            # a quoted field may span lines: a row starts right after the previous one ends
            rows.append(Row(dict(r), f"{path} line {last_line + 1}"))
            last_line = reader.line_num
    except csv.Error as exc:
        raise DataError(f"{path} line {last_line + 1}: not readable as CSV ({exc})") from None
    return rows


def _read_dataset_dir(path: Path) -> list[Row]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: not a folder written by datasets' save_to_disk ({exc})"
                        ) from None
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(f"{path}: holds several splits ({', '.join(ds)}); point at one "
                        f"of them, e.g. {path / next(iter(ds))}")
    return [Row(r, f"{path} row {i}") for i, r in enumerate(ds)]
