"""`alignment eval` end to end, and recipes run as programs (`python recipes/x.yaml`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _run(args, cwd, timeout=300):
    return subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def test_eval_cli_writes_json_and_table(tiny_model_dir, repo_root, tmp_path):
    out_file = tmp_path / "eval.json"
    out = _run([sys.executable, "-m", "alignment", "eval", "--model", tiny_model_dir,
                "--data", "data/arithmetic/rl/test.jsonl", "--n", "12",
                "--max-new-tokens", "6", "--batch-size", "5", "--output", str(out_file)],
               repo_root)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out_file.read_text())
    assert result["n"] == 12
    assert sum(t["n"] for t in result["per_task"].values()) == 12
    assert 0.0 <= result["accuracy"] <= 1.0
    assert all(0 < len(s["completion"]) for s in result["samples"])
    assert "overall" in out.stdout and "accuracy" in out.stdout


def test_eval_cli_bad_data_is_clear(tiny_model_dir, repo_root, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "What is 2 + 2?"}\n')
    out = _run([sys.executable, "-m", "alignment", "eval", "--model", tiny_model_dir,
                "--data", str(bad)], repo_root)
    assert out.returncode == 2
    assert "missing column 'answer'" in out.stderr and str(bad) in out.stderr


@pytest.mark.bundled
def test_eval_bundled_model_greedy_is_deterministic(repo_root, tmp_path, bundled_model_dir):
    from alignment.evaluation import EvalSettings, evaluate

    settings = EvalSettings(limit=6, max_new_tokens=24, batch_size=3)
    first = evaluate("smollm2-135m", str(repo_root / "data/arithmetic/rl/test.jsonl"), settings)
    again = evaluate("smollm2-135m", str(repo_root / "data/arithmetic/rl/test.jsonl"), settings)
    completions = [s["completion"] for s in first["samples"]]
    assert completions == [s["completion"] for s in again["samples"]]
    assert any(s["extracted"] is not None for s in first["samples"])  # it answers with numbers


def test_recipe_file_runs_as_a_python_script(repo_root):
    """`python recipes/dpo.yaml` reaches `alignment train` (shown by its validation)."""
    out = _run([sys.executable, "recipes/dpo.yaml", "trainer.lrr=1"], repo_root)
    assert out.returncode == 2, out.stderr
    assert "did you mean 'trainer.lr'?" in out.stderr
    assert "SyntaxError" not in out.stderr


def test_non_recipe_yaml_is_left_to_python(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("just: some yaml\nnot: a recipe\n")
    out = _run([sys.executable, str(other)], tmp_path)
    assert out.returncode == 1 and "SyntaxError" in out.stderr


def test_accelerate_launch_recipe_literally(repo_root):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    assert accelerate, "accelerate is a dependency and must be installed"
    out = _run([accelerate, "launch", "--cpu", "--num_processes", "1", "recipes/ipo.yaml",
                "ipo.tau=-1"], repo_root)
    assert out.returncode != 0
    assert "ipo.tau: must be > 0.0 (got -1)" in out.stderr
