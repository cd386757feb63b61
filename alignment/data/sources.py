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

Local files are read by `alignment.data.local_files` (jsonl through Arrow's own reader, the
rest through the strict reader when Arrow cannot take them as they are). Row locations in
messages are `file line N` for jsonl and csv, `source row N` otherwise.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.data.io import SUFFIXES, DataError
from alignment.data.local_files import (
    Opened,
    file_stamp,
    first_line,
    open_file,
    row_locator,
)

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

def open_source(value: str | Mapping | DataSource, *, role: str = "train",
                limit: int | None = None) -> Opened:
    """Open a data source as one split (`role` 'train' or 'eval' picks the default split)."""
    _quiet_datasets()
    source = parse_source(value)
    local = resolve_local(source)
    if local is not None:
        path = Path(local.path)
        if path.is_file():
            opened = open_file(path)
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
        raise DataError(f"{label}: {first_line(exc)}") from None


def _open_folder(path: Path, source: DataSource, role: str) -> Opened:
    import datasets

    label = str(path)
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{path}: not readable as a folder written by datasets' "
                            f"save_to_disk ({first_line(exc)})") from None
        if isinstance(ds, datasets.DatasetDict):
            split = _pick_split(list(ds), source, role, label)
            ds, label = ds[split], f"{path}:{split}"
        elif source.split:
            raise DataError(f"{path}: holds a single split; drop split '{source.split}'")
        return Opened(ds, label, row_locator(label), _hash("disk", ds._fingerprint))
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
             and p.suffix.lower() in BUILDERS]
    if not files and source.data_files is None:
        raise DataError(f"{path}: no data files in the folder (looked for "
                        f"{', '.join(sorted(set(BUILDERS)))}, a README with `configs`, or "
                        "a save_to_disk folder)")
    return _open_split(label, source, role, str(path),
                       stamp=file_stamp(sorted(files)) if files else None)


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
    return _open_split(source.path, glob_source, role, builder, stamp=file_stamp(files))


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
    return Opened(loaded, label, row_locator(label), fingerprint)


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
