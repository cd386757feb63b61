"""GRPO on tiny random Llamas with the `hf` rollout backend: the packed-group layout, the
update direction, exact micro-batching, the step's logs, and clear failures."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from alignment.config import ConfigError, recipe_from_dict
from alignment.trainers.grpo import GRPOTrainer
from alignment.trainers.online import Sample
from alignment.trainers.sequences import (
    collate_groups,
    collate_online,
    collate_separate,
    collate_sequences,
    completion_token_logps,
    group_token_logps,
    layout_costs,
)


def make_recipe(out, model, prompts, **sections):
    base = {"algorithm": "grpo", "output_dir": str(out),
            "model": {"name": model, "dtype": "float64"},
            "data": {"train": prompts, "eval": prompts, "eval_limit": 4,
                     "max_prompt_length": 96, "max_length": 128},
            "trainer": {"lr": 1e-3, "batch_size": 8, "max_steps": 2, "save_every": None,
                        "scheduler": "constant", "seed": 3},
            "grpo": {"prompts_per_step": 2, "num_generations": 4},
            "rollout": {"backend": "hf", "max_new_tokens": 6, "temperature": 1.0},
            "rewards": [{"name": "exact_answer"}],
            "eval": {"before_after": False, "max_new_tokens": 6},
            "logging": {"report_to": [], "progress_bar": False}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe_from_dict(base)


# ------------------------------------------------------------------ packed groups
@pytest.mark.parametrize("collate", [collate_groups, collate_separate],
                         ids=["grouped", "separate"])
def test_packed_groups_equal_independent_sequences(tiny_model_dir, collate):
    """Both layouts of the online trainers give the log-probs of independent sequences."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    prompts = [[1, 5, 7, 9], [3, 4]]
    groups = [[[10, 11, 12], [13], [14, 15]], [[20, 21, 22, 23], [24, 25]]]
    packed = group_token_logps(model, collate(prompts, groups, 0), temperature=0.7)
    flat_prompts = [p for p, g in zip(prompts, groups, strict=True) for _ in g]
    flat = collate_sequences(flat_prompts, [c for g in groups for c in g], 0)
    plain = completion_token_logps(model, flat, temperature=0.7)
    mask = flat["completion_mask"]
    assert packed.shape == plain.shape == (5, 4)
    assert plain[mask].abs().min() > 0.1          # real log-probs, not zeros
    torch.testing.assert_close(packed[mask], plain[mask], rtol=1e-10, atol=1e-10)


def test_attention_width_of_the_bundled_model(bundled_model_dir):
    from transformers import AutoConfig

    from alignment.trainers.sequences import BUNDLED_ATTENTION_WIDTH, attention_width

    # d 576, d_attn 9 x 64 = 576, d_kv 3 x 64 = 192, d_ff 1536:
    # (2·576·576 + 2·576·192 + 3·576·1536) / (2·576) = 576 + 192 + 2304 = 3072, x 0.5
    assert attention_width(AutoConfig.from_pretrained(bundled_model_dir)) == 1536.0
    assert BUNDLED_ATTENTION_WIDTH == 1536.0


