"""Pairs from the policy's own samples (online DPO / IPO / CoPG) and offline CoPG, on tiny
random Llamas with the `hf` rollout backend."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from alignment.config import ConfigError, recipe_from_dict
from alignment.data import DataError
from alignment.trainers import TRAINERS, trainer_key
from alignment.trainers.copg import CoPGTrainer, OnlineCoPGTrainer
from alignment.trainers.dpo import OnlineDPOTrainer
from alignment.trainers.ipo import OnlineIPOTrainer
from alignment.trainers.online import Sample
from alignment.trainers.pair_sampling import select_pairs
from alignment.trainers.sequences import group_token_logps


def char_reward(prompts, completions, rows):
    """Longer text scores higher: a reward a random model's samples always spread over."""
    return [len(c) / 10 for c in completions]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory, repo_root):
    rows = [json.loads(x) for x in
            (repo_root / "data/arithmetic/preference/train.jsonl").read_text().splitlines()[:12]]
    for i, row in enumerate(rows):
        row["chosen_reward"], row["rejected_reward"] = 1.0, [0.0, 0.5, 1.0][i % 3]
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def online_recipe(out, model, prompts, algorithm="dpo", **sections):
    base = {"algorithm": algorithm, "output_dir": str(out),
            "model": {"name": model, "dtype": "float64"},
            "data": {"train": prompts, "eval": prompts, "eval_limit": 4,
                     "max_prompt_length": 96, "max_length": 128},
            "trainer": {"lr": 1e-3, "batch_size": 8, "max_steps": 2, "save_every": None,
                        "scheduler": "constant", "seed": 3},
            algorithm: {"online": True, "prompts_per_step": 2, "num_generations": 4},
            "rollout": {"backend": "hf", "max_new_tokens": 6, "temperature": 1.0},
            "rewards": [{"name": "test_pair_trainers:char_reward"}],
            "eval": {"before_after": False, "max_new_tokens": 6},
            "logging": {"report_to": [], "progress_bar": False}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe_from_dict(base)


# ------------------------------------------------------------------ pairs from scores
def test_select_pairs_best_worst_drops_ties():
    rewards = [0.0, 1.0, 0.5, 1.0,   2.0, 2.0, 2.0, 2.0,   -1.0, 3.0, 3.0, 0.0]
    pairs, ties = select_pairs(rewards, 4)
    assert pairs == [(1, 0), (9, 8)] and ties == 1   # first of equals, the tie group dropped
    assert select_pairs(rewards, 4, keep_ties=True)[0] == [(1, 0), (4, 4), (9, 8)]


def test_select_pairs_consecutive_for_copg():
    pairs, ties = select_pairs([1.0, 0.0, 1.0, 1.0], 2, "consecutive")
    assert (pairs, ties) == ([(0, 1)], 1)
    assert select_pairs([1.0, 0.0, 1.0, 1.0], 4, "consecutive", keep_ties=True)[0] == \
        [(0, 1), (2, 3)]
    with pytest.raises(ValueError, match="groups of 3"):
        select_pairs([1.0, 0.0, 1.0, 1.0], 3)


def test_dispatch_follows_the_online_switch(tmp_path, tiny_model_dir, prompts_file):
    for algorithm, cls in (("dpo", OnlineDPOTrainer), ("ipo", OnlineIPOTrainer),
                           ("copg", OnlineCoPGTrainer)):
        recipe = online_recipe(tmp_path, tiny_model_dir, prompts_file, algorithm,
                               **({algorithm: {"num_generations": 2}}
                                  if algorithm == "copg" else {}))
        assert TRAINERS[trainer_key(recipe)].endswith(cls.__name__)
    assert trainer_key(recipe_from_dict({"algorithm": "copg"})) == "copg"


# ------------------------------------------------------------------ the update
def test_online_dpo_update_raises_chosen_over_rejected(tmp_path, tiny_model_dir,
                                                       prompts_file):
    trainer = OnlineDPOTrainer(online_recipe(tmp_path, tiny_model_dir, prompts_file,
                                             trainer={"optimizer": "sgd", "lr": 0.5}))
    trainer.before_training()
    trainer.gaps = []
    samples = []
    for pair in range(2):
        prompt = trainer.train_set[pair].prompt_ids
        for k, completion in enumerate(([40, 41, 42], [50, 51])):
            samples.append(Sample(prompt, completion, [0.0] * len(completion),
                                  [True] * len(completion), reward=1.0 - k, group=pair))
    batch = trainer.collate(samples)
    trainer.prepare_batches([batch])

    def margin():
        with torch.no_grad():
            seq = (group_token_logps(trainer.model, batch) * batch["loss_mask"]).sum(1)
        return float((seq[0::2] - seq[1::2]).sum())

    before = margin()
    metrics = trainer.update([batch])
    assert metrics["loss"] == pytest.approx(math.log(2), abs=1e-9)   # policy = reference
    assert margin() > before + 1e-3


# ------------------------------------------------------------------ whole runs
@pytest.mark.parametrize("algorithm", ["dpo", "ipo", "copg"])
def test_online_run_logs_pairs_rewards_gap_and_time(tmp_path, tiny_model_dir, prompts_file,
                                                    algorithm):
    extra = {"copg": {"num_generations": 2}} if algorithm == "copg" else {}
    recipe = online_recipe(tmp_path, tiny_model_dir, prompts_file, algorithm,
                           trainer={"eval_every": 2}, **extra)
    trainer = {"dpo": OnlineDPOTrainer, "ipo": OnlineIPOTrainer,
               "copg": OnlineCoPGTrainer}[algorithm](recipe)
    summary = trainer.train()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and "eval/accuracy" in rows[0]
    step = rows[1]
    for key in ("loss", "reward", "rewards/char_reward", "completion_length", "pairs",
                "groups_with_signal", "time/generate", "time/score", "time/prepare",
                "time/update", "time/sync", "rollout/logprob_gap_mean", "grad_norm"):
        assert key in step, key
    assert step["rollout/logprob_gap_max"] < 1e-4     # hf backend: the trained weights
    assert 1 <= step["pairs"] <= 2 and step["samples"] == 2 * step["pairs"]
    first_loss = {"dpo": math.log(2), "ipo": 1 / (4 * 0.1 ** 2)}.get(algorithm)
    if first_loss is not None:                        # policy = reference at step 1
        assert step["loss"] == pytest.approx(first_loss, rel=1e-6)
    else:                                             # CoPG at h = 0: -ℓ = 0
        assert step["loss"] == pytest.approx(0.0, abs=1e-9)
    assert summary["steps"] == 2 and (tmp_path / "final" / "config.json").is_file()
    assert (tmp_path / "samples.jsonl").is_file()


def test_online_dpo_learns_the_reward(tmp_path, tiny_model_dir, prompts_file):
    """Best-vs-worst pairs of a length reward: the mean reward of the samples rises. (Top-k
    sampling keeps the random model's choices few enough to learn in a dozen steps.)"""
    trainer = OnlineDPOTrainer(online_recipe(
        tmp_path, tiny_model_dir, prompts_file, trainer={"max_steps": 12, "lr": 1e-2},
        dpo={"beta": 0.1, "num_generations": 8, "prompts_per_step": 4},
        rollout={"max_new_tokens": 4, "top_k": 4}))
    trainer.train()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
            if "reward" in json.loads(x)]
    first = sum(r["reward"] for r in rows[:3]) / 3
    last = sum(r["reward"] for r in rows[-3:]) / 3
    assert last > first + 0.3, (first, last)


