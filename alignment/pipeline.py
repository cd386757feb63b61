"""Run a recipe's earlier stages first (`first_stage`), so a two-stage pipeline is one
command:

    alignment train recipes/grpo_mix_columns.yaml   # SFT (recipes/sft_mix.yaml), then GRPO

A stage whose output_dir holds its exported model (final/) is done and not run again; one
that was interrupted resumes from its last checkpoint, as any run does when the same
command is given again. Each earlier stage runs as its own `alignment train` process: it
launches itself as it would alone (processes, DeepSpeed) and hands its memory back before
the next stage starts.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from alignment.config import Recipe, load_recipe
from alignment.config.loader import recipe_to_dict
from alignment.config.stages import stage_trained


class StageError(RuntimeError):
    """An earlier stage failed or cannot be run from here; the message says how to go on.
    `status`: the exit status to end with (the stage's own, when it ran and failed)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


def run_first_stages(recipe: Recipe, *, launched: bool = False) -> None:
    """Train `recipe.first_stage` (after its own first stage, and so on) unless it is
    trained already. `launched`: this process was started by an outside launcher, which
    runs one recipe only: an untrained first stage is then an error naming the command."""
    if recipe.first_stage is None:
        return
    path = recipe.first_stage
    stage = load_recipe(path)
    if stage_trained(stage.output_dir):
        if not launched:   # (not once per process of a launch)
            _say_trained(path, stage)
        return
    if launched:
        raise StageError(f"first_stage {path} is not trained yet ({stage.output_dir}/final "
                         "is missing), and a launcher started this process for one recipe: "
                         f"train it first (`alignment train {path}`), or let `alignment "
                         "train` run both stages")
    print(f"first stage: training {path} -> {stage.output_dir} (it resumes from its last "
          "checkpoint if it was interrupted)", file=sys.stderr, flush=True)
    status = _run([sys.executable, "-m", "alignment", "train", path])
    if status < 0:   # killed by a signal: the shell's convention, 128 + its number
        status = 128 - status
    if status != 0:
        raise StageError(f"first stage {path} stopped with status {status}: run the same "
                         "command to resume it", status)
    if not stage_trained(stage.output_dir):
        raise StageError(f"first stage {path} ended without writing {stage.output_dir}/final")


def plan(recipe: Recipe, path: str) -> str:
    """The pipeline in a few lines, earliest stage first, each trained or still to train."""
    stages = [(path, recipe)]
    while stages[0][1].first_stage is not None:
        first = stages[0][1].first_stage
        stages.insert(0, (first, load_recipe(first)))
    lines = []
    for i, (where, stage) in enumerate(stages, 1):
        state = ("this recipe" if i == len(stages) else
                 "trained" if stage_trained(stage.output_dir) else "to train first")
        lines.append(f"stage {i} of {len(stages)}: {where} -> {stage.output_dir} ({state})")
    return "\n".join(lines)


def _run(command: list[str]) -> int:
    """The stage's exit status. A Ctrl-C reaches the stage too (same process group): let
    it stop cleanly (it saves what it can) instead of killing it; a SIGTERM sent to this
    process alone is passed on to it."""
    child = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, lambda sig, frame: child.send_signal(sig))
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _say_trained(path: str, stage: Recipe) -> None:
    """One line: the stage is done; and, when its model was trained from other settings
    than its recipe now says (edited, or trained with overrides), which ones."""
    import yaml

    final = f"{stage.output_dir}/final"
    try:
        trained = yaml.safe_load(open(f"{final}/recipe.yaml", encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        trained = None
    changed = _changed_keys(trained, recipe_to_dict(stage)) if isinstance(trained, dict) else []
    note = (f"; it was trained with other settings than {path} now gives: "
            + ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
            + f" (delete {stage.output_dir} to train it again)") if changed else ""
    print(f"first stage {path}: trained already, using {final}{note}", file=sys.stderr,
          flush=True)


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every leaf that differs (the first stage's own first_stage
    path, resolved differently from another folder, is not a change of settings)."""
    changed = []
    for key in new:
        where = prefix + str(key)
        if where == "first_stage":
            continue
        a, b = old.get(key), new[key]
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_keys(a, b, where + ".")
        elif a != b:
            changed.append(f"{where}: {a!r} -> {b!r}")
    return changed