def test_auto_layout_picks_the_cheaper_one(tiny_model_dir):
    """Short completions after a long prompt: grouped beats separate (the prompt once); 16
    completions of up to 256 tokens: separate beats grouped (a 4,192-wide grouped row pays
    its width in attention); a prefix tree (no padding) beats both there, but not 16
    completions of 512 tokens (one 8k-token row). Auto takes the cheapest; the same
    log-probs whichever is picked."""
    prompts = [list(range(3, 99))]                                  # 96 tokens
    short = [[[40 + j] * 16 for j in range(8)]]                     # G = 8, 16 tokens each
    uneven = [[[40 + j] * (16 + 16 * j) for j in range(16)]]        # G = 16, 16..256 tokens
    long = [[[40 + j] * 512 for j in range(16)]]                    # G = 16, 512 tokens
    assert layout_costs(prompts, short)["grouped"] < layout_costs(prompts, short)["separate"]
    assert layout_costs(prompts, uneven)["separate"] < layout_costs(prompts, uneven)["grouped"]
    picked = {}
    for name, groups in (("short", short), ("uneven", uneven), ("long", long)):
        costs = layout_costs(prompts, groups)
        costs["tree"] = collate_online(prompts, groups, 0, layout="tree")["cost"]
        picked[name] = collate_online(prompts, groups, 0)["layout"]
        assert picked[name] == min(costs, key=costs.get), (name, costs)
    assert picked == {"short": "tree", "uneven": "tree", "long": "separate"}
    assert collate_online(prompts, uneven, 0, layout="grouped")["layout"] == "grouped"

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    groups = [[c[:20] for c in uneven[0][:5]]]           # a smaller shape for the model
    auto, grouped = (group_token_logps(model, collate_online(prompts, groups, 0, layout=x))
                     for x in ("separate", "grouped"))
    mask = collate_groups(prompts, groups, 0)["completion_mask"]
    torch.testing.assert_close(auto[mask], grouped[mask], rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ the update
def fixed_samples(trainer, advantages):
    """Two groups of 4 hand-made completions of the first two prompts."""
    samples = []
    for i, adv in enumerate(advantages):
        prompt = trainer.train_set[i // 4].prompt_ids
        completion = [40 + i, 41 + i, 42 + (i % 3)][: 1 + i % 3]
        samples.append(Sample(prompt, completion, [0.0] * len(completion),
                              [True] * len(completion), reward=adv, advantage=adv,
                              group=i // 4))
    return samples


def test_update_raises_log_probs_of_positive_advantage_samples(tmp_path, tiny_model_dir,
                                                                prompts_file):
    trainer = GRPOTrainer(make_recipe(tmp_path, tiny_model_dir, prompts_file))
    trainer.before_training()
    advantages = [1.5, -0.5, -0.5, -0.5, -1.0, 1.0, -1.0, 1.0]
    batch = trainer.collate(fixed_samples(trainer, advantages))
    trainer.gaps = []

    def objective():
        with torch.no_grad():
            logps = group_token_logps(trainer.model, batch)
        return float((logps * batch["loss_mask"]).sum(1) @ torch.tensor(advantages,
                                                                         dtype=logps.dtype))

    before = objective()
    metrics = trainer.update([batch])
    assert metrics["ratio"] == pytest.approx(1.0) and metrics["clip_fraction"] == 0.0
    assert objective() > before + 1e-3


@pytest.mark.parametrize("aggregation", ["grpo", "token_mean", "dr_grpo"])
def test_micro_batches_give_the_same_update(tmp_path, tiny_model_dir, prompts_file,
                                            aggregation):
    """One batch of 8 samples or micro-batches of whole groups: same parameters after the
    step, for every aggregation (token-mean uses the step's total token count)."""
    advantages = [1.5, -0.5, -0.5, -0.5, -1.0, 1.0, -1.0, 1.0]
    params = []
    for size in (8, 4):
        trainer = GRPOTrainer(make_recipe(tmp_path / f"b{size}", tiny_model_dir, prompts_file,
                                          trainer={"batch_size": size, "optimizer": "sgd"},
                                          grpo={"aggregation": aggregation}))
        trainer.before_training()
        trainer.gaps = []
        samples = fixed_samples(trainer, advantages)
        from alignment.trainers.online import _micro_batches

        chunks = _micro_batches(samples, size)
        assert len(chunks) == 8 // size
        trainer.update([trainer.collate(c) for c in chunks])
        params.append(torch.cat([p.detach().flatten() for p in trainer.policy.parameters()]))
    # (float64; the split batches may be packed differently: rounding ~1e-12)
    torch.testing.assert_close(params[0], params[1], rtol=1e-9, atol=1e-11)


def test_both_layouts_give_the_same_update(tmp_path, tiny_model_dir, prompts_file):
    """grpo.layout grouped or separate: the same loss, the same step. (The loss to 1e-10;
    the step to 1e-6 of its size: HF's Llama RMSNorm runs in float32 even in a float64
    model, so gradients summed in another order round differently there.)"""
    advantages = [1.5, -0.5, -0.5, -0.5, -1.0, 1.0, -1.0, 1.0]
    steps, losses = [], []
    for layout in ("grouped", "separate"):
        trainer = GRPOTrainer(make_recipe(tmp_path / layout, tiny_model_dir, prompts_file,
                                          trainer={"optimizer": "sgd"},
                                          grpo={"layout": layout}))
        trainer.before_training()
        trainer.gaps = []
        batch = trainer.collate(fixed_samples(trainer, advantages))
        assert batch["layout"] == layout
        before = _flat_parameters(trainer.policy)
        losses.append(trainer.update([batch])["loss"])
        steps.append(_flat_parameters(trainer.policy) - before)
    assert losses[0] == pytest.approx(losses[1], rel=1e-10)
    size = steps[0].abs().max().item()
    assert size > 1e-6                                   # the step moved the parameters
    torch.testing.assert_close(steps[0], steps[1], rtol=0, atol=1e-6 * size)


def _flat_parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# ------------------------------------------------------------------ whole runs
def test_run_logs_rewards_time_split_and_eval(tmp_path, tiny_model_dir, prompts_file):
    trainer = GRPOTrainer(make_recipe(tmp_path, tiny_model_dir, prompts_file,
                                      trainer={"eval_every": 2},
                                      rewards=[{"name": "exact_answer"},
                                               {"name": "regex", "pattern": "\\d",
                                                "weight": 0.5}]))
    summary = trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and "eval/accuracy" in rows[0]
    step = rows[1]
    for key in ("loss", "reward", "rewards/exact_answer", "rewards/regex", "accuracy",
                "completion_length", "kl", "clip_fraction", "time/generate", "time/score",
                "time/update", "time/sync", "rollout/logprob_gap_mean", "grad_norm",
                "layout/grouped"):
        assert key in step, key
    assert step["samples"] == 8
    assert step["rollout/logprob_gap_max"] < 1e-4     # hf backend: same weights (fp32 scores)
    assert summary["steps"] == 2 and (tmp_path / "final" / "config.json").is_file()


def test_dynamic_sampling_with_no_signal_skips_with_a_message(tmp_path, tiny_model_dir,
                                                               prompts_file, capsys):
    # a random model never answers correctly: every group's rewards are equal (0)
    trainer = GRPOTrainer(make_recipe(tmp_path, tiny_model_dir, prompts_file,
                                      trainer={"max_steps": 1},
                                      grpo={"dynamic_sampling": True,
                                            "max_sampling_rounds": 2}))
    trainer.train()
    assert "no sample with a learning signal after 2 sampling round(s)" in \
        capsys.readouterr().err
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-2])
    assert row["skipped"] == 1.0 and row["groups_with_signal"] == 0.0


def reward_that_fails_on_first_prompt(prompts, completions, rows):
    """A user reward with a bug on one row (used by dotted path below)."""
    return [1.0 / (row["answer"] != FIRST_ANSWER) for row in rows]


FIRST_ANSWER = None


def test_reward_function_errors_are_named_and_scored_zero(tmp_path, tiny_model_dir,
                                                          prompts_file, capsys):
    global FIRST_ANSWER
    FIRST_ANSWER = json.loads(open(prompts_file).readline())["answer"]
    trainer = GRPOTrainer(make_recipe(
        tmp_path, tiny_model_dir, prompts_file, trainer={"max_steps": 3},
        grpo={"prompts_per_step": 8},
        rewards=[{"name": "test_grpo_trainer:reward_that_fails_on_first_prompt"}]))
    trainer.train()   # goes on
    err = capsys.readouterr().err
    assert "reward error on" in err and "line 1" in err and "ZeroDivisionError" in err
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("reward_errors", 0) for r in rows) >= 4     # the first prompt's G samples
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)   # it went on