def ties_on_odd_answers(prompts, completions, rows):
    """Every sample of a prompt with an odd answer scores the same: no pair there."""
    return [1.0 if row["answer"] % 2 else len(c) / 10
            for c, row in zip(completions, rows, strict=True)]


def test_dropped_ties_are_refilled_by_more_sampling_rounds(tmp_path, tiny_model_dir,
                                                           prompts_file):
    recipe = online_recipe(tmp_path, tiny_model_dir, prompts_file,
                           trainer={"max_steps": 3},
                           dpo={"max_sampling_rounds": 6},
                           rewards=[{"name": "test_pair_trainers:ties_on_odd_answers"}])
    OnlineDPOTrainer(recipe).train()
    steps = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if "pairs" in json.loads(x)]
    assert [r["pairs"] for r in steps] == [2.0, 2.0, 2.0]          # always a full step
    assert any(r["groups_with_signal"] < 1 for r in steps)         # after dropping ties


def test_all_ties_skip_the_step_with_a_message(tmp_path, tiny_model_dir, prompts_file, capsys):
    recipe = online_recipe(tmp_path, tiny_model_dir, prompts_file,
                           trainer={"max_steps": 1}, dpo={"max_sampling_rounds": 2},
                           rewards=[{"name": "exact_answer"}])   # a random model: all 0
    OnlineDPOTrainer(recipe).train()
    assert "no sample with a learning signal after 2 sampling round(s)" in capsys.readouterr().err


