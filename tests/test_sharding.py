"""Sharded training on 2 CPU processes (gloo), through `accelerate launch` as started by
`alignment train`: DeepSpeed ZeRO-2 / ZeRO-3 and FSDP2 give the same model as one process
(DPO, SPIN, LoRA, GRPO with LoRA; PPO in test_actor_critic.py), and sharded runs resume
from their checkpoints on the same curve. The online loop under ZeRO-3 (every rank decoding
in lockstep, per-prompt seeds) is PPO's test there: GRPO shares that loop, its loss is
tested on one process."""

from __future__ import annotations

import json
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


def fsdp(*more: str) -> list[str]:
    """launch/fsdp.yaml as shipped, on 2 processes."""
    return ["launch.config_file=launch/fsdp.yaml", "launch.num_processes=2",
            f"launch.main_process_port={free_port()}", *more]


def zero(tmp_path: Path, stage: int, *more: str) -> list[str]:
    return [f"launch.config_file={zero_config(tmp_path, stage)}", "launch.num_processes=2",
            f"launch.main_process_port={free_port()}", *more]


def one_process_run(tmp_path_factory, policy: str, name: str, *overrides: str) -> Path:
    """DPO on one process with the 2-process runs' global batch (grad_accum 2)."""
    tmp = tmp_path_factory.mktemp(name)
    out = train(dpo_recipe(tmp, policy, tmp / "one"), "trainer.grad_accum=2", *overrides)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp / "one"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, policy):
    return one_process_run(tmp_path_factory, policy, "one")


# ZeRO-3 here; ZeRO-2 against one process is covered by the LoRA DPO test below, the PPO
# test (tests/test_actor_critic.py) and, resumed after a SIGKILL, tests/test_kill_resume.py
@pytest.mark.parametrize("stage", [3])
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


BF16 = ["model.dtype=bfloat16", "trainer.max_steps=8", "trainer.lr=1e-4"]


@pytest.fixture(scope="module")
def one_process_bf16(tmp_path_factory, policy):
    return one_process_run(tmp_path_factory, policy, "one_bf16", *BF16)


