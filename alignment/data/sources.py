"""Where rows come from: a data source as a user names it -> one Arrow-backed `datasets.Dataset`.

A source is written in a recipe (`data.train`, `data.eval`) or on the command line as

  a file        data/pairs.jsonl, x.parquet, x.csv, x.json
  a glob        data/shards/*.parquet                       (all matches, one table)
  a folder      written by `save_to_disk`, or a dataset repository cloned from the hub
                (README `configs`, `data/train-*.parquet`, ...) or any folder of data files
  a hub id      trl-lib/ultrafeedback_binarized             (split: see below)
                org/name:SPLIT, org/name:CONFIG:SPLIT       (the one-string shorthand)
  a mapping     {path: org/name, name: CONFIG, split: train, data_files: ..., data_dir: ...,
                 revision: ...}                             (`datasets.load_dataset`'s words)

A split may carry `datasets`' slice syntax (`train[:1000]`). Without a split, a source with
one split uses it; otherwise training data takes `train` and evaluation data `test` (then
`validation`), and any other set of splits is an error that lists them.

Everything goes through `datasets.load_dataset` (or `load_from_disk`), so rows live in
memory-mapped Arrow files under the datasets cache and a second run reads no text again.
The offline cache is honoured (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); a hub id that is not
cached while offline is a `DataError` naming the id and how to fetch it.

Local jsonl/json/csv files that Arrow cannot read as they are (a byte-order mark, a JSON
document wrapped in {"rows": [...]}, a quoted CSV cell over several lines) are read by the
strict reader of `alignment.data.io`, which also explains any file it refuses line by line.
Row locations in messages are `file line N` for jsonl and csv, `source row N` otherwise.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.data.io import SUFFIXES, DataError, read_rows

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SOURCE_KEYS = ("path", "name", "split", "data_files", "data_dir", "revision")
TRAIN_SPLITS = ("train",)
EVAL_SPLITS = ("test", "validation", "valid", "eval", "dev")
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv",
            ".arrow": "arrow"}


@dataclass(frozen=True)
class DataSource:
    """A data source in `datasets.load_dataset`'s terms (see the module docstring)."""

    path: str
    name: str | None = None
    split: str | None = None
    data_files: Any = None
    data_dir: str | None = None
    revision: str | None = None

    def __str__(self) -> str:
        tail = "".join(f":{v}" for v in (self.name, self.split) if v)
        if self.name and not self.split:
            tail += ":"
        return self.path + tail


def parse_source(value: str | Mapping | DataSource) -> DataSource:
    """A recipe value as a `DataSource` (ValueError with the reason if it is malformed)."""
    if isinstance(value, DataSource):
        return value
    if isinstance(value, os.PathLike):
        return DataSource(os.fspath(value))
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in SOURCE_KEYS]
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(map(repr, unknown))} in a data source "
                             f"mapping (allowed: {', '.join(SOURCE_KEYS)})")
        path = value.get("path")
        if not isinstance(path, str) or not path.strip():
            raise ValueError("a data source mapping needs 'path' (a file, folder, glob or hub "
                             "id), e.g. {path: trl-lib/ultrafeedback_binarized, split: train}")
        for key in ("name", "split", "data_dir", "revision"):
            if value.get(key) is not None and not isinstance(value[key], str):
                raise ValueError(f"'{key}' of a data source must be a string, got "
                                 f"{value[key]!r}")
        return DataSource(path, value.get("name"), value.get("split"), value.get("data_files"),
                          value.get("data_dir"), value.get("revision"))
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a file, folder, glob, hub id or mapping, got {value!r}")
    return _shorthand(value)


def _shorthand(text: str) -> DataSource:
    """`org/name:SPLIT` and `org/name:CONFIG:SPLIT`; anything that exists locally is a path."""
    if Path(text).expanduser().exists() or ":" not in text:
        return DataSource(text)
    head, rest = text.split(":", 1)
    if not HUB_ID.match(head):
        return DataSource(text)
    colon, bracket = rest.find(":"), rest.find("[")   # a split may hold a slice: train[:10]
    if colon != -1 and (bracket == -1 or colon < bracket):
        return DataSource(head, name=rest[:colon] or None, split=rest[colon + 1:] or None)
    return DataSource(head, split=rest or None)


