"""Load a recipe: YAML file + `key=value` overrides -> a validated `Recipe`.

Nothing here loads a model; `alignment check` runs only this. Every problem found is
reported (not just the first), each naming the dotted key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import string
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from alignment.config.checks import (
    PAIRS_OFFLINE_KEYS,
    PAIRS_ONLINE_KEYS,
    check_cross_fields,
    check_sections,
)
from alignment.config.schema import (
    ALGORITHMS,
    CRITIC,
    PAIRS_ONLINE,
    Recipe,
    is_online,
    uses_rewards,
    uses_rollout,
)
from alignment.config.stages import check_first_stage, inside_pending
from alignment.errors import not_utf8


class ConfigError(ValueError):
    """One or more problems in a recipe; `str()` lists them one per line."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        head = f"invalid recipe {source}:" if source else "invalid recipe:"
        super().__init__("\n".join([head, *("  " + p for p in problems)]))


def load_recipe(path: str | os.PathLike, overrides: typing.Sequence[str] = (), *,
                _chain: tuple[Path, ...] = ()) -> Recipe:
    """Read, override and validate a recipe file (and its `first_stage`, if it names one).
    `_chain`: the recipes that named this one as their first stage (to refuse a loop)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError([f"recipe file '{path}' is a folder, not a YAML file"])
    if not path.is_file():
        raise ConfigError([f"recipe file '{path}' does not exist"])
    raw = _read_yaml(path)
    if raw is None:
        raise ConfigError(["the file is empty (a recipe needs at least 'algorithm: ...')"],
                          str(path))
    if not isinstance(raw, dict):
        raise ConfigError(["the top level must be a mapping of keys (algorithm: ..., "
                           f"model: ...), got {type(raw).__name__}"], str(path))
    return recipe_from_dict(raw, overrides, base_dir=path.parent, source=str(path),
                            _chain=(*_chain, path.resolve()))


def _read_yaml(path: Path) -> Any:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([not_utf8(data, exc) + " (save the recipe as UTF-8)"],
                          str(path)) from None
    try:
        duplicates = _duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
        if duplicates:
            raise ConfigError(duplicates, str(path))
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], str(path)) from None


def _duplicate_keys(node: Any, prefix: str = "", path: frozenset = frozenset()) -> list[str]:
    """YAML keeps the last of two equal keys silently; a recipe says each key once. (Also
    refuses an anchor used inside itself, which would make the recipe infinitely deep.)"""
    if id(node) in path:
        return [f"{prefix.rstrip('.') or 'the recipe'}: a YAML alias refers to a list or "
                f"mapping that contains it (line {node.start_mark.line + 1})"]
    path = path | {id(node)}
    problems: list[str] = []
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            problems += _duplicate_keys(item, prefix, path)
    if not isinstance(node, yaml.MappingNode):
        return problems
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = prefix + str(key_node.value)
        line = key_node.start_mark.line + 1
        if isinstance(key_node, yaml.ScalarNode) and key in seen:
            problems.append(f"duplicate key '{key}' at line {line} (first at line "
                            f"{seen[key]}): give each key once")
        seen.setdefault(key, line)
        problems += _duplicate_keys(value_node, key + ".", path)
    return problems


def recipe_from_dict(raw: dict, overrides: typing.Sequence[str] = (), *,
                     base_dir: str | os.PathLike = ".", source: str | None = None,
                     _chain: tuple[Path, ...] = ()) -> Recipe:
    problems: list[str] = []
    raw = _apply_overrides(raw, overrides, problems)
    algorithm = raw.get("algorithm")
    for other in ALGORITHMS:
        if other != algorithm and other in raw and algorithm in ALGORITHMS:
            problems.append(f"section '{other}' does not apply to algorithm '{algorithm}' "
                            f"(put its hyper-parameters under '{algorithm}:')")
    if "critic" in raw and algorithm in ALGORITHMS and algorithm not in CRITIC:
        problems.append(f"section 'critic' applies to algorithms with a value model "
                        f"({', '.join(CRITIC)}), not '{algorithm}'")
    recipe = _build(Recipe, raw, "", problems)
    if not problems:
        check_sections(recipe, raw, problems)
        _check_output_dir(recipe.output_dir, problems)
    if not problems:
        # a folder an earlier stage will write is checked once that stage has run
        pending = check_first_stage(recipe, Path(base_dir), problems, _chain)
        _check_paths(recipe, "", Path(base_dir), problems, pending)
        check_cross_fields(recipe, problems, pending)
    if problems:
        raise ConfigError(problems, source)
    recipe.output_dir = recipe.output_dir.format(algorithm=recipe.algorithm)
    return recipe


def _check_output_dir(value: str, problems: list[str]) -> None:
    """output_dir is a template whose only field is {algorithm}."""
    if not value.strip():
        problems.append("output_dir: must not be empty (e.g. runs/{algorithm})")
        return
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as exc:   # a lone '{' or '}'
        problems.append(f"output_dir: {value!r} is not a valid template ({exc}); write "
                        "{{ and }} for a literal brace")
        return
    for _, name, spec, conversion in parsed:
        if name is not None and (name != "algorithm" or spec or conversion):
            field = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            problems.append(f"output_dir: unknown field '{{{field}}}' in {value!r} (allowed: "
                            "{algorithm})")


def recipe_to_dict(recipe: Recipe) -> dict:
    """The resolved recipe as plain data, without the sections of other algorithms."""
    data = dataclasses.asdict(recipe)
    for name in ALGORITHMS:
        if name != recipe.algorithm:
            data.pop(name, None)
    if not uses_rollout(recipe):
        data.pop("rollout", None)
    if not uses_rewards(recipe):
        data.pop("rewards", None)
    if not is_online(recipe):
        data.pop("environment", None)
    if recipe.algorithm in PAIRS_ONLINE:   # only the keys of this run's mode
        drop = PAIRS_OFFLINE_KEYS if is_online(recipe) else PAIRS_ONLINE_KEYS
        for key in drop:
            data[recipe.algorithm].pop(key, None)
    if recipe.algorithm not in CRITIC:
        data.pop("critic", None)
    return data


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)


def all_keys(cls: type = Recipe, prefix: str = "") -> list[str]:
    """Every valid dotted key of the schema (also used for did-you-mean)."""
    keys = []
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        keys.append(key)
        tp = _hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys.extend(all_keys(tp, key + "."))
    return keys


def describe_keys(cls: type = Recipe, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, type, help) for every leaf key, for `alignment check --keys`."""
    rows = []
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe_keys(tp, prefix + f.name + "."))
        else:
            rows.append((prefix + f.name, _type_name(tp), f.metadata.get("help", "")))
    return rows


