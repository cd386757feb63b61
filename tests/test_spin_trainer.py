"""SPIN on tiny random Llamas (`hf` engine): iterations, the opponent, saved data, resume."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from alignment.config import ConfigError, recipe_from_dict
from alignment.data import DataError
from alignment.trainers.spin import SPINTrainer


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory, repo_root):
    rows = (repo_root / "data/arithmetic/add2_sft_plain/train.jsonl").read_text().splitlines()
    path = tmp_path_factory.mktemp("sft") / "sft.jsonl"
    path.write_text("\n".join(rows[:8]) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def eval_file(repo_root):
    return str(repo_root / "data/arithmetic/add2/test.jsonl")


def spin_recipe(out, model, sft, evals, **sections):
    base = {"algorithm": "spin", "output_dir": str(out),
            "model": {"name": model, "dtype": "float64"},
            "data": {"train": sft, "eval": evals, "eval_limit": 4, "max_prompt_length": 64,
                     "max_length": 96},
            "trainer": {"lr": 1e-3, "batch_size": 4, "save_every": None,
                        "scheduler": "constant", "seed": 5},
            "spin": {"iterations": 2, "epochs": 1, "lam": [0.1, 0.5]},
            "rollout": {"backend": "hf", "max_new_tokens": 20, "temperature": 1.0},
            "eval": {"before_after": False, "max_new_tokens": 8},
            "logging": {"report_to": [], "progress_bar": False}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe_from_dict(base)


def rows_of(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_iterations_regenerate_replace_the_opponent_and_save_data(
        tmp_path, tiny_model_dir, sft_file, eval_file, tokenizer):
    trainer = SPINTrainer(spin_recipe(tmp_path, tiny_model_dir, sft_file, eval_file))
    assert trainer.iteration_steps == [2, 2] and trainer.total_steps == 4
    trainer.train()
    steps = [r for r in rows_of(tmp_path) if "spin/iteration" in r]
    assert [r["spin/iteration"] for r in steps] == [0, 0, 1, 1]
    assert [r["spin/lambda"] for r in steps] == [0.1, 0.1, 0.5, 0.5]
    # θ = θ_t at the first step of EVERY iteration: the opponent was replaced
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-9)
    assert steps[2]["loss"] == pytest.approx(math.log(2), abs=1e-9)
    assert steps[1]["loss"] != pytest.approx(math.log(2), abs=1e-6)
    assert "spin/accuracy_after_iteration" in steps[1] and "spin/accuracy_after_iteration" \
        in steps[3]
    gens = []
    for t in (0, 1):
        folder = tmp_path / "spin" / f"iteration-{t}"
        assert (folder / "opponent_logps.pt").is_file() and (folder / "eval.json").is_file()
        rows = [json.loads(x) for x in (folder / "generated.jsonl").read_text().splitlines()]
        assert len(rows) == 8 and {"prompt", "real", "generated", "answer"} <= set(rows[0])
        gens.append([r["generated_ids"] for r in rows])
        eos = tokenizer.eos_token_id
        # real completions end where the engine ends: at EOS (not at the template's "\n"
        # after it), or cut at the generation budget like a generation that ran out
        for r in rows:
            assert eos not in r["real_ids"][:-1] and len(r["generated_ids"]) <= 20
            assert r["real_ids"][-1] == eos or len(r["real_ids"]) == 20
        assert sum(r["real_ids"][-1] == eos for r in rows) >= 4
    assert gens[0] != gens[1]   # iteration 1 sampled from θ_1, not θ_0


def test_resumed_run_reads_the_iteration_data_and_matches(tmp_path, tiny_model_dir, sft_file,
                                                          eval_file, monkeypatch):
    full = SPINTrainer(spin_recipe(tmp_path / "full", tiny_model_dir, sft_file, eval_file))
    full.train()
    # the same run stopped inside iteration 1 (step 3 of 4), then resumed
    part = SPINTrainer(spin_recipe(tmp_path / "part", tiny_model_dir, sft_file, eval_file,
                                   trainer={"max_steps": 3}))
    part.train()
    resumed = SPINTrainer(spin_recipe(tmp_path / "part", tiny_model_dir, sft_file, eval_file))

    def no_generation(t):
        raise AssertionError("a resumed run must not generate iteration data again")

    monkeypatch.setattr(resumed, "_generate", no_generation)
    resumed.train()
    a = torch.cat([p.detach().flatten() for p in full.policy.parameters()])
    b = torch.cat([p.detach().flatten() for p in resumed.policy.parameters()])
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    losses = lambda out: [r["loss"] for r in rows_of(out) if "spin/iteration" in r]  # noqa: E731
    assert losses(tmp_path / "full")[-1] == pytest.approx(losses(tmp_path / "part")[-1])


def test_mixing_the_previous_iteration(tmp_path, tiny_model_dir, sft_file, eval_file):
    trainer = SPINTrainer(spin_recipe(tmp_path, tiny_model_dir, sft_file, eval_file,
                                      spin={"mix_previous": 0.5}, data={"eval": None}))
    assert trainer.iteration_sizes() == [8, 12] and trainer.iteration_steps == [2, 3]
    trainer.train()
    rows = (tmp_path / "spin" / "iteration-1" / "generated.jsonl").read_text().splitlines()
    assert len(rows) == 12


def test_spin_needs_completions(tmp_path, tiny_model_dir, eval_file):
    with pytest.raises(DataError, match=re.escape(f"{eval_file}: SFT data needs a 'messages' "
                                                  "column, 'prompt' and 'completion' columns, "
                                                  "or a 'text' column")):
        SPINTrainer(spin_recipe(tmp_path, tiny_model_dir, eval_file, eval_file))


@pytest.mark.parametrize("trainer, spin, message", [
    ({"epochs": 2}, {}, "trainer.epochs (2) does not apply to spin: set spin.epochs"),
    ({}, {"lam": []}, "spin.lam must be a non-empty list of values > 0"),
    ({}, {"lam": [0.1, 0.1, 0.1], "iterations": 2}, "spin.lam has 3 values for "
     "spin.iterations=2"),
    ({}, {"itrations": 2}, "did you mean 'spin.iterations'"),
])
def test_bad_spin_recipes(trainer, spin, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        recipe_from_dict({"algorithm": "spin", "trainer": trainer, "spin": spin})