def resolve_local(source: DataSource, base_dir: str | os.PathLike = ".") -> DataSource | None:
    """The source with a relative local path made to exist (working directory first, then
    `base_dir`), or None when it names nothing local (then it is a hub id, or missing)."""
    raw = Path(source.path).expanduser()
    candidates = [raw] if raw.is_absolute() else [raw, Path(base_dir) / raw]
    for c in candidates:
        if c.exists() or (_is_glob(str(c)) and globlib.glob(str(c), recursive=True)):
            return DataSource(str(c), source.name, source.split, source.data_files,
                              source.data_dir, source.revision)
    return None


def source_problem(value: Any, base_dir: str | os.PathLike = ".") -> tuple[Any, str | None]:
    """Recipe check (no data read): (the value with local paths resolved, problem or None)."""
    try:
        source = parse_source(value)
    except ValueError as exc:
        return value, str(exc)
    local = resolve_local(source, base_dir)
    if local is not None:
        if isinstance(value, Mapping):
            return {**value, "path": local.path}, None
        return (local.path if value == source.path else value), None
    if _is_glob(source.path):
        return value, f"'{source.path}' matches no files"
    if HUB_ID.match(source.path) and Path(source.path).suffix.lower() not in SUFFIXES:
        return value, None   # a hub id: whether it is reachable is checked before training
    return value, (f"'{source.path}' does not exist (looked in the working directory and in "
                   f"{base_dir}); a hub dataset id looks like org/name")


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def is_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


# --------------------------------------------------------------------------- opening

@dataclass
class Opened:
    """An opened source: the rows, how to name row i in a message, and a fingerprint that
    changes whenever the rows could have changed."""

    dataset: Any                       # datasets.Dataset
    label: str                         # how messages name the source
    locate: Any                        # i -> "file line N" / "source row N"
    fingerprint: str
    json_columns: tuple[str, ...] = ()  # columns held as JSON text (`decode_row`)


def open_source(value: str | Mapping | DataSource, *, role: str = "train",
                limit: int | None = None) -> Opened:
    """Open a data source as one split (`role` 'train' or 'eval' picks the default split)."""
    _quiet_datasets()
    source = parse_source(value)
    local = resolve_local(source)
    if local is not None:
        path = Path(local.path)
        if path.is_file():
            opened = _open_file(path, local)
        elif path.is_dir():
            opened = _open_folder(path, local, role)
        else:
            opened = _open_glob(local, role)
    elif _is_glob(source.path):
        raise DataError(f"{source.path}: matches no files")
    elif HUB_ID.match(source.path):
        opened = _open_hub(source, role)
    else:
        raise DataError(f"{source.path}: no such file or folder, and not a hub dataset id "
                        "(org/name)")
    if len(opened.dataset) == 0:
        raise DataError(f"{opened.label}: the data has no rows")
    if limit is not None and limit < len(opened.dataset):
        opened.dataset = opened.dataset.select(range(limit))
        opened.fingerprint = _hash(opened.fingerprint, "limit", limit)
    return opened


def _quiet_datasets() -> None:
    import datasets

    datasets.utils.logging.set_verbosity_error()
    if not os.isatty(2):
        datasets.disable_progress_bars()