# --------------------------------------------------------------------------- internals

def _apply_overrides(raw: dict, overrides: typing.Sequence[str], problems: list[str]) -> dict:
    raw = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            problems.append(f"override '{item}' is not of the form key=value "
                            "(e.g. trainer.lr=1e-5)")
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        if value is None and text.strip() not in ("null", "~", "None"):
            value = text  # '#...' is a YAML comment, but here the user meant the text
        node = raw
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(f"override '{item}': '{'.'.join(parts[:i + 1])}' is not a section")
                break
            node = child
        else:
            node[parts[-1]] = value
    return raw


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    where = prefix.rstrip(".") or "the recipe"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a section (mapping), got {data!r}")
        return cls() if cls is not Recipe else None
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if isinstance(key, str) and "." in key and prefix + key in all_keys():
            section, _, leaf = key.rpartition(".")
            problems.append(f"key '{prefix + key}' is written with dots: in a recipe file "
                            f"nest it ({section}: {{{leaf}: ...}}); dotted keys are for "
                            "key=value overrides")
        elif not isinstance(key, str) or key not in names:
            problems.append(_unknown_key_message(prefix + str(key)))
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        tp = hints[f.name]
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"missing required key '{key}'" + _choices_hint(tp))
            continue
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, data[f.name], key + ".", problems)
            continue
        try:
            value = _coerce(data[f.name], tp)
            _check_bounds(value, f.metadata)
        except _BadValue as exc:
            problems.append(f"{key}: {exc} (got {data[f.name]!r})")
            continue
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except TypeError:  # a required field was missing: already reported
        return None


