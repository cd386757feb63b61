"""Checkpoints: written whole or not at all, found again on restart.

Layout of `output_dir/checkpoints/step-000050/`:
  model/            save_pretrained of the policy (the LoRA adapter alone when LoRA is on)
                    and its tokenizer: loadable as is
  critic/           the same for the value model (actor-critic trainers)
  trainer.pt        fp32 master weights, optimiser and scheduler state, RNG states of
                    every process (Python, NumPy, torch CPU and, when present, CUDA)
  trainer_state.json  step, epoch, position in the epoch, metric history
  recipe.yaml       the resolved recipe that produced it
  manifest.json     every other file's size and SHA-256, written last
The folder is assembled under a temporary name, fsynced (files, then folders) and renamed
into place (`atomic.replace_dir`); old checkpoints are renamed away before they are deleted.
So a SIGKILL at any moment leaves every `step-*` folder complete, and `remove_partial`
clears the hidden leftovers on restart. A resumed run checks its recipe against the
checkpoint's (`recipe_changes`). `bench/kill_resume.py` kills runs at random and at the
points of `alignment.faults` to show it.

What a kill cannot do, a disk or a copy can: a file truncated or lost afterwards, a folder
copied half-way. Resume therefore takes the newest checkpoint whose files match its
manifest (`choose_checkpoint`); a damaged one is named with the reason, and moved aside to
`step-N.damaged` so that pruning never keeps it in place of an intact one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from alignment import atomic, disk
from alignment.errors import TrainingError
from alignment.faults import fault_point, kill_point

STEP_DIR = re.compile(r"^step-(\d+)$")
MANIFEST = "manifest.json"


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Every `step-N` folder, oldest first (intact or not: see `damage`)."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def write_manifest(folder: Path) -> None:
    """manifest.json: size and SHA-256 of every file in `folder`, written last (its
    presence says the rest was complete)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        files[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size,
                                                       "sha256": digest}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def damage(folder: Path, hashes: bool = True) -> str | None:
    """Why the checkpoint in `folder` cannot be trusted, or None when every file matches
    its manifest (`hashes=False`: sizes only)."""
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return f"no {MANIFEST} (written incompletely, or copied without it)"
    except (ValueError, KeyError, TypeError):
        return f"{MANIFEST} is unreadable"
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != entry["bytes"]:
            return (f"{name} has {size:,} bytes, {entry['bytes']:,} when written"
                    f"{' (truncated)' if size < entry['bytes'] else ''}")
    for name, entry in files.items() if hashes else ():
        with (folder / name).open("rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != entry["sha256"]:
                return f"{name} differs from what was written (SHA-256 mismatch)"
    return None


def choose_checkpoint(output_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest intact checkpoint or None, [(newer damaged checkpoint, why)]). Stops
    (TrainingError) when checkpoints exist and none is intact: starting over would bury
    them."""
    skipped = []
    for folder in reversed(checkpoint_dirs(output_dir)):
        why = damage(folder)
        if why is None:
            return folder, skipped
        skipped.append((folder, why))
    if skipped:
        listed = "; ".join(f"{p.name}: {why}" for p, why in skipped)
        raise TrainingError(f"no intact checkpoint in {Path(output_dir) / 'checkpoints'} "
                            f"({listed}): move the folder away to start over")
    return None, []


def set_aside(folder: Path) -> Path:
    """Rename a damaged checkpoint to `step-N.damaged` (kept for inspection, never
    resumed from or pruned in place of an intact one)."""
    target = folder.with_name(folder.name + ".damaged")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.damaged{n}")
    os.replace(folder, target)
    return target


def remove_partial(output_dir: str | Path) -> None:
    """Delete the temporary folders a killed save left behind (never complete ones); a
    checkpoint a kill left renamed aside while being replaced is first put back."""
    root = Path(output_dir) / "checkpoints"
    if root.is_dir():
        atomic.restore_old(root)
        for p in root.iterdir():
            if p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest checkpoint whose files have the sizes its manifest lists."""
    dirs = [d for d in checkpoint_dirs(output_dir) if damage(d, hashes=False) is None]
    return dirs[-1] if dirs else None


def save_checkpoint(output_dir: str | Path, step: int, *, model, tokenizer, trainer_state: dict,
                    optimizer_state: dict, scheduler_state: dict, recipe_yaml: str,
                    keep: int, need: int = 0, extra_models: dict | None = None,
                    rng_states: list[dict] | None = None,
                    state_dicts: dict[str, dict] | None = None) -> Path:
    """`state_dicts`: each model's weights by name ("model", "critic"), where the module
    holds only a shard of them (FSDP2); default: the module's own. `need`: the bytes it is
    expected to take (checked against the free space first)."""
    target = Path(output_dir) / "checkpoints" / f"step-{step:06d}"
    with writing(output_dir, target, need) as tmp:
        for name, m in {"model": model, **(extra_models or {})}.items():
            m.save_pretrained(tmp / name, state_dict=(state_dicts or {}).get(name))
            tokenizer.save_pretrained(tmp / name)
        write_trainer_files(tmp, trainer_state, scheduler_state=scheduler_state,
                            recipe_yaml=recipe_yaml, optimizer_state=optimizer_state,
                            rng_states=rng_states)
    prune(output_dir, keep)
    return target


@contextlib.contextmanager
def writing(output_dir: str | Path, target: Path, need: int,
            tmp: Path | None = None) -> Iterator[Path]:
    """A temporary folder to write checkpoint `target` into; on success the manifest is
    added and it replaces `target` whole. Less free space than `need`, or a full disk
    during the writes, stops the run with one line (`disk.DiskFullError`) while the
    earlier checkpoints stay intact. `tmp`: a temporary folder already begun (DeepSpeed:
    every process has written its shard into it)."""
    what = f"checkpoint {target.name}"
    disk.require_space(target.parent, need, what, kept_clause(output_dir))
    with contextlib.ExitStack() as stack:
        if tmp is None:
            tmp = stack.enter_context(atomic.atomic_dir(target))
        with disk.disk_full_stops(target.parent, need, what, kept_clause(output_dir)):
            yield tmp
            write_manifest(tmp)
            kill_point("manifest")   # (crash tests: everything written but the rename)
    if tmp.exists():   # (begun by the caller: rename it into place here)
        atomic.replace_dir(tmp, target)


def kept_clause(output_dir: str | Path) -> str:
    """What is intact after a failed checkpoint write, and how to go on."""
    last = latest_checkpoint(output_dir)
    if last is None:
        return ("no checkpoint was written yet: free space, then run the same command "
                "(it starts over)")
    return (f"the last checkpoint, {last.name}, is intact: free space, then run the same "
            "command to resume from it")


def write_trainer_files(folder: Path, trainer_state: dict, *, scheduler_state: dict,
                        recipe_yaml: str, optimizer_state: dict | None = None,
                        rng_states: list[dict] | None = None) -> None:
    """trainer.pt (optimizer unless DeepSpeed holds it, scheduler, RNG states by rank;
    default: this process's), trainer_state.json and recipe.yaml."""
    blobs = {"scheduler": scheduler_state, "rng": rng_states or [rng_state()]}
    if optimizer_state is not None:
        blobs["optimizer"] = optimizer_state
    fault_point("fill_disk", folder.parent.parent)   # (disk tests: output_dir fills up)
    torch.save(blobs, folder / "trainer.pt")
    kill_point("checkpoint")   # (crash tests: a folder with weights but no state yet)
    (folder / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
    (folder / "recipe.yaml").write_text(recipe_yaml)


def publish(tmp: Path, target: Path, keep: int, need: int = 0) -> None:
    """Complete a checkpoint folder written by several processes (the manifest), rename it
    into place, then prune old ones."""
    output_dir = target.parent.parent
    with writing(output_dir, target, need, tmp=tmp):
        pass
    prune(output_dir, keep)


def prune(output_dir: str | Path, keep: int) -> None:
    for old in checkpoint_dirs(output_dir)[:-keep]:
        atomic.remove_dir(old)


def load_checkpoint(path: Path) -> tuple[dict, dict]:
    """(trainer_state, {optimizer, scheduler, rng}) of a checkpoint folder."""
    state = json.loads((path / "trainer_state.json").read_text())
    blobs = torch.load(path / "trainer.pt", map_location="cpu", weights_only=False)
    return state, blobs


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():   # one generator per visible device
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(saved: dict | list[dict], rank: int, world: int) -> None:
    """This process's RNG states from a checkpoint's (a list by rank; a dict: one process,
    older checkpoints). With another process count every process takes rank 0's."""
    states = saved if isinstance(saved, list) else [saved]
    set_rng_state(states[rank] if len(states) == world else states[0])


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    # (a checkpoint from another machine may have no or other CUDA devices: then the
    # CUDA streams start from the seed, and only GPU-side sampling can differ)
    if "cuda" in state and torch.cuda.is_available() \
            and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# Recipe keys a resumed run may change without changing what it computes: how long to go on,
# how often to save/log/evaluate, where it runs (launch, threads), what it reports. A key
# ending in "." covers its whole section.
RESUME_MAY_CHANGE = ("output_dir", "first_stage",   # (what made the model: model.name says which)
                     "trainer.max_steps", "trainer.epochs",
                     "trainer.save_every", "trainer.keep_checkpoints", "trainer.log_every",
                     "trainer.eval_every", "trainer.threads", "trainer.max_nan_steps",
                     "trainer.resume_ignore_changes", "data.eval", "data.eval_limit",
                     "eval.", "launch.", "logging.",
                     "trainer.memory_check",   # (a start-up check: changes no computation)
                     # memory budgets and the batch layout: same computation, other machine
                     "rollout.kv_cache_gb", "rollout.gpu_memory_utilization",
                     "rollout.timeout_s",
                     *(f"{name}.layout" for name in ("dpo", "ipo", "copg", "grpo", "ppo",
                                                     "apa", "drpo")))


def check_recipe(folder: Path, current_yaml: str, *, ignore: bool, say) -> None:
    """Stop (TrainingError) when the checkpoint in `folder` was written by another recipe:
    the resumed run would silently mix two configurations. `ignore`: say so and go on."""
    saved = folder / "recipe.yaml"
    if not saved.is_file():   # (written by a version that did not save it)
        return
    changes = recipe_changes(saved.read_text(), current_yaml)
    if not changes:
        return
    listed = "\n".join(f"  {c}" for c in changes)
    if ignore:
        say(f"note: resuming from {folder} with a changed recipe "
            f"(trainer.resume_ignore_changes=true):\n{listed}")
        return
    raise TrainingError(f"the recipe differs from the one that wrote {folder} "
                        f"(old -> new):\n{listed}\nresume with the old values, choose "
                        "another output_dir for a new run, or set "
                        "trainer.resume_ignore_changes=true to continue with the new ones")


def recipe_changes(saved_yaml: str, current_yaml: str) -> list[str]:
    """`key: old -> new` for every resolved-recipe key that differs, but those in
    RESUME_MAY_CHANGE."""
    import yaml

    old, new = _flat(yaml.safe_load(saved_yaml) or {}), _flat(yaml.safe_load(current_yaml))
    may = lambda key: any(key == k or (k.endswith(".") and key.startswith(k))  # noqa: E731
                          for k in RESUME_MAY_CHANGE)
    absent = "<absent>"
    return [f"{key}: {old.get(key, absent)} -> {new.get(key, absent)}"
            for key in sorted(old.keys() | new.keys())
            if not may(key) and old.get(key, absent) != new.get(key, absent)]


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
