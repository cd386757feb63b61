"""The vLLM engine's KV cache sized from the recipe (`rollout.kv_cache_gb: auto`): the
arithmetic on the bundled model's config, what each trainer says it generates at once, and
the recipe key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignment.config import ConfigError, recipe_from_dict
from alignment.rollout.kv_cache import (
    GIB,
    KVCacheSize,
    auto_kv_cache,
    kv_bytes_per_token,
    model_kv_cache,
)

ROOT = Path(__file__).resolve().parents[1]
# SmolLM2-135M: 30 layers, 3 KV heads of 64 -> 2 x 30 x 3 x 64 = 11,520 values per token
BF16_PER_TOKEN = 23_040
BLOCK = 128 * BF16_PER_TOKEN          # one vLLM CPU block: 128 tokens = 2,949,120 bytes


@pytest.fixture(scope="module")
def bundled_config(bundled_model_dir):
    return json.loads((Path(bundled_model_dir) / "config.json").read_text())


def test_bytes_per_token_of_the_bundled_model(bundled_config):
    assert (bundled_config["num_hidden_layers"], bundled_config["num_key_value_heads"],
            bundled_config["head_dim"]) == (30, 3, 64)
    assert kv_bytes_per_token(bundled_config, "bfloat16") == BF16_PER_TOKEN
    assert kv_bytes_per_token(bundled_config, "float32") == 2 * BF16_PER_TOKEN
    # a config without head_dim / num_key_value_heads: hidden / heads, and plain attention
    assert kv_bytes_per_token({"num_hidden_layers": 2, "num_attention_heads": 4,
                               "hidden_size": 64}, "float32") == 2 * 2 * 4 * 16 * 4


def test_auto_size_of_the_grpo_recipe_step(bundled_model_dir):
    # recipes/grpo.yaml: 8 prompts x 8 samples of at most 96 + 16 tokens: one 128-token
    # block each -> 64 blocks, x 1.25 = 80 blocks = 235,929,600 bytes
    size = model_kv_cache(bundled_model_dir, "bfloat16", [(64, 112)], max_model_len=168)
    assert (size.sequences, size.tokens, size.auto) == (64, 112, True)
    assert size.gib * GIB == pytest.approx(80 * BLOCK) == 235_929_600
    assert str(size) == "0.22 GiB for 64 sequences × 112 tokens (auto)"


def test_auto_size_takes_the_largest_call_whole_blocks_and_limits():
    # its eval pass (100 prompts of 96 + 64 tokens: 2 blocks each) needs more than a step
    size = auto_kv_cache(BF16_PER_TOKEN, [(64, 112), (100, 160)], max_model_len=168)
    assert (size.sequences, size.tokens) == (100, 160)
    assert size.gib * GIB == 250 * BLOCK                      # ceil(1.25 x 200) blocks
    # never less than one sequence of max_model_len (vLLM will not start without it)
    small = auto_kv_cache(BF16_PER_TOKEN, [(1, 10)], max_model_len=1000)
    assert small.gib * GIB == 8 * BLOCK                        # ceil(1000 / 128) blocks
    # vLLM decodes at most 256 sequences at once, and none longer than max_model_len
    many = auto_kv_cache(BF16_PER_TOKEN, [(5000, 4000)], max_model_len=200)
    assert (many.sequences, many.tokens) == (256, 200)
    assert many.gib * GIB == 640 * BLOCK                       # 256 x 2 blocks x 1.25


def test_an_explicit_size_is_kept():
    assert KVCacheSize(1.5).gib == 1.5
    assert str(KVCacheSize(1.5)) == "1.50 GiB (rollout.kv_cache_gb)"


# ------------------------------------------------------------------ the trainers
def _grpo_recipe(out, model, prompts, **rollout):
    return recipe_from_dict({
        "algorithm": "grpo", "output_dir": str(out), "model": {"name": model},
        "data": {"train": prompts, "eval": prompts, "eval_limit": 6, "max_prompt_length": 96,
                 "max_length": 128},
        "trainer": {"max_steps": 1, "save_every": None},
        "grpo": {"prompts_per_step": 2, "num_generations": 4},
        "rollout": {"backend": "hf", "max_new_tokens": 6, **rollout},
        "eval": {"before_after": False, "max_new_tokens": 10},
        "logging": {"report_to": [], "progress_bar": False}})


def test_trainer_sizes_the_cache_for_its_step_and_eval(tmp_path, tiny_model_dir, repo_root):
    from alignment.trainers.grpo import GRPOTrainer

    prompts = str(repo_root / "data/arithmetic/add2/train.jsonl")
    trainer = GRPOTrainer(_grpo_recipe(tmp_path, tiny_model_dir, prompts))
    # a step: 2 prompts x 4 samples of 96 + 6 tokens; the eval pass: 6 prompts of 96 + 10
    assert trainer.engine_generations() == [(8, 102), (6, 106)]
    options = trainer._vllm_options()
    config = json.loads((Path(tiny_model_dir) / "config.json").read_text())
    per_token = kv_bytes_per_token(config, options["dtype"])
    blocks = 10                             # 8 sequences x 1 block x 1.25 -> 10 blocks
    assert options["kv_cache_gb"] * GIB == blocks * 128 * per_token
    assert options["max_model_len"] == 96 + 10 + 8
    assert (trainer.kv_cache.sequences, trainer.kv_cache.tokens) == (8, 102)

    fixed = GRPOTrainer(_grpo_recipe(tmp_path / "fixed", tiny_model_dir, prompts,
                                     kv_cache_gb=2))
    assert fixed._vllm_options()["kv_cache_gb"] == 2.0
    assert str(fixed.kv_cache) == "2.00 GiB (rollout.kv_cache_gb)"


def _trainer(algorithm, out, model, repo_root):
    """Each kind of trainer that generates, on the tiny model (nothing is generated)."""
    import importlib

    from alignment.trainers import TRAINERS, trainer_key

    prompts = str(repo_root / "data/arithmetic/add2/train.jsonl")
    section = {"grpo": {"prompts_per_step": 3, "num_generations": 4},
               "dpo": {"online": True, "prompts_per_step": 3, "num_generations": 4},
               "ppo": {"prompts_per_step": 3, "samples_per_prompt": 4},
               "drpo": {"prompts_per_step": 3, "samples_per_prompt": 4,
                        "reset_column": "answer"},
               "spin": {}}[algorithm]
    train = (str(repo_root / "data/arithmetic/add2_sft_plain/train.jsonl")
             if algorithm == "spin" else prompts)
    recipe = recipe_from_dict({
        "algorithm": algorithm, "output_dir": str(out), "model": {"name": model},
        "data": {"train": train, "train_limit": 20, "eval": prompts, "eval_limit": 5,
                 "max_prompt_length": 96, "max_length": 128},
        "trainer": {"max_steps": 1, "save_every": None, "batch_size": 4}, algorithm: section,
        "rollout": {"backend": "hf", "max_new_tokens": 6},
        "eval": {"before_after": False, "max_new_tokens": 10},
        "logging": {"report_to": [], "progress_bar": False},
        **({"rewards": [{"name": "exact_answer"}]} if algorithm == "dpo" else {})})
    module, _, name = TRAINERS[trainer_key(recipe)].partition(":")
    return getattr(importlib.import_module(module), name)(recipe)


@pytest.mark.parametrize("algorithm, step", [
    ("grpo", (12, 102)), ("dpo", (12, 102)), ("ppo", (12, 102)),
    ("spin", (20, 102)),          # an iteration generates for every demonstration at once
])
def test_each_trainer_says_what_it_generates_at_once(tmp_path, tiny_model_dir, repo_root,
                                                     algorithm, step):
    trainer = _trainer(algorithm, tmp_path, tiny_model_dir, repo_root)
    assert trainer.engine_generations() == [step, (5, 106)]   # + the eval pass


def test_drpo_sequences_hold_the_forced_prefix(tmp_path, tiny_model_dir, repo_root):
    trainer = _trainer("drpo", tmp_path, tiny_model_dir, repo_root)
    longest = max(len(e.reset_ids) for e in trainer.train_set)   # answer + EOS
    assert trainer.engine_generations()[0] == (12, 102 + longest - 1)


# ------------------------------------------------------------------ the recipe key
def test_recipe_key_takes_auto_or_a_positive_number(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert recipe_from_dict({"algorithm": "grpo"}).rollout.kv_cache_gb == "auto"
    assert recipe_from_dict({"algorithm": "grpo"}, ["rollout.kv_cache_gb=2"]
                            ).rollout.kv_cache_gb == 2.0
    assert recipe_from_dict({"algorithm": "grpo", "rollout": {"kv_cache_gb": 0.5}}
                            ).rollout.kv_cache_gb == 0.5
    for value, message in [("lots", "rollout.kv_cache_gb: expected 'auto' or a number "
                                     "(got 'lots')"),
                           ("0", "rollout.kv_cache_gb: must be > 0.0 (got 0)"),
                           ("-1", "rollout.kv_cache_gb: must be > 0.0 (got -1)"),
                           ("true", "rollout.kv_cache_gb: expected 'auto' or a number"),
                           ("Auto", "expected 'auto' or a number (got 'Auto')")]:
        with pytest.raises(ConfigError) as err:
            recipe_from_dict({"algorithm": "grpo"}, [f"rollout.kv_cache_gb={value}"])
        assert message in str(err.value)
