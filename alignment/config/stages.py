"""A pipeline's stages (`first_stage`): the first stage checked before anything runs, when
a stage counts as trained, and which paths of a later stage wait for an earlier one."""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any

from alignment.config.schema import Recipe


def stage_trained(output_dir: str | os.PathLike) -> bool:
    """Whether a training run's output_dir holds its exported model (final/): a pipeline's
    earlier stage is then not run again."""
    return (Path(output_dir).expanduser() / "final" / "config.json").is_file()


def inside_pending(value: Any, pending: typing.Sequence[str]) -> bool:
    """Whether `value` is a path inside (or equal to) one of the `pending` folders."""
    if not isinstance(value, str) or not pending:
        return False
    target = Path(value).expanduser().resolve()
    return any(target.is_relative_to(Path(p).expanduser().resolve()) for p in pending)


def check_first_stage(recipe: Recipe, base_dir: Path, problems: list[str],
                 chain: tuple[Path, ...]) -> tuple[str, ...]:
    """Validate the recipe's first stage (and its own, recursively) now, before anything
    runs; returns the output folders of the stages not trained yet."""
    from alignment.config.loader import ConfigError, _find_path, load_recipe  # (it calls us)

    if recipe.first_stage is None:
        return ()
    found = _find_path(recipe.first_stage, base_dir)
    if found is None:
        problems.append(f"first_stage: '{recipe.first_stage}' does not exist (looked in the "
                        f"working directory and in {base_dir})")
        return ()
    recipe.first_stage = found
    if Path(found).resolve() in chain:
        names = " -> ".join(p.name for p in (*chain, Path(found).resolve()))
        problems.append(f"first_stage: '{found}' is already a stage of this pipeline "
                        f"({names}): each stage runs once")
        return ()
    try:
        stage = load_recipe(found, _chain=chain)
    except ConfigError as exc:
        problems.extend(f"first_stage ({found}): {p}" for p in exc.problems)
        return ()
    output_dir = recipe.output_dir.format(algorithm=recipe.algorithm)
    if Path(stage.output_dir).resolve() == Path(output_dir).resolve():
        problems.append(f"first_stage: '{found}' writes to this recipe's output_dir "
                        f"({output_dir}): each stage needs a folder of its own")
        return ()
    own = _pending_stages(stage)
    return own if stage_trained(stage.output_dir) else (stage.output_dir, *own)


def _pending_stages(stage: Recipe) -> tuple[str, ...]:
    """The output folders, not trained yet, of the stages before `stage`."""
    pending: list[str] = []
    while stage.first_stage is not None:
        from alignment.config.loader import load_recipe

        stage = load_recipe(stage.first_stage)
        if not stage_trained(stage.output_dir):
            pending.append(stage.output_dir)
    return tuple(pending)
