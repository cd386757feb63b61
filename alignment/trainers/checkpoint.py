"""Checkpoints: written whole or not at all, found again on restart.

Layout of `output_dir/checkpoints/step-000050/`:
  model/            save_pretrained of the policy (the LoRA adapter alone when LoRA is on)
                    and its tokenizer: loadable as is
  critic/           the same for the value model (actor-critic trainers)
  trainer.pt        fp32 master weights, optimiser and scheduler state, RNG states
  trainer_state.json  step, epoch, position in the epoch, metric history
  recipe.yaml       the resolved recipe that produced it
The folder is assembled under a temporary name and renamed into place (`atomic_dir`), so a
SIGKILL at any moment leaves either the previous checkpoints or the new one complete.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from alignment import atomic

STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := STEP_DIR.match(p.name)) and (p / "trainer_state.json").is_file()]
    return [p for _, p in sorted(found)]


def remove_partial(output_dir: str | Path) -> None:
    """Delete the temporary folders a killed save left behind (never complete ones)."""
    root = Path(output_dir) / "checkpoints"
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    dirs = checkpoint_dirs(output_dir)
    return dirs[-1] if dirs else None


def save_checkpoint(output_dir: str | Path, step: int, *, model, tokenizer, trainer_state: dict,
                    optimizer_state: dict, scheduler_state: dict, recipe_yaml: str,
                    keep: int, extra_models: dict | None = None) -> Path:
    target = Path(output_dir) / "checkpoints" / f"step-{step:06d}"
    with atomic.atomic_dir(target) as tmp:
        for name, m in {"model": model, **(extra_models or {})}.items():
            m.save_pretrained(tmp / name)
            tokenizer.save_pretrained(tmp / name)
        write_trainer_files(tmp, trainer_state, scheduler_state=scheduler_state,
                            recipe_yaml=recipe_yaml, optimizer_state=optimizer_state)
    prune(output_dir, keep)
    return target


def write_trainer_files(folder: Path, trainer_state: dict, *, scheduler_state: dict,
                        recipe_yaml: str, optimizer_state: dict | None = None) -> None:
    """trainer.pt (optimizer unless DeepSpeed holds it, scheduler, RNG), trainer_state.json
    and recipe.yaml."""
    blobs = {"scheduler": scheduler_state, "rng": rng_state()}
    if optimizer_state is not None:
        blobs["optimizer"] = optimizer_state
    torch.save(blobs, folder / "trainer.pt")
    (folder / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
    (folder / "recipe.yaml").write_text(recipe_yaml)


def publish(tmp: Path, target: Path, keep: int) -> None:
    """Rename a completely written checkpoint folder into place, then prune old ones."""
    if target.exists():
        shutil.rmtree(target)
    tmp.replace(target)
    prune(target.parent.parent, keep)


def prune(output_dir: str | Path, keep: int) -> None:
    for old in checkpoint_dirs(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path) -> tuple[dict, dict]:
    """(trainer_state, {optimizer, scheduler, rng}) of a checkpoint folder."""
    state = json.loads((path / "trainer_state.json").read_text())
    blobs = torch.load(path / "trainer.pt", map_location="cpu", weights_only=False)
    return state, blobs


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