# ------------------------------------------------------------------ offline CoPG
def offline_recipe(out, model, pairs, **sections):
    base = {"algorithm": "copg", "output_dir": str(out),
            "model": {"name": model, "dtype": "float64"},
            "data": {"train": pairs, "eval": pairs, "eval_limit": 4, "chat_template": False},
            "trainer": {"lr": 1e-3, "batch_size": 4, "max_steps": 3, "save_every": None,
                        "seed": 1},
            "eval": {"before_after": False},
            "logging": {"report_to": [], "progress_bar": False}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe_from_dict(base)


def test_offline_copg_reads_reward_columns_and_trains(tmp_path, tiny_model_dir, pairs_file):
    trainer = CoPGTrainer(offline_recipe(tmp_path, tiny_model_dir, pairs_file))
    assert [p.rewards for p in trainer.train_set[:3]] == [(1.0, 0.0), (1.0, 0.5), (1.0, 1.0)]
    trainer.train()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "copg/weight" in r and "eval/loss" not in r]
    assert steps[0]["loss"] == pytest.approx(0.0, abs=1e-9)   # h = 0 at the first step
    assert steps[-1]["loss"] < -1e-4                          # the objective ℓ went up


def test_offline_copg_scores_pairs_with_the_verifier(tmp_path, tiny_model_dir, pairs_file):
    trainer = CoPGTrainer(offline_recipe(tmp_path, tiny_model_dir, pairs_file,
                                         copg={"rewards_from": "scorer"},
                                         rewards=[{"name": "exact_answer"}]))
    assert all(p.rewards == (1.0, 0.0) for p in trainer.train_set)


@pytest.mark.parametrize("value, message", [
    (None, "column 'rejected_reward' (copg.reward_columns) is missing or null"),
    ("NaN", "column 'rejected_reward' must be a finite number"),
    ("high", "column 'rejected_reward' is not a number: 'high'"),
])
def test_offline_copg_bad_rewards_name_the_row(tmp_path, tiny_model_dir, pairs_file, value,
                                               message):
    rows = [json.loads(x) for x in open(pairs_file).read().splitlines()]
    rows[2]["rejected_reward"] = float(value) if value == "NaN" else value
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=re.escape(f"{bad} line 3: {message}")):
        CoPGTrainer(offline_recipe(tmp_path, tiny_model_dir, str(bad)))


# ------------------------------------------------------------------ bad recipes
@pytest.mark.parametrize("raw, message", [
    ({"algorithm": "dpo", "dpo": {"online": True}}, "dpo.online is true but the recipe has no "
     "'rewards:' section"),
    ({"algorithm": "ipo", "ipo": {"num_generations": 8}}, "ipo.num_generations applies only "
     "with ipo.online: true"),
    ({"algorithm": "dpo", "dpo": {"online": True, "reference": "model"},
      "rewards": [{"name": "exact_answer"}]}, "dpo.reference applies to offline dpo only"),
    ({"algorithm": "copg", "copg": {"online": True, "num_generations": 3},
      "rewards": [{"name": "exact_answer"}]}, "copg.num_generations must be even"),
    ({"algorithm": "copg", "rewards": [{"name": "exact_answer"}]},
     "copg.rewards_from: scorer"),
    ({"algorithm": "copg", "copg": {"reward_columns": ["r"]}}, "must name 2 columns"),
    ({"algorithm": "dpo", "rollout": {"temperature": 0.5}}, "'rollout' applies to runs that "
     "generate"),
    ({"algorithm": "dpo", "dpo": {"onlin": True}}, "did you mean 'dpo.online'"),
])
def test_bad_pair_recipes_are_reported(raw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        recipe_from_dict(raw)


def test_resolved_online_recipe_round_trips():
    from alignment.config import recipe_to_dict

    raw = {"algorithm": "dpo", "dpo": {"online": True}, "rewards": [{"name": "exact_answer"}]}
    data = recipe_to_dict(recipe_from_dict(raw))
    assert "reference" not in data["dpo"] and "rollout" in data and "rewards" in data
    assert recipe_to_dict(recipe_from_dict(json.loads(json.dumps(data)))) == data


# ------------------------------------------------------------------ the command line
def test_cli_reports_pair_problems_with_exit_2(tmp_path, tiny_model_dir, pairs_file):
    import os
    import subprocess
    import sys

    import yaml

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    online = tmp_path / "online.yaml"
    online.write_text(yaml.safe_dump({"algorithm": "copg", "copg": {"online": True}}))
    out = subprocess.run([sys.executable, "-m", "alignment", "check", str(online)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "copg.online is true but the recipe has no 'rewards:' section" in out.stderr

    rows = [json.loads(x) for x in open(pairs_file).read().splitlines()]
    rows[1]["chosen_reward"] = float("inf")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "offline.yaml"
    recipe.write_text(yaml.safe_dump({
        "algorithm": "copg", "output_dir": str(tmp_path / "out"),
        "model": {"name": tiny_model_dir}, "data": {"train": str(bad), "eval": None},
        "eval": {"before_after": False}}))
    out = subprocess.run([sys.executable, "-m", "alignment", "train", str(recipe)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert f"{bad} line 2: column 'chosen_reward' must be a finite number" in out.stderr
