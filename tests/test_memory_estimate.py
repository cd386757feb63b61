"""The start-up memory estimate (alignment/memory_estimate.py): how its terms move with the
recipe, and the check that refuses a run the machine cannot hold. No model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignment import memory_check
from alignment.config import recipe_from_dict
from alignment.memory_check import NotEnoughMemoryError, available_memory, check_memory
from alignment.memory_estimate import MemoryEstimate, estimate_memory

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
         "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny Llama's folder as the estimate reads it: config.json and the safetensors
    header (shapes only: the estimate never reads a weight)."""
    import json
    import struct

    folder = tmp_path_factory.mktemp("tiny-llama")
    (folder / "config.json").write_text(json.dumps(LLAMA))
    h, i, layers = LLAMA["hidden_size"], LLAMA["intermediate_size"], 2
    shapes = {"model.embed_tokens.weight": [LLAMA["vocab_size"], h], "model.norm.weight": [h]}
    for n in range(layers):
        for name, shape in {"q_proj": [h, h], "k_proj": [h // 2, h], "v_proj": [h // 2, h],
                            "o_proj": [h, h], "gate_proj": [i, h], "up_proj": [i, h],
                            "down_proj": [h, i]}.items():
            shapes[f"model.layers.{n}.{name}.weight"] = shape
    offset, header = 0, {}
    for name, shape in shapes.items():
        size = 2 * shape[0] * (shape[1] if len(shape) > 1 else 1)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    return str(folder)


def _recipe(model: str, algorithm: str = "dpo", *overrides: str, **sections):
    raw = {"algorithm": algorithm, "model": {"name": model, "dtype": "bfloat16"},
           "data": {"max_length": 128, "max_prompt_length": 64}, **sections}
    return recipe_from_dict(raw, list(overrides))


def _total(model, algorithm="dpo", *overrides, **sections) -> int:
    return estimate_memory(_recipe(model, algorithm, *overrides, **sections)).total


def test_terms_add_up_and_read(tiny_model_dir):
    est = estimate_memory(_recipe(tiny_model_dir))
    assert isinstance(est, MemoryEstimate)
    assert est.total == sum(est.terms().values())
    assert est.weights == est.parameters * 2                     # bf16
    assert est.master == est.parameters * 4                      # fp32 master copy
    assert est.optimizer == est.parameters * 8                   # AdamW's two fp32 moments
    assert est.reference == 0 and est.critic == 0 and est.engine == 0   # precomputed π_ref
    text = est.table()
    assert "weights" in text and "activations" in text and "total" in text
    assert "GB" in est.one_line() or "MB" in est.one_line()


def test_grows_with_batch_size_and_max_length(tiny_model_dir):
    base = _total(tiny_model_dir)
    assert _total(tiny_model_dir, "dpo", "trainer.batch_size=32") > base
    assert _total(tiny_model_dir, "dpo", "data.max_length=512") > base


def test_gradient_checkpointing_and_lora_lower_it(tiny_model_dir):
    base = estimate_memory(_recipe(tiny_model_dir, "sft"))
    ckpt = estimate_memory(_recipe(tiny_model_dir, "sft", "model.gradient_checkpointing=true"))
    assert ckpt.activations < base.activations and ckpt.total < base.total
    lora = estimate_memory(_recipe(tiny_model_dir, "sft", "model.lora.r=8"))
    assert lora.trained < base.trained
    assert lora.master == 0                      # adapters are fp32: no master copy
    assert lora.optimizer < base.optimizer and lora.gradients < base.gradients
    # on a bf16 model each adapter keeps an fp32 copy of its input for backward
    assert lora.activations > base.activations
    fp32 = estimate_memory(_recipe(tiny_model_dir, "sft", "model.dtype=float32"))
    fp32_lora = estimate_memory(_recipe(tiny_model_dir, "sft", "model.dtype=float32",
                                        "model.lora.r=8"))
    assert fp32_lora.total < fp32.total


def test_bf16_and_fp32_terms(tiny_model_dir):
    bf16 = estimate_memory(_recipe(tiny_model_dir, "sft"))
    fp32 = estimate_memory(_recipe(tiny_model_dir, "sft", "model.dtype=float32"))
    assert fp32.weights == 2 * bf16.weights
    assert fp32.master == 0 and bf16.master == bf16.parameters * 4
    assert fp32.activations == 2 * bf16.activations
    kahan = estimate_memory(_recipe(tiny_model_dir, "sft", "trainer.optimizer=adamw_kahan"))
    assert kahan.master == 0 and kahan.optimizer < bf16.optimizer and kahan.total < bf16.total


def test_reference_copy_only_where_kept(tiny_model_dir):
    assert estimate_memory(_recipe(tiny_model_dir, "dpo")).reference == 0
    model_ref = estimate_memory(_recipe(tiny_model_dir, "dpo", "dpo.reference=model"))
    assert model_ref.reference == model_ref.weights
    lora_ref = estimate_memory(_recipe(tiny_model_dir, "dpo", "dpo.reference=model",
                                       "model.lora.r=8"))
    assert lora_ref.reference == 0               # the policy with adapters off


def test_online_recipes_count_engine_and_kv_cache(tiny_model_dir):
    grpo = estimate_memory(_recipe(tiny_model_dir, "grpo", "rollout.backend=vllm"))
    assert grpo.engine > grpo.weights and grpo.kv_cache > 0
    more = estimate_memory(_recipe(tiny_model_dir, "grpo", "rollout.backend=vllm",
                                   "grpo.prompts_per_step=64", "data.eval=null"))
    fixed = estimate_memory(_recipe(tiny_model_dir, "grpo", "rollout.backend=vllm",
                                    "rollout.kv_cache_gb=2"))
    assert fixed.kv_cache == 2 << 30
    assert more.kv_cache > 0
    hf = estimate_memory(_recipe(tiny_model_dir, "grpo", "rollout.backend=hf"))
    assert hf.engine == 0 and hf.kv_cache == 0
    ppo = estimate_memory(_recipe(tiny_model_dir, "ppo", "rollout.backend=hf"))
    assert ppo.critic > 0 and ppo.reference == ppo.weights   # KL in the reward
    assert ppo.activations > hf.activations                  # the critic's forward too


def test_a_large_ptx_micro_batch_sets_the_activations(tiny_model_dir):
    demos = str(Path(__file__).resolve().parents[1] / "data/arithmetic/add2_sft_plain/train.jsonl")
    ppo, small, large = (estimate_memory(_recipe(tiny_model_dir, "ppo", "rollout.backend=hf",
                                                 *ptx)) for ptx in [
        (), ("ppo.ptx_coef=0.1", f"ppo.ptx_data={demos}", "ppo.ptx_batch_size=1"),
        ("ppo.ptx_coef=0.1", f"ppo.ptx_data={demos}", "ppo.ptx_batch_size=64")])
    assert small.activations == ppo.activations   # 8 rollouts x 128 tokens through both models
    assert large.activations > ppo.activations    # 64 demonstrations x 128, the policy alone


def test_processes_multiply_the_machine_total(tiny_model_dir):
    est = estimate_memory(_recipe(tiny_model_dir, "dpo", "launch.num_processes=2"))
    assert est.processes == 2 and est.machine_total == 2 * est.total


def test_check_refuses_with_numbers_and_keys(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(memory_check, "_cuda", lambda: False)
    monkeypatch.setattr(memory_check, "available_memory", lambda: 10 << 20)   # 10 MB
    recipe = _recipe(tiny_model_dir, "grpo", "rollout.backend=vllm", "trainer.batch_size=4",
                     "rollout.max_new_tokens=4")   # (short: the weights' state dominates)
    with pytest.raises(NotEnoughMemoryError) as err:
        check_memory(recipe)
    text = str(err.value)
    assert "exceeds" in text and "10 MB available" in text
    for key in ("trainer.batch_size=", "model.gradient_checkpointing=true", "model.lora.r=16",
                "trainer.optimizer=adamw_kahan", "rollout.kv_cache_gb=",
                "trainer.memory_check=false"):
        assert key in text
    assert "activations" in text and "kv_cache" in text


def test_check_passes_with_room_and_can_be_skipped(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(memory_check, "_cuda", lambda: False)
    monkeypatch.setattr(memory_check, "available_memory", lambda: 1 << 50)
    assert check_memory(_recipe(tiny_model_dir)) is not None
    monkeypatch.setattr(memory_check, "available_memory", lambda: 10 << 20)
    assert check_memory(_recipe(tiny_model_dir, "dpo", "trainer.memory_check=false")) is None
    # a model that is not a local folder (a hub id): nothing to count, no check
    assert check_memory(_recipe("org/not-local")) is None


def test_preflight_runs_the_check(tiny_model_dir, tmp_path, monkeypatch):
    from alignment import preflight

    monkeypatch.setattr(memory_check, "_cuda", lambda: False)
    monkeypatch.setattr(memory_check, "available_memory", lambda: 10 << 20)
    for name in ("ALIGNMENT_LAUNCHED", "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)   # (in-process DeepSpeed tests set some)
    recipe = _recipe(tiny_model_dir, "dpo", f"output_dir={tmp_path / 'out'}")
    with pytest.raises(NotEnoughMemoryError, match="estimated peak memory"):
        preflight.check_memory(recipe)
    monkeypatch.setenv("ALIGNMENT_LAUNCHED", "1")   # a launched worker: the launching
    preflight.check_memory(recipe)                  # command checked all processes at once


def test_available_memory_is_positive():
    assert 0 < available_memory() < 1 << 60