def test_reward_errors_can_stop_the_run(tmp_path, tiny_model_dir, prompts_file):
    global FIRST_ANSWER
    FIRST_ANSWER = json.loads(open(prompts_file).readline())["answer"]
    trainer = GRPOTrainer(make_recipe(
        tmp_path, tiny_model_dir, prompts_file, trainer={"max_steps": 3},
        grpo={"prompts_per_step": 8},
        rewards=[{"name": "test_grpo_trainer:reward_that_fails_on_first_prompt",
                  "on_error": "raise"}]))
    from reward_models import ScorerError

    with pytest.raises(ScorerError, match="ZeroDivisionError"):
        trainer.train()


# ------------------------------------------------------------------ recipe checks
@pytest.mark.parametrize("rewards, message", [
    ([{"name": "exact_anwser"}], "did you mean 'exact_answer'"),
    ([{"name": "regex"}], "needs option 'pattern'"),
    ([{"name": "regex", "pattern": "x", "pattrn": "y"}], "unknown option 'pattrn'"),
    ([{"name": "exact_answer", "weight": "high"}],
     "rewards[0].weight: expected a number (got 'high')"),
    ([], "non-empty list"),
    ([{"name": "no_such_module_xyz.rewards:fn"}], "cannot import module"),
])
def test_bad_reward_specs_are_reported(tmp_path, tiny_model_dir, prompts_file, rewards,
                                       message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_recipe(tmp_path, tiny_model_dir, prompts_file, rewards=rewards)


def test_online_sections_rejected_for_offline_algorithms():
    with pytest.raises(ConfigError, match="'rollout' applies to runs that generate"):
        recipe_from_dict({"algorithm": "dpo", "rollout": {"temperature": 0.5}})


@pytest.mark.vllm
@pytest.mark.bundled
def test_grpo_with_vllm_engine_end_to_end(tmp_path, bundled_model_dir, repo_root):
    """`alignment train` with the in-process vLLM engine on the bundled model: samples,
    updates, pushes weights into the engine and verifies them every step."""
    pytest.importorskip("vllm")

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "alignment", "train", str(repo_root / "recipes/grpo.yaml"),
           f"output_dir={out}", "trainer.max_steps=2", "trainer.eval_every=null",
           "trainer.save_every=null", "grpo.prompts_per_step=2", "grpo.num_generations=4",
           "rollout.max_new_tokens=8", "rollout.backend=vllm", "data.eval_limit=4",
           "eval.before_after=false", "logging.report_to=[]"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rollout engine: vllm" in done.stderr
    # the KV cache for a step's 2 x 4 sequences of 96 + 8 tokens (rollout.kv_cache_gb: auto)
    assert re.search(r"KV cache: [\d.]+ GiB for 8 sequences × 104 tokens \(auto\)",
                     done.stderr), done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["kv_cache"]["sequences"], summary["kv_cache"]["auto"]) == (8, True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "time/sync" in r]
    assert len(steps) == 2
    for r in steps:
        assert r["rollout/probe_gap"] < 0.15            # the sync took effect
        assert r["rollout/logprob_gap_mean"] < 0.1       # engine samples from our weights
        assert r["samples"] == 8
        assert r["layout/grouped"] + r["layout/tree"] == 1.0   # short completions: packed
    assert (out / "final" / "model.safetensors").is_file()


def test_truncated_is_under_top_p_logs_its_metrics(tmp_path, tiny_model_dir, prompts_file):
    """With top-k / top-p sampling the trainer compares the engine's numbers with its own
    under the same filters (gap ~0 on the HF backend), and `grpo.is_cap` weights the tokens
    (ratio ~1 here: same weights, same numerics) and logs what it did."""
    trainer = GRPOTrainer(make_recipe(tmp_path, tiny_model_dir, prompts_file,
                                      rollout={"top_p": 0.8, "top_k": 30, "temperature": 0.9},
                                      grpo={"is_cap": 2.0}))
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 2
    step = steps[-1]
    assert step["rollout/logprob_gap_max"] < 1e-4
    assert step["is_ratio"] == pytest.approx(1.0, abs=1e-4) and step["is_capped"] == 0.0