@pytest.mark.parametrize("sharding", ["zero3", "fsdp2"])
def test_sharded_bf16_trains_in_bf16_like_one_process(tmp_path, policy, one_process_bf16,
                                                      sharding):
    """bf16 sharded: under ZeRO-3 the weights load sharded AND in bf16 (accelerate's copy of
    the DeepSpeed config that transformers reads must carry bf16, else they load in fp32);
    under FSDP2 the trainer's fp32 masters step the bf16 shards. The losses follow one bf16
    process to bf16 rounding (ZeRO-3 measured 1.1e-4 over 8 steps)."""
    launch = zero(tmp_path, 3, *BF16) if sharding == "zero3" else fsdp(*BF16)
    out = train(dpo_recipe(tmp_path, policy, tmp_path / "s"), *launch, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"torch.bfloat16, {'ZeRO-3' if sharding == 'zero3' else 'FSDP2'}" in out.stderr
    losses = [[r["loss"] for r in history(o) if "loss" in r]
              for o in (one_process_bf16, tmp_path / "s")]
    assert losses[1] == pytest.approx(losses[0], abs=1e-3)
    assert max(losses[0]) - min(losses[0]) > 3e-3   # it did train


@pytest.fixture(scope="module")
def one_process_lora(tmp_path_factory, policy):
    return one_process_run(tmp_path_factory, policy, "one_lora", *LORA)


LORA = ["model.lora.r=4", "model.lora.alpha=8", "trainer.lr=1e-2"]


@pytest.mark.parametrize("stage", [3])   # (ZeRO-2 partitions less: 3 is the strict case)
def test_lora_dpo_under_zero_equals_one_process(tmp_path, policy, one_process_lora, stage):
    """LoRA under DeepSpeed: π_ref is the policy with its adapters off, as on one process;
    under ZeRO-3 the frozen base is sharded too and `final/` merges the adapters from the
    gathered tensors (the module holds only shards)."""
    out = train(dpo_recipe(tmp_path, policy, tmp_path / "z"), *zero(tmp_path, stage, *LORA),
                timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"ZeRO-{stage}" in out.stderr
    assert_same_model(one_process_lora, tmp_path / "z", policy)
    assert_same_metrics(history(one_process_lora), history(tmp_path / "z"),
                        ("loss", "eval/loss", "rewards/margin"))
    adapter = tmp_path / "z" / "final" / "adapter" / "adapter_model.safetensors"
    a = load_file(str(adapter))
    b = load_file(str(one_process_lora / "final" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and any("lora_B" in k for k in a)
    for name in a:   # (Adam at lr 1e-2 on adapters: ZeRO-3's summation order shows, 2e-5)
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-4)


def test_spin_under_zero3_equals_one_process(tmp_path, policy):
    """SPIN's generation phase under ZeRO-3: every process decodes an equal share in
    lockstep (the sharded weights are gathered layer by layer), per-prompt seeds give the
    samples of one process, and the opponent table is built from the sharded policy."""
    rows = Path("data/arithmetic/add2_sft_plain/train.jsonl").read_text().splitlines()[:4]
    (tmp_path / "sft.jsonl").write_text("\n".join(rows) + "\n")

    def recipe(name: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "algorithm": "spin", "output_dir": str(tmp_path / name),
            "model": {"name": policy, "dtype": "float32"},
            "data": {"train": str(tmp_path / "sft.jsonl"), "max_prompt_length": 64,
                     "max_length": 96},
            "trainer": {"lr": 1e-3, "batch_size": 2, "save_every": None,
                        "scheduler": "constant", "seed": 5},
            "spin": {"iterations": 1, "epochs": 1},
            "rollout": {"backend": "hf", "max_new_tokens": 8, "temperature": 1.0},
            "eval": {"before_after": False},
            "logging": {"report_to": [], "progress_bar": False}}))
        return path

    one = train(recipe("one"), "trainer.grad_accum=2")
    assert one.returncode == 0, one.stderr[-3000:]
    z3 = train(recipe("z3"), *zero(tmp_path, 3), timeout=400)
    assert z3.returncode == 0, z3.stderr[-3000:]
    assert "ZeRO-3" in z3.stderr
    for t in (0,):
        gen = [[json.loads(x)["generated_ids"] for x in (tmp_path / out / "spin" /
               f"iteration-{t}" / "generated.jsonl").read_text().splitlines()]
               for out in ("one", "z3")]
        assert gen[0] == gen[1]
    assert_same_model(tmp_path / "one", tmp_path / "z3", policy)
    assert_same_metrics(history(tmp_path / "one"), history(tmp_path / "z3"),
                        ("loss", "spin/iteration"))


def test_fsdp2_dpo_on_two_processes_equals_one_process(tmp_path, policy, one_process):
    """FSDP2: every block and the root sharded over both processes; the trainer's fp32
    masters and Adam state are shards too; checkpoints hold whole tensors."""
    out = train(dpo_recipe(tmp_path, policy, tmp_path / "f"), *fsdp("trainer.save_every=2"),
                timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(FSDP, CPU)" in out.stderr and "FSDP2" in out.stderr
    assert_same_model(one_process, tmp_path / "f", policy)
    assert_same_metrics(history(one_process), history(tmp_path / "f"),
                        ("loss", "eval/loss", "rewards/margin", "grad_norm"))
    ckpt = tmp_path / "f" / "checkpoints" / "step-000004"
    saved = load_file(str(ckpt / "model" / "model.safetensors"))
    final = load_file(str(tmp_path / "f" / "final" / "model.safetensors"))
    assert saved.keys() <= final.keys()
    for name in saved:   # whole tensors, not one process's shard
        assert saved[name].shape == final[name].shape
    state = torch.load(ckpt / "trainer.pt", weights_only=False)["optimizer"]
    assert sum(m.numel() for m in state["master"]) == sum(t.numel() for t in saved.values())


def test_fsdp2_grpo_with_lora_equals_one_process(tmp_path, policy):
    """The online loop under FSDP2 with LoRA: the HF engine decodes in lockstep (each
    block gathered per token), π_ref is the policy with adapters off."""
    from test_distributed import grpo_recipe

    lora = ["model.lora.r=4", "model.lora.alpha=8", "trainer.lr=1e-2", "grpo.beta=0.05"]
    one = train(grpo_recipe(tmp_path, policy, tmp_path / "one"), "grpo.prompts_per_step=4",
                *lora)
    assert one.returncode == 0, one.stderr[-3000:]
    two = train(grpo_recipe(tmp_path, policy, tmp_path / "f"), *fsdp(*lora), timeout=400)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "FSDP2" in two.stderr
    assert_same_model(tmp_path / "one", tmp_path / "f", policy)
    assert_same_metrics(history(tmp_path / "one"), history(tmp_path / "f"),
                        ("reward", "loss", "eval/completion_length"), atol=1e-5)
