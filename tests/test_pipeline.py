"""Pipelines (`first_stage`): a recipe that names its first stage is checked whole before
anything runs, and `alignment train` trains the stages in order from one command, resuming
whichever stage was interrupted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alignment.config import ConfigError, load_recipe

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _reward_model_stage(tmp_path: Path, **changes) -> Path:
    return _write(tmp_path / "rm.yaml", {
        "algorithm": "reward_model", "output_dir": str(tmp_path / "rm"),
        "data": {"train": str(ROOT / "data/arithmetic/add2_rm/train_answers.jsonl"),
                 "eval": None}, **changes})


def _grpo_on_the_reward_model(tmp_path: Path, first_stage: str | None, **changes) -> Path:
    recipe = {"algorithm": "grpo", "output_dir": str(tmp_path / "grpo"),
              "data": {"train": str(ROOT / "data/arithmetic/add2/train.jsonl"), "eval": None},
              "rewards": [{"name": "reward_model", "path": str(tmp_path / "rm")}], **changes}
    if first_stage is not None:
        recipe["first_stage"] = first_stage
    return _write(tmp_path / "grpo.yaml", recipe)


def test_stage_two_is_checked_before_stage_one_has_written_what_it_reads(tmp_path):
    stage_one = _reward_model_stage(tmp_path)
    # alone, the reward model it names is missing: refused at once
    with pytest.raises(ConfigError, match=r"rewards\[0\]\.path: reward model .*no such folder"):
        load_recipe(_grpo_on_the_reward_model(tmp_path, None))
    # with the stage that trains it, that folder is checked after the stage has run
    recipe = load_recipe(_grpo_on_the_reward_model(tmp_path, "rm.yaml"))  # (the recipe's folder)
    assert recipe.first_stage == str(stage_one)
    # ... but everything else in both stages is checked now
    with pytest.raises(ConfigError) as err:
        load_recipe(_grpo_on_the_reward_model(tmp_path, "rm.yaml", trainer={"lrr": 1}))
    assert "did you mean 'trainer.lr'" in str(err.value)
    _reward_model_stage(tmp_path, trainer={"max_step": 3})
    with pytest.raises(ConfigError) as err:
        load_recipe(_grpo_on_the_reward_model(tmp_path, "rm.yaml"))
    assert f"first_stage ({stage_one}): unknown key 'trainer.max_step'" in str(err.value)


def test_bad_pipelines_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="first_stage: 'nothere.yaml' does not exist"):
        load_recipe(_grpo_on_the_reward_model(tmp_path, "nothere.yaml"))
    _reward_model_stage(tmp_path, first_stage="grpo.yaml")          # a loop
    with pytest.raises(ConfigError, match=r"already a stage of this pipeline "
                                          r"\(grpo.yaml -> rm.yaml -> grpo.yaml\)"):
        load_recipe(_grpo_on_the_reward_model(tmp_path, "rm.yaml"))
    _reward_model_stage(tmp_path, output_dir=str(tmp_path / "grpo"))  # one folder for two
    with pytest.raises(ConfigError, match="writes to this recipe's output_dir"):
        load_recipe(_grpo_on_the_reward_model(tmp_path, "rm.yaml"))


def _train(recipe: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignment", "train", str(recipe)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_one_command_runs_both_stages_and_resumes_the_interrupted_one(tmp_path, tiny_model_dir):
    """SFT, then DPO from its model: stage one is killed (SIGKILL) after its second
    checkpoint; the same command resumes it there, then runs stage two; a third time it
    finds stage one trained and says so."""
    common = {"trainer": {"batch_size": 4, "max_steps": 4, "save_every": 2, "lr": 1e-4,
                          "memory_check": False},
              "eval": {"before_after": False}}
    sft = _write(tmp_path / "sft.yaml", {
        "algorithm": "sft", "output_dir": str(tmp_path / "sft"),
        "model": {"name": tiny_model_dir, "dtype": "float32"},
        "data": {"train": str(ROOT / "data/arithmetic/sft_columns/train.jsonl"),
                 "train_limit": 16, "eval": None}, **common})
    dpo = _write(tmp_path / "dpo.yaml", {
        "algorithm": "dpo", "output_dir": str(tmp_path / "dpo"), "first_stage": str(sft),
        "model": {"name": str(tmp_path / "sft"), "dtype": "float32"},
        "data": {"train_limit": 16, "eval": None}, **common})

    killed = _train(dpo, {"ALIGNMENT_KILL_AT": "step:4"})   # during stage one's 4th step
    assert killed.returncode == 128 + 9                       # SIGKILL, passed on
    assert f"first stage {sft} stopped" in killed.stderr and "resume" in killed.stderr
    assert not (tmp_path / "sft" / "final").exists() and not (tmp_path / "dpo").exists()

    done = _train(dpo)
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout + done.stderr
    assert f"first stage: training {sft}" in said
    assert "resuming from" in said and "step-000002 (step 2 of 4)" in said
    sft_steps = [json.loads(line)["step"] for line in
                 (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()
                 if "step_seconds" in line]
    assert sft_steps == [1, 2, 3, 4]                       # none lost, none done twice
    trained = yaml.safe_load((tmp_path / "dpo" / "final" / "recipe.yaml").read_text())
    assert trained["model"]["name"] == str(tmp_path / "sft")
    assert trained["first_stage"] == str(sft)

    again = _train(dpo)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"first stage {sft}: trained already, using {tmp_path / 'sft'}/final" in again.stderr
    assert "first stage: training" not in again.stderr


def test_under_an_outside_launcher_an_untrained_first_stage_is_an_error(tmp_path):
    from alignment.pipeline import StageError, run_first_stages

    _reward_model_stage(tmp_path)
    recipe = load_recipe(_grpo_on_the_reward_model(tmp_path, "rm.yaml"))
    with pytest.raises(StageError, match=r"is not trained yet .*rm/final is missing.*"
                                         r"alignment train .*rm.yaml"):
        run_first_stages(recipe, launched=True)


def test_a_trained_first_stage_is_used_and_its_changed_settings_named(tmp_path, capsys):
    from alignment.config import dump_recipe
    from alignment.pipeline import run_first_stages

    stage_one = _reward_model_stage(tmp_path, trainer={"lr": 1e-4})
    recipe = load_recipe(_grpo_on_the_reward_model(tmp_path, "rm.yaml"))
    final = tmp_path / "rm" / "final"   # as if trained since (a stand-in: not loaded)
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    (final / "recipe.yaml").write_text(dump_recipe(load_recipe(stage_one)))
    run_first_stages(recipe)   # trained: nothing runs
    assert capsys.readouterr().err.strip() == \
        f"first stage {stage_one}: trained already, using {tmp_path / 'rm'}/final"
    _reward_model_stage(tmp_path, trainer={"lr": 2e-4})   # the recipe edited since
    run_first_stages(recipe)
    said = capsys.readouterr().err
    assert "it was trained with other settings than" in said
    assert "trainer.lr: 0.0001 -> 0.0002 (delete" in said