def _load(label: str, *args, **kwargs):
    """`datasets.load_dataset`, its failures as one-line DataErrors."""
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; say it in one line
        raise DataError(f"{label}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:300] if text else type(exc).__name__)


def _file_stamp(paths: list[Path]) -> tuple:
    return tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


def _open_file(path: Path, source: DataSource) -> Opened:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unknown data format '{suffix}' (use one of "
                        f"{', '.join(SUFFIXES)}, a folder, a glob or a hub id)")
    label = str(path)
    stamp = _hash("file", _file_stamp([path]))
    if suffix == ".parquet":
        try:
            ds = _load(label, "parquet", data_files=str(path), split="train")
        except DataError:
            read_rows(path)   # "cannot read as parquet (...)"
            raise
        return Opened(ds, label, _row_locator(label), stamp)
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
        raise DataError(f"{path}: cannot be held as a table ({_first_line(exc)})") from None
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


def _row_locator(label: str):
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


def _open_folder(path: Path, source: DataSource, role: str) -> Opened:
    import datasets

    label = str(path)
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{path}: not readable as a folder written by datasets' "
                            f"save_to_disk ({_first_line(exc)})") from None
        if isinstance(ds, datasets.DatasetDict):
            split = _pick_split(list(ds), source, role, label)
            ds, label = ds[split], f"{path}:{split}"
        elif source.split:
            raise DataError(f"{path}: holds a single split; drop split '{source.split}'")
        return Opened(ds, label, _row_locator(label), _hash("disk", ds._fingerprint))
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
             and p.suffix.lower() in BUILDERS]
    if not files and source.data_files is None:
        raise DataError(f"{path}: no data files in the folder (looked for "
                        f"{', '.join(sorted(set(BUILDERS)))}, a README with `configs`, or "
                        "a save_to_disk folder)")
    return _open_split(label, source, role, str(path),
                       stamp=_file_stamp(sorted(files)) if files else None)


def _open_glob(source: DataSource, role: str) -> Opened:
    files = sorted(Path(p) for p in globlib.glob(source.path, recursive=True)
                   if Path(p).is_file())
    suffixes = {p.suffix.lower() for p in files}
    if not suffixes <= set(BUILDERS) or len(suffixes) != 1:
        raise DataError(f"{source.path}: the matched files must share one data format "
                        f"(found {', '.join(sorted(suffixes))}; allowed "
                        f"{', '.join(sorted(set(BUILDERS)))})")
    builder = BUILDERS[suffixes.pop()]
    glob_source = DataSource(builder, source.name, source.split or "train",
                             [str(p) for p in files])
    return _open_split(source.path, glob_source, role, builder, stamp=_file_stamp(files))


def _open_hub(source: DataSource, role: str) -> Opened:
    try:
        return _open_split(str(source), source, role, source.path)
    except DataError as exc:
        if is_offline() and ("offline" in str(exc).lower() or "couldn't reach" in
                             str(exc).lower() or "not cached" in str(exc).lower()):
            raise DataError(
                f"dataset '{source.path}' is not in the local datasets cache and the hub is "
                "offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE): fetch it once where there is "
                f"a network, e.g. python -c \"import datasets; datasets.load_dataset("
                f"'{source.path}'{f', {source.name!r}' if source.name else ''})\", or point "
                "data.train at a local copy") from None
        raise


def _open_split(label: str, source: DataSource, role: str, path: str,
                stamp: tuple | None = None) -> Opened:
    kwargs = {k: v for k, v in (("name", source.name), ("data_files", source.data_files),
                                ("data_dir", source.data_dir), ("revision", source.revision))
              if v is not None}
    loaded = _load(label, path, split=source.split, **kwargs)
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        split = _pick_split(list(loaded), source, role, label)
        loaded = loaded[split]
        label = f"{label}:{split}" if ":" not in label else label
    fingerprint = _hash("load", loaded._fingerprint, stamp)
    return Opened(loaded, label, _row_locator(label), fingerprint)


def _pick_split(splits: list[str], source: DataSource, role: str, label: str) -> str:
    if source.split:
        if source.split in splits:
            return source.split
        raise DataError(f"{label}: no split '{source.split}' (splits: {', '.join(splits)})")
    if len(splits) == 1:
        return splits[0]
    for name in (TRAIN_SPLITS if role == "train" else EVAL_SPLITS):
        if name in splits:
            return name
    raise DataError(f"{label}: holds the splits {', '.join(splits)}; say which one, e.g. "
                    f"{{path: {source.path}, split: {splits[0]}}} or {source.path}:"
                    f"{splits[0]}")


def _hash(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


__all__ = ["DataSource", "Opened", "is_offline", "open_source", "parse_source",
           "resolve_local", "source_problem"]
