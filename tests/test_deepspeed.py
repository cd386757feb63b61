"""DeepSpeed ZeRO-2 and ZeRO-3 on 2 CPU processes (gloo), through `accelerate launch` as
started by `alignment train`: DPO gives the same model as one process, and a ZeRO run
resumes from its sharded checkpoint on the same curve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_distributed import (
    assert_same_metrics,
    assert_same_model,
    dpo_recipe,
    free_port,
    history,
    train,
)

pytestmark = pytest.mark.slow   # ~25 s per DeepSpeed start (+ a one-off ~75 s op build)


@pytest.fixture(scope="module")
def policy(tmp_path_factory, bundled_model_dir):
    from alignment.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("ds") / "policy", seed=1,
                           tokenizer_from=bundled_model_dir)


def zero_config(tmp_path: Path, stage: int) -> Path:
    """launch/deepspeed_zero{2,3}.yaml, except that ZeRO-3 shards every tensor: by default
    DeepSpeed keeps tensors under 1e5 elements whole on every process, which on a tiny
    model would leave the layers unsharded and the test proving little."""
    cfg = yaml.safe_load(Path(f"launch/deepspeed_zero{stage}.yaml").read_text())
    if stage == 3:
        ds_json = tmp_path / "zero3.json"
        ds_json.write_text(json.dumps({
            "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
            "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0,
                                  "stage3_gather_16bit_weights_on_model_save": True}}))
        cfg["deepspeed_config"] = {"deepspeed_config_file": str(ds_json),
                                   "zero3_init_flag": True}
        cfg.pop("mixed_precision")   # (accelerate refuses settings the file would override)
    path = tmp_path / f"zero{stage}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def zero(tmp_path: Path, stage: int, *more: str) -> list[str]:
    return [f"launch.config_file={zero_config(tmp_path, stage)}", "launch.num_processes=2",
            f"launch.main_process_port={free_port()}", *more]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, policy):
    tmp = tmp_path_factory.mktemp("one")
    out = train(dpo_recipe(tmp, policy, tmp / "one"), "trainer.grad_accum=2")
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp / "one"


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_dpo_on_two_processes_equals_one_process(tmp_path, policy, one_process, stage):
    out = train(dpo_recipe(tmp_path, policy, tmp_path / "zero"), *zero(tmp_path, stage),
                timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(DEEPSPEED, CPU)" in out.stderr and "2 process(es)" in out.stderr
    assert_same_model(one_process, tmp_path / "zero", policy)
    # (DPO logs its margin as rewards/margin: the bare name matched nothing)
    assert_same_metrics(history(one_process), history(tmp_path / "zero"),
                        ("loss", "eval/loss", "rewards/margin", "eval/rewards/margin",
                         "grad_norm"))
    ckpt = tmp_path / "zero" / "checkpoints" / "step-000004"
    assert (ckpt / "deepspeed" / "latest").is_file()
    assert (ckpt / "model" / "model.safetensors").is_file()
    if stage == 3:   # every rank wrote its own shard; one process gathered the model
        shards = sorted(p.name for p in (ckpt / "deepspeed" / "pytorch_model").iterdir())
        assert shards == [f"zero_pp_rank_{r}_mp_rank_00_{k}_states.pt"
                          for r in (0, 1) for k in ("model", "optim")]


def test_zero2_resumes_from_its_sharded_checkpoint(tmp_path, policy):
    constant = ["trainer.scheduler=constant", "trainer.warmup_steps=0", "trainer.save_every=3"]
    straight = dpo_recipe(tmp_path, policy, tmp_path / "straight", max_steps=6)
    done = train(straight, *zero(tmp_path, 2, *constant), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    parts = dpo_recipe(tmp_path, policy, tmp_path / "parts", max_steps=6)
    first = train(parts, *zero(tmp_path, 2, *constant, "trainer.max_steps=3"), timeout=400)
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.rmtree(tmp_path / "parts" / "final")
    second = train(parts, *zero(tmp_path, 2, *constant), timeout=400)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr and "step-000003" in second.stderr
    a = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "parts" / "final" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6)
    losses = lambda out: [r["loss"] for r in history(out) if "loss" in r]  # noqa: E731
    assert losses(tmp_path / "parts") == pytest.approx(losses(tmp_path / "straight"), abs=1e-6)


@pytest.mark.parametrize("stage", [2, 3])
def test_grpo_under_zero_equals_one_process(tmp_path, policy, stage):
    """The online loop under ZeRO: each rank's HF engine generates from the policy (under
    ZeRO-3 every rank decodes in lockstep, gathering the sharded weights layer by layer);
    per-prompt seeds make the samples those of one process, uneven eval shares included."""
    from test_distributed import grpo_recipe

    one = train(grpo_recipe(tmp_path, policy, tmp_path / "one"), "grpo.prompts_per_step=4")
    assert one.returncode == 0, one.stderr[-3000:]
    two = train(grpo_recipe(tmp_path, policy, tmp_path / "z"), *zero(tmp_path, stage),
                timeout=400)
    assert two.returncode == 0, two.stderr[-3000:]
    assert f"ZeRO-{stage}" in two.stderr
    assert_same_model(tmp_path / "one", tmp_path / "z", policy)
    assert_same_metrics(history(tmp_path / "one"), history(tmp_path / "z"),
                        ("reward", "eval/completion_length"), atol=1e-6)


def test_zero3_bf16_trains_in_bf16_like_one_process(tmp_path, policy):
    """bf16 under ZeRO-3: the weights load sharded AND in bf16 (accelerate's copy of the
    DeepSpeed config that transformers reads must carry bf16, else they load in fp32), and
    the losses follow one bf16 process to bf16 rounding (measured 1.1e-4 over 8 steps)."""
    bf16 = ["model.dtype=bfloat16", "trainer.max_steps=8", "trainer.lr=1e-4"]
    one = train(dpo_recipe(tmp_path, policy, tmp_path / "one"), "trainer.grad_accum=2", *bf16)
    assert one.returncode == 0, one.stderr[-3000:]
    z3 = train(dpo_recipe(tmp_path, policy, tmp_path / "z3"), *zero(tmp_path, 3, *bf16),
               timeout=400)
    assert z3.returncode == 0, z3.stderr[-3000:]
    assert "torch.bfloat16, ZeRO-3" in z3.stderr
    losses = [[r["loss"] for r in history(tmp_path / out) if "loss" in r]
              for out in ("one", "z3")]
    assert losses[1] == pytest.approx(losses[0], abs=1e-3)
    assert max(losses[0]) - min(losses[0]) > 3e-3   # it did train
