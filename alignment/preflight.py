"""Checks made before anything heavy starts: seconds, not the minutes a model load and the
reference log-probs take before a bad output folder or a missing column would surface.

    output_dir     not a file, creatable and writable
    disk           free space for one checkpoint (estimated from the model's parameter count)
    data           every data source opens, and its columns are right for the algorithm
                   (the column names only: no row is validated or tokenised here)
    memory         the run's estimated peak memory against what the machine has
                   (alignment/memory_estimate.py; trainer.memory_check=false skips it)

Each problem raises the error the command line turns into one line and exit status 2.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from pathlib import Path

from alignment.config import ConfigError, Recipe
from alignment.config.schema import CRITIC, is_online
from alignment.data import DataError

# bytes one checkpoint holds per trained parameter: the weights as saved (<= 4), and in
# trainer.pt the fp32 master copy (4) and AdamW's two fp32 moments (8)
CHECKPOINT_BYTES_PER_PARAM = 16


def preflight(recipe: Recipe) -> None:
    """Refuse, in one line each, what would fail later (see the module docstring)."""
    check_output_dir(recipe.output_dir)
    check_data(recipe)
    check_disk(recipe)
    check_memory(recipe)


def check_memory(recipe: Recipe) -> None:
    """The estimate of alignment/memory_estimate.py against this machine's free memory
    (skipped when the model is not a local folder yet). Not inside a launched process:
    the launching command checked all of its processes together, before starting them."""
    from alignment.launch import inside_launched_process
    from alignment.memory_check import check_memory as check

    if inside_launched_process():
        return
    estimate = check(recipe)
    if estimate is not None:
        print(estimate.one_line(), file=sys.stderr, flush=True)


def check_output_dir(output_dir: str) -> None:
    path = Path(output_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError([f"output_dir: '{output_dir}' is a file, not a folder"])
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError([f"output_dir: cannot create '{output_dir}': '{existing}' is a file, "
                           "not a folder"])
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be created ('{existing}' is " \
               "not writable)"
        raise ConfigError([f"output_dir: '{output_dir}' {what}"])


def data_roles(recipe: Recipe) -> list[tuple[str, object, str, str | None]]:
    """(recipe key, source, kind, answer column) of every data source the run reads."""
    name = recipe.algorithm
    online = is_online(recipe)
    train_kind = ("prompt" if online else "sft" if name in ("sft", "spin") else "preference")
    eval_kind = "prompt" if online or name == "spin" else train_kind
    roles = [("data.train", recipe.data.train, train_kind, None)]
    if recipe.data.eval is not None:
        roles.append(("data.eval", recipe.data.eval, eval_kind,
                      "answer" if eval_kind == "prompt" else None))
    if recipe.eval.before_after and name not in ("reward_model",):
        roles.append(("eval.data", recipe.eval.data, "prompt", "answer"))
    if name in CRITIC and getattr(recipe, name).ptx_coef > 0:   # PPO-ptx: SFT rows
        roles.append((f"{name}.ptx_data", getattr(recipe, name).ptx_data, "sft", None))
    return roles


def check_data(recipe: Recipe) -> None:
    """Each source opens (a hub id: cached or reachable) and has the kind's columns, plus the
    columns the recipe's rewards read for online training data."""
    from alignment.data.formats import check_kind_columns
    from alignment.data.sources import open_source

    for key, source, kind, answer in data_roles(recipe):
        role = "eval" if key in ("data.eval", "eval.data") else "train"
        try:
            opened = open_source(source, role=role)
        except DataError as exc:
            raise DataError(f"{key}: {exc}") from None
        columns = set(opened.dataset.column_names)
        check_kind_columns(columns, kind, f"{key}: {opened.label}", answer)
        if key == "data.train" and kind == "prompt":
            from reward_models.registry import data_columns

            for column, part in data_columns(recipe.rewards).items():
                if column not in columns:
                    raise DataError(f"{key}: {opened.label}: missing column '{column}', which "
                                    f"the reward '{part}' reads (found: "
                                    f"{', '.join(sorted(columns))})")
        if key == "data.train" and recipe.algorithm == "drpo" and \
                recipe.drpo.reset_column not in columns:
            raise DataError(f"{key}: {opened.label}: missing column "
                            f"'{recipe.drpo.reset_column}' (drpo.reset_column) to reset into")


def check_disk(recipe: Recipe) -> None:
    """Free space where output_dir lives against one checkpoint's estimated size (skipped
    when the model is not a local folder yet: the bundled model before its conversion)."""
    params = parameter_count(recipe.model.name)
    if params is None:
        return
    trained = params * (2 if recipe.algorithm in CRITIC and recipe.critic.lora.r == 0 else 1)
    if recipe.model.lora.r > 0:   # adapters only (and the critic's full weights, if any)
        trained = params * (1 if recipe.algorithm in CRITIC and recipe.critic.lora.r == 0
                            else 0) + params // 100
    need = trained * CHECKPOINT_BYTES_PER_PARAM
    path = Path(recipe.output_dir).expanduser()
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free
    if free < need:
        raise ConfigError([f"output_dir: one checkpoint needs about {_gb(need)} "
                           f"({params / 1e6:.0f}M parameters x {CHECKPOINT_BYTES_PER_PARAM} "
                           "bytes: weights, fp32 master copy, AdamW moments) but "
                           f"{path} has {_gb(free)} free"])


def model_folder(name: str) -> Path | None:
    """The local folder of model `name` (the bundled model's once converted, a training
    output's final/), without converting or downloading anything; None when not local."""
    from alignment.models import BUNDLED, cache_dir

    if name in BUNDLED:
        folder = cache_dir() / "models" / BUNDLED[name][2]
    else:
        folder = Path(name).expanduser()
        if folder.is_dir() and not (folder / "config.json").is_file():
            folder = folder / "final"
    return folder if (folder / "config.json").is_file() else None


def parameter_count(name: str) -> int | None:
    """Parameters of a local model folder, from its safetensors headers (no weights read),
    else from the weight files' sizes and config dtype; None when it is not local."""
    folder = model_folder(name)
    if folder is None:
        return None
    tensors = sorted(folder.glob("*.safetensors"))
    if tensors:
        return sum(_safetensors_numel(f) for f in tensors)
    bins = sorted(folder.glob("*.bin"))
    if not bins:
        return None
    return sum(f.stat().st_size for f in bins) // 4


def _safetensors_numel(path: Path) -> int:
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    total = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        n = 1
        for dim in entry["shape"]:
            n *= dim
        total += n
    return total


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"