class _BadValue(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        if len(inner) == 1:
            try:
                return _coerce(value, inner[0])
            except _BadValue as exc:
                raise _BadValue(f"{exc}, or null") from None
        for option in inner:   # e.g. 'auto' | float: the first option that takes the value
            try:
                return _coerce(value, option)
            except _BadValue:
                pass
        raise _BadValue("expected " + " or ".join(_kind(o) for o in inner))
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise _BadValue("must be one of " + ", ".join(repr(c) for c in choices))
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise _BadValue(f"expected a list of {_type_name(item_tp)}")
        items = []
        for i, v in enumerate(value):
            try:
                items.append(_coerce(v, item_tp))
            except _BadValue as exc:
                raise _BadValue(f"item {i}: {exc}") from None
        return items
    if tp is dict:
        if not isinstance(value, dict):
            raise _BadValue("expected a mapping")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _BadValue("expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _BadValue("expected an integer")
        return value
    if tp is float:
        # PyYAML reads `5e-6` (no dot) as a string; accept any float-looking string.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise _BadValue("expected a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _BadValue("expected a number")
        if not math.isfinite(value):
            raise _BadValue("expected a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _BadValue("expected a string")
        return value
    raise _BadValue(f"unsupported type {tp!r}")  # schema bug, not user error


def _check_bounds(value: Any, meta: typing.Mapping) -> None:
    if value is None or isinstance(value, (str, bool, list)):
        return
    if meta.get("gt") is not None and not value > meta["gt"]:
        raise _BadValue(f"must be > {meta['gt']}")
    if meta.get("ge") is not None and not value >= meta["ge"]:
        raise _BadValue(f"must be >= {meta['ge']}")
    if meta.get("le") is not None and not value <= meta["le"]:
        raise _BadValue(f"must be <= {meta['le']}")


def _check_paths(obj: Any, prefix: str, base_dir: Path, problems: list[str],
                 pending: tuple[str, ...] = ()) -> None:
    """Paths are relative to the working directory, else to the recipe's folder; one inside
    a folder an earlier stage has yet to write (`pending`) is left for then."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = prefix + f.name
        if key == "first_stage" or inside_pending(value, pending):
            continue
        if dataclasses.is_dataclass(value):
            if f.name in ALGORITHMS and f.name != getattr(obj, "algorithm", f.name):
                continue
            _check_paths(value, key + ".", base_dir, problems, pending)
        elif f.metadata.get("source") and value is not None:
            from alignment.data.sources import source_problem

            if key == "eval.data" and not obj.before_after:
                continue   # not read: no generation eval before/after

            resolved, problem = source_problem(value, base_dir)
            if problem:
                problems.append(f"{key}: {problem}")
            else:
                setattr(obj, f.name, resolved)
        elif f.metadata.get("path") and value is not None:
            found = _find_path(value, base_dir)
            if found is None:
                problems.append(f"{key}: '{value}' does not exist (looked in the working "
                                f"directory and in {base_dir})")
            else:
                setattr(obj, f.name, found)


def _find_path(value: str, base_dir: Path) -> str | None:
    candidates = [Path(value).expanduser()]
    if not candidates[0].is_absolute():
        candidates.append(base_dir / value)
    for c in candidates:
        if c.exists():
            return str(c)
    return None


def _unknown_key_message(key: str) -> str:
    parent, _, leaf = key.rpartition(".")
    keys = all_keys()
    siblings = [k for k in keys if k.rpartition(".")[0] == parent]
    # Compare leaf names (a shared 'model.lora.' prefix says nothing about similarity):
    # first within the same section, then anywhere (e.g. 'trainer.beta' -> 'dpo.beta').
    by_leaf = {k.rpartition(".")[2]: k for k in siblings}
    match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
    if match:
        return f"unknown key '{key}' — did you mean '{by_leaf[match[0]]}'?"
    elsewhere = [k for k in keys if k.rpartition(".")[2] == leaf]
    if elsewhere:
        return f"unknown key '{key}' — did you mean '{elsewhere[0]}'?"
    names = ", ".join(by_leaf)
    return f"unknown key '{key}' (allowed in '{parent or 'the top level'}': {names})"


def _choices_hint(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " (one of " + ", ".join(repr(c) for c in typing.get_args(tp)) + ")"
    return ""


def _kind(tp: Any) -> str:
    """A value of type `tp`, in words (for 'expected ...' messages)."""
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(c) for c in typing.get_args(tp))
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false"
            }.get(tp, _type_name(tp))


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return " | ".join(repr(c) for c in typing.get_args(tp))
    if origin is list:
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    return getattr(tp, "__name__", str(tp))
