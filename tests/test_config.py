"""Recipe validation: every malformed recipe gets a message naming key, value and rule."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from alignment.config import ConfigError, all_keys, load_recipe, recipe_from_dict, recipe_to_dict

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def _problems(tmp_path, text: str, overrides=()) -> str:
    with pytest.raises(ConfigError) as err:
        load_recipe(_write(tmp_path, text), overrides)
    return str(err.value)


MALFORMED = [
    # (recipe text, override list, substrings the message must contain)
    ("algorithm: dpo\ntrainer:\n  lrr: 1\n", [],
     ["unknown key 'trainer.lrr' — did you mean 'trainer.lr'?"]),
    ("algorithm: dpo\ntrainer:\n  beta: 0.2\n", [],
     ["unknown key 'trainer.beta' — did you mean 'dpo.beta'?"]),
    ("algorithm: dpo\ntrainr:\n  lr: 1\n", [], ["unknown key 'trainr' — did you mean 'trainer'?"]),
    ("algorithm: dpo\nmodel:\n  lora:\n    rank: 8\n", [],
     ["unknown key 'model.lora.rank' (allowed in 'model.lora': r, alpha, dropout"]),
    ("algorithm: dpo\nmodel:\n  lora:\n    zzz: 8\n", [],
     ["unknown key 'model.lora.zzz' (allowed in 'model.lora': r, alpha, dropout"]),
    ("algorithm: dpx\n", [], ["algorithm: must be one of 'dpo', 'ipo'", "'dpx'"]),
    ("model:\n  name: x\n", [], ["missing required key 'algorithm'"]),
    ("algorithm: dpo\ntrainer:\n  lr: fast\n", [], ["trainer.lr: expected a number", "'fast'"]),
    ("algorithm: dpo\ntrainer:\n  lr: -1.0e-5\n", [], ["trainer.lr: must be > 0.0", "-1e-05"]),
    ("algorithm: dpo\ntrainer:\n  batch_size: 2.5\n", [],
     ["trainer.batch_size: expected an integer", "2.5"]),
    ("algorithm: dpo\ntrainer:\n  batch_size: 0\n", [], ["trainer.batch_size: must be > 0"]),
    ("algorithm: dpo\ntrainer:\n  epochs: true\n", [], ["trainer.epochs: expected an integer"]),
    ("algorithm: dpo\nmodel:\n  gradient_checkpointing: 'yes'\n", [],
     ["model.gradient_checkpointing: expected true or false", "'yes'"]),
    ("algorithm: dpo\nmodel:\n  dtype: fp8\n", [],
     ["model.dtype: must be one of 'auto', 'bfloat16', 'float32', 'float16', 'float64'",
      "'fp8'"]),
    ("algorithm: dpo\ntrainer:\n  optimizer: adam\n", [], ["trainer.optimizer: must be one of"]),
    ("algorithm: dpo\nmodel:\n  lora:\n    target_modules: q_proj\n", [],
     ["model.lora.target_modules: expected a list of str"]),
    ("algorithm: dpo\ntrainer: 5\n", [], ["trainer: expected a section (mapping)"]),
    ("algorithm: dpo\ndpo:\n  beta: 0\n", [], ["dpo.beta: must be > 0.0"]),
    ("algorithm: dpo\nipo:\n  tau: 0.1\n", [], ["section 'ipo' does not apply to algorithm 'dpo'"]),
    ("algorithm: ipo\nipo:\n  normalize: token\n", [],
     ["ipo.normalize: must be one of 'sum', 'mean'"]),
    ("algorithm: dpo\ndata:\n  train: no/such/file.jsonl\n", [],
     ["data.train: 'no/such/file.jsonl' does not exist"]),
    ("algorithm: dpo\ndata:\n  max_length: 64\n  max_prompt_length: 64\n", [],
     ["data.max_prompt_length (64) must be smaller than data.max_length (64)"]),
    ("algorithm: dpo\ndata:\n  too_long: cut\n", [], ["data.too_long: must be one of 'skip'"]),
    ("algorithm: dpo\nmodel:\n  lora:\n    dropout: 0.1\n", [], ["LoRA is off"]),
    ("algorithm: dpo\ntrainer:\n  lr: 0.1\n", ["trainer.lr.x=1"],
     ["'trainer.lr' is not a section"]),
    ("algorithm: dpo\n", ["trainer.lrr=1"], ["did you mean 'trainer.lr'?"]),
    ("algorithm: dpo\n", ["trainer.lr"], ["override 'trainer.lr' is not of the form key=value"]),
    ("algorithm: dpo\n", ["trainer.lr.x=1"], ["trainer.lr: expected a number (got {'x': 1})"]),
    ("- just\n- a list\n", [], ["the top level must be a mapping"]),
    ("algorithm: dpo\ntrainer: {lr: [1, 2\n", [], ["not valid YAML"]),
    ("algorithm: grpo\nrollout:\n  kv_cache_gb: lots\n", [],
     ["rollout.kv_cache_gb: expected 'auto' or a number (got 'lots')"]),
    ("algorithm: grpo\nrollout:\n  kv_cache_gb: 0\n", [], ["rollout.kv_cache_gb: must be > 0.0"]),
    ("algorithm: grpo\ngrpo:\n  layout: rows\n", [],
     ["grpo.layout: must be one of 'auto', 'grouped', 'separate'", "'rows'"]),
    ("algorithm: dpo\ndpo:\n  layout: separate\n", [],
     ["dpo.layout applies only with dpo.online: true"]),
]


@pytest.mark.parametrize("text, overrides, expected", MALFORMED)
def test_malformed_recipe(tmp_path, monkeypatch, text, overrides, expected):
    monkeypatch.chdir(ROOT)  # data paths in defaults are relative to the repository
    message = _problems(tmp_path, text, overrides)
    for piece in expected:
        assert piece in message, message


def test_all_problems_reported_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    message = _problems(tmp_path, "algorithm: dpo\ntrainer:\n  lr: x\n  batch_size: -1\n"
                                  "model:\n  dtype: fp8\n")
    assert "trainer.lr" in message and "trainer.batch_size" in message and "model.dtype" in message


def test_float_forms_and_overrides(monkeypatch):
    monkeypatch.chdir(ROOT)
    recipe = recipe_from_dict({"algorithm": "dpo", "trainer": {"lr": "5e-6"}},
                              ["trainer.batch_size=4", "model.lora.r=16", "data.eval=null",
                               "dpo.beta=0.5"])
    assert recipe.trainer.lr == 5e-6          # PyYAML reads 5e-6 as a string: accepted
    assert recipe.trainer.batch_size == 4
    assert recipe.model.lora.r == 16
    assert recipe.data.eval is None
    assert recipe.dpo.beta == 0.5
    assert recipe.output_dir == "runs/dpo"


def test_resolved_dict_hides_other_algorithms(monkeypatch):
    monkeypatch.chdir(ROOT)
    data = recipe_to_dict(recipe_from_dict({"algorithm": "ipo"}))
    assert "ipo" in data and "dpo" not in data
    # the printed form round-trips: a resolved recipe is itself a valid recipe
    again = recipe_from_dict(yaml.safe_load(yaml.safe_dump(data)))
    assert recipe_to_dict(again) == data


def test_paths_relative_to_recipe_folder(tmp_path, monkeypatch):
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    monkeypatch.chdir(ROOT)
    recipe = load_recipe(_write(tmp_path, "algorithm: dpo\ndata:\n  train: pairs.jsonl\n"))
    assert Path(recipe.data.train) == tmp_path / "pairs.jsonl"


def test_every_key_is_documented():
    from alignment.config import describe_keys

    rows = describe_keys()
    assert len(rows) > 30
    missing = [key for key, _, help_text in rows if not help_text]
    assert not missing, f"undocumented keys: {missing}"
    assert "trainer.lr" in all_keys()


@pytest.fixture(scope="module")
def shipped() -> dict:
    """Every shipped recipe, loaded (and so validated) once: {file: Recipe}. A folder that
    a recipe's first stage writes (a model, a reward model) is checked once it exists."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        return {r: load_recipe(r) for r in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_shipped_recipes_validate(recipe, shipped):
    # every recipe starts from the bundled default, or is stage two of a documented
    # pipeline that names its first stage (e.g. GRPO after SFT): its model, or its reward
    # model, is what that stage trains from the bundled one
    r = shipped[recipe]
    reads = {r.model.name, *(spec.get("path") for spec in r.rewards
                             if spec.get("name") == "reward_model")} - {None}
    if r.first_stage is None:
        assert reads == {"smollm2-135m"}, reads
        return
    stage_one = shipped[ROOT / r.first_stage]   # (relative to the repository)
    assert stage_one.model.name == "smollm2-135m" and stage_one.first_stage is None
    assert stage_one.output_dir in reads, (stage_one.output_dir, reads)
    assert reads <= {"smollm2-135m", stage_one.output_dir}


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "alignment", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_cli_check_did_you_mean_is_fast():
    start = time.perf_counter()
    out = _cli("check", "recipes/dpo.yaml", "trainer.lrr=1")
    elapsed = time.perf_counter() - start
    assert out.returncode == 2
    assert "unknown key 'trainer.lrr' — did you mean 'trainer.lr'?" in out.stderr
    assert elapsed < 10


def test_cli_check_wrong_type_names_key_value_and_type():
    out = _cli("check", "recipes/dpo.yaml", "trainer.batch_size=many")
    assert out.returncode == 2
    assert "trainer.batch_size: expected an integer (got 'many')" in out.stderr


def test_cli_check_prints_resolved_recipe():
    out = _cli("check", "recipes/ipo.yaml", "ipo.tau=0.05")
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    assert printed["algorithm"] == "ipo" and printed["ipo"]["tau"] == 0.05


def test_cli_check_keys_lists_schema():
    out = _cli("check", "--keys")
    assert out.returncode == 0
    assert "trainer.lr" in out.stdout and "model.lora.r" in out.stdout
