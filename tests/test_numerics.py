"""Numerics (issue #15): non-finite gradients are skipped and counted, fp16 without a loss
scaler is refused, non-finite rewards are named and never trained on, the reference
log-prob cache follows the data's content, and a weight sync one step stale is caught."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from alignment.config import recipe_from_dict
from alignment.trainers.base import TrainingError
from alignment.trainers.dpo import DPOTrainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    rows = (ROOT / "data/arithmetic/preference_chat/train.jsonl").read_text().splitlines()[:16]
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def dpo_recipe(out, model, pairs, dtype="float32", **trainer):
    return recipe_from_dict({
        "algorithm": "dpo", "output_dir": str(out),
        "model": {"name": model, "dtype": dtype},
        "data": {"train": str(pairs), "eval": None},
        "trainer": {"batch_size": 2, "grad_accum": 2, "max_steps": 3, "lr": 1e-3,
                    "save_every": None, "scheduler": "linear", **trainer},
        "eval": {"before_after": False},
        "logging": {"report_to": [], "progress_bar": False}})


class Recording(DPOTrainer):
    """Keeps the trainable weights (fp32 masters too) after every optimizer step."""

    def update(self, batches):
        metrics = super().update(batches)
        self.after.append([m.detach().clone() for m in self.optim.master])
        return metrics


def poison_gradient(trainer, at_steps: set[int], micro_batch: int = 0) -> None:
    """Add inf to one weight's gradient in one micro-batch of the chosen steps (1-based)."""
    param = next(p for p in trainer.policy.parameters() if p.requires_grad)
    calls = {"n": 0}
    per_step = trainer.cfg.grad_accum

    def hook(grad):
        step, micro = divmod(calls["n"], per_step)
        calls["n"] += 1
        if step + 1 in at_steps and micro == micro_batch:
            grad = grad.clone()
            grad.view(-1)[0] = float("inf")
        return grad

    param.register_hook(hook)


# ------------------------------------------------------------------ non-finite gradients
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_an_inf_gradient_skips_the_step_and_is_counted(tmp_path, tiny_model_dir, pairs_file,
                                                       dtype, capsys):
    runs = {}
    for name, poisoned in (("clean", set()), ("poisoned", {2})):
        trainer = Recording(dpo_recipe(tmp_path / name, tiny_model_dir, pairs_file, dtype))
        trainer.after = [[m.detach().clone() for m in trainer.optim.master]]   # before step 1
        # in the 2nd micro-batch of step 2: the first one's gradient is already accumulated
        poison_gradient(trainer, poisoned, micro_batch=1)
        trainer.train()
        runs[name] = trainer
    trainer = runs["poisoned"]
    rows = [json.loads(x) for x in (tmp_path / "poisoned/metrics.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in rows if "loss" in r}
    assert math.isfinite(steps[2]["loss"])                 # the loss was fine: the gradient not
    assert steps[2]["skipped"] == 1.0 and steps[2]["grad_norm"] == math.inf
    assert "skipped" not in steps[1] and "skipped" not in steps[3]
    assert trainer.skipped_steps == 1
    assert "step 2: non-finite gradient (norm inf), step skipped" in capsys.readouterr().err
    before, after_1, after_2, after_3 = trainer.after
    assert all(torch.equal(a, b) for a, b in zip(after_1, after_2, strict=True))   # no change
    assert not all(torch.equal(a, b) for a, b in zip(before, after_1, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(after_2, after_3, strict=True))
    assert all(torch.isfinite(m).all() for m in after_3)
    # the low-precision weights the model computes with are the masters' copy, unchanged too
    # (`final/` upcast them to fp32 after training: compare their values)
    computed_with = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    for p, m in zip(trainer.optim.params, after_3, strict=True):
        assert torch.equal(p.detach(), m.to(computed_with).to(p.dtype))
    # the skipped step left Adam's state alone: two updates counted, not three
    state = trainer.optim.optimizer.state_dict()["state"]
    assert {float(s["step"]) for s in state.values()} == {2.0}
    # the schedule follows the step count, as for a non-finite loss: step 3's lr as planned
    clean = {r["step"]: r for r in map(json.loads, (tmp_path / "clean/metrics.jsonl")
                                       .read_text().splitlines()) if "loss" in r}
    assert steps[3]["lr"] == clean[3]["lr"] and steps[1]["lr"] == clean[1]["lr"]
    # step 1 was the same in both runs: the hook itself changes nothing
    assert all(torch.equal(a, b) for a, b in zip(runs["clean"].after[1], after_1, strict=True))


def test_the_exported_model_is_the_bf16_model_trained_not_its_fp32_masters(
        tmp_path, tiny_model_dir, pairs_file):
    """`final/` holds the weights every forward pass used (bf16, upcast exactly), not the
    fp32 masters: those differ by up to half a bf16 step, a residue the loss never saw,
    and a GRPO run's masters answered 2% of add2 where its bf16 weights answered 64%."""
    from safetensors.torch import load_file

    trainer = DPOTrainer(dpo_recipe(tmp_path, tiny_model_dir, pairs_file, "bfloat16",
                                    lr=1e-5))
    trainer.train()
    names = {id(p): n for n, p in trainer.policy.named_parameters()}
    exported = load_file(str(tmp_path / "final" / "model.safetensors"))
    assert {t.dtype for t in exported.values()} == {torch.float32}
    residue = 0
    for p, master in zip(trainer.optim.params, trainer.optim.master, strict=True):
        trained = master.detach().to(torch.bfloat16).float()   # what the forward pass used
        assert torch.equal(exported[names[id(p)]], trained), names[id(p)]
        residue += int((master != trained).sum())
    assert residue > 0, "masters equal to their bf16 rounding: the test would prove nothing"


def test_non_finite_gradients_in_a_row_stop_the_run(tmp_path, tiny_model_dir, pairs_file):
    trainer = Recording(dpo_recipe(tmp_path, tiny_model_dir, pairs_file, max_steps=4,
                                   max_nan_steps=2))
    trainer.after = []
    poison_gradient(trainer, {2, 3})
    with pytest.raises(TrainingError, match="2 non-finite gradients in a row"):
        trainer.train()
    assert trainer.skipped_steps == 2


def test_the_decision_function_for_fp16():
    from alignment.models import training_dtype

    gpu = {"cuda": True, "cuda_bf16": True}
    old_gpu = {"cuda": True, "cuda_bf16": False}       # e.g. T4, V100: no bf16
    assert training_dtype("auto", **gpu) == torch.bfloat16
    assert training_dtype("auto", **old_gpu) == torch.float32            # not fp16 unscaled
    assert training_dtype("auto", **old_gpu, deepspeed=True) == torch.float16   # DS scales
    assert training_dtype("float16", **old_gpu, deepspeed=True) == torch.float16
    assert training_dtype("float32", **old_gpu) == torch.float32
    assert training_dtype("bfloat16", **gpu) == torch.bfloat16
    with pytest.raises(TrainingError, match=r"without a loss scaler.*model.dtype=float32.*"
                                            r"DeepSpeed"):
        training_dtype("float16", **old_gpu)
    with pytest.raises(TrainingError, match="use model.dtype=bfloat16"):
        training_dtype("float16", **gpu)
    with pytest.raises(TrainingError, match="use model.dtype=float32"):
        training_dtype("float16", cuda=False, cuda_bf16=False)


def test_a_float16_recipe_is_refused_before_anything_loads(tmp_path, pairs_file):
    recipe = dpo_recipe(tmp_path, "no-such-model", pairs_file, dtype="float16")
    with pytest.raises(TrainingError, match="float16 trains without a loss scaler"):
        DPOTrainer(recipe)


# ------------------------------------------------------------------ non-finite rewards
def test_group_advantages_leave_invalid_samples_out():
    from alignment.losses.grpo import group_advantages

    rewards = torch.tensor([1.0, math.nan, 0.0, 2.0, 5.0, math.inf, math.nan, 3.0],
                           dtype=torch.float64)
    adv = group_advantages(rewards, 4, eps=0.0, valid=torch.isfinite(rewards))
    # group 1: {1, 0, 2}: mean 1, std (ddof 1) 1; group 2: {5, 3}: mean 4, std sqrt(2)
    s = math.sqrt(2)
    expected = torch.tensor([0.0, 0.0, -1.0, 1.0, 1 / s, 0.0, 0.0, -1 / s], dtype=torch.float64)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-12)
    # all valid: the same as without the mask
    r = torch.tensor([0.5, 1.5, 1.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(group_advantages(r, 4, valid=torch.ones(4, dtype=torch.bool)),
                               group_advantages(r, 4), rtol=0, atol=1e-15)
    # one valid sample left: no spread, no signal (scaled and unscaled)
    one = torch.tensor([math.nan, 2.0, math.nan, math.nan], dtype=torch.float64)
    for scale in (True, False):
        assert group_advantages(one, 4, scale=scale, valid=torch.isfinite(one)).eq(0).all()


def test_pairs_are_never_made_with_a_non_finite_reward():
    from alignment.trainers.pair_sampling import select_pairs

    rewards = [math.nan, 1.0, 0.0, 2.0,   0.5, math.inf, 0.5, 0.5]
    assert select_pairs(rewards, 4) == ([(3, 2)], 1)              # best/worst of the rest
    assert select_pairs(rewards, 4, "consecutive") == ([(2, 3)], 1)   # (0,1), (4,5) dropped
    assert select_pairs([math.nan, 1.0], 2) == ([], 0)


def rewards_nan_and_inf(prompts, completions, rows):
    """A user reward that breaks on two samples (used by dotted path below)."""
    values = [float(len(c)) for c in completions]
    values[0], values[5] = math.nan, math.inf
    return values


def grpo_recipe(out, model, prompts, dtype="float64", **sections):
    base = {"algorithm": "grpo", "output_dir": str(out),
            "model": {"name": model, "dtype": dtype},
            "data": {"train": str(prompts), "eval": None, "max_prompt_length": 96,
                     "max_length": 128},
            "trainer": {"lr": 1e-3, "batch_size": 8, "max_steps": 2, "save_every": None,
                        "scheduler": "constant", "seed": 3},
            "grpo": {"prompts_per_step": 2, "num_generations": 4},
            "rollout": {"backend": "hf", "max_new_tokens": 6, "temperature": 1.0},
            "rewards": [{"name": "exact_answer"}],
            "eval": {"before_after": False},
            "logging": {"report_to": [], "progress_bar": False}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe_from_dict(base)


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    rows = (ROOT / "data/arithmetic/add2/train.jsonl").read_text().splitlines()[:16]
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_non_finite_rewards_are_named_and_never_trained_on(tmp_path, tiny_model_dir,
                                                           prompts_file, capsys):
    from alignment.losses.grpo import group_advantages
    from alignment.trainers.grpo import GRPOTrainer

    class Recording(GRPOTrainer):
        def make_batch(self, rollouts, rewards, truncated, info):
            samples = super().make_batch(rollouts, rewards, truncated, info)
            self.rounds.append((list(rewards), samples))
            return samples

    trainer = Recording(grpo_recipe(tmp_path, tiny_model_dir, prompts_file, rewards=[
        {"name": "test_numerics:rewards_nan_and_inf"}, {"name": "exact_answer"}]))
    trainer.rounds = []
    trainer.train()
    err = capsys.readouterr().err
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 2
    for step, row in enumerate(steps, start=1):
        assert row["reward_nonfinite"] == 2.0 and "skipped" not in row
        assert math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"])
        assert math.isfinite(row["reward"]) and math.isfinite(row["rewards/rewards_nan_and_inf"])
        # each named: step, prompt (file and line), which sample, which scorer, the value
        assert f"step {step}: non-finite reward on {prompts_file} line " in err
    assert err.count("sample 0 of its prompt (reward=nan, rewards_nan_and_inf=nan)") == 2
    assert err.count("sample 1 of its prompt (reward=inf, rewards_nan_and_inf=inf)") == 2
    for rewards, samples in trainer.rounds:
        assert len(samples) == 8
        for bad in (0, 5):            # masked out of the loss, advantage 0, reward kept as 0
            assert not any(samples[bad].loss_mask)
            assert samples[bad].advantage == 0.0 and samples[bad].reward == 0.0
        # the others: advantages from their group's finite rewards only
        for group, bad in ((0, 0), (1, 5)):
            idx = [i for i in range(4 * group, 4 * group + 4) if i != bad]
            finite = torch.tensor([rewards[i] for i in idx], dtype=torch.float64)
            expected = group_advantages(finite, 3, eps=trainer.g.std_eps)
            got = torch.tensor([samples[i].advantage for i in idx], dtype=torch.float64)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
            assert all(any(samples[i].loss_mask) for i in idx)


# ------------------------------------------------------------------ reference cache
def test_reference_cache_follows_the_data_content_not_its_path(tmp_path, tiny_model_dir,
                                                              pairs_file, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text(pairs_file.read_text())
    out = tmp_path / "run"

    def table(path, output_dir):
        trainer = DPOTrainer(dpo_recipe(output_dir, tiny_model_dir, path, grad_accum=1))
        trainer.before_training()
        computed = "computing reference log-probs" in capsys.readouterr().err
        return trainer._ref_table["train"], computed

    first, computed = table(data, out)
    assert computed and (out / "reference_logps.pt").is_file()
    again, computed = table(data, out)                  # same content, same path: cached
    assert not computed and torch.equal(again, first)
    moved = tmp_path / "elsewhere.jsonl"
    moved.write_text(data.read_text())
    again, computed = table(moved, out)                 # same content, another path: cached
    assert not computed and torch.equal(again, first)

    # edit the file in place: one pair's chosen answer changes, the path does not
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[0]["chosen"][0]["content"] = "I do not know, sorry.\n#### 0"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    edited, computed = table(data, out)
    assert computed
    fresh, _ = table(data, tmp_path / "fresh")           # what the edited data's table is
    torch.testing.assert_close(edited, fresh, rtol=0, atol=0)
    # (the pairs are re-tokenised in their own order: find the changed one by its logps)
    assert not torch.equal(edited, first)
    assert torch.isclose(edited, first).all(dim=1).sum() == len(rows) - 1


# ------------------------------------------------------------------ weight-sync check
def completion_length(prompts, completions, rows):
    """A reward with a signal for a random-ish policy: the updates move the weights."""
    return [float(len(c)) for c in completions]


def lm_step(model, optim, tokenizer, text="Paris is the capital of France. 2 + 2 = 4."):
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    optim.step()
    assert not optim.skipped


def test_an_engine_one_step_stale_in_bf16_is_caught(bundled_model_dir, tokenizer):
    from alignment.config.schema import TrainerConfig
    from alignment.models import load_causal_lm
    from alignment.rollout.hf import HFEngine
    from alignment.rollout.sync_check import StaleWeightsError
    from alignment.trainers.optim import MasterWeightOptimizer

    policy = load_causal_lm(bundled_model_dir, torch.bfloat16)
    # the engine holds its own copy, run with other attention kernels (eager vs the
    # trainer's sdpa), so its log-probs differ from the trainer's by rounding, as vLLM's do
    held = load_causal_lm(bundled_model_dir, torch.bfloat16)
    held.set_attn_implementation("eager")
    engine = HFEngine(held, tokenizer)
    tolerance = engine.sync_check.tolerance
    assert tolerance == 0.15
    engine.verify(policy)                                # the baseline (as at engine start)
    # a small AdamW step in bf16 (fp32 master weights): most weights do not change at all
    optim = MasterWeightOptimizer(list(policy.parameters()), TrainerConfig(lr=1e-6))

    def sync():
        held.load_state_dict(policy.state_dict())

    for _ in range(3):                                   # synced: never a false alarm
        lm_step(policy, optim, tokenizer)
        sync()
        assert engine.verify(policy) < tolerance
    lm_step(policy, optim, tokenizer)                    # ... and this step never arrives
    with pytest.raises(StaleWeightsError, match="the new weights did not arrive"):
        engine.verify(policy)
    # the gap alone could not tell: one bf16 step is well within the kernels' tolerance
    assert 0 < engine.last_probe_gap < tolerance / 2
    sync()                                               # late, but complete: fine again
    assert engine.verify(policy) < tolerance
    assert engine.verify(policy) < tolerance             # nothing moved: nothing judged


def test_the_online_loop_stops_on_an_engine_one_step_stale(tmp_path, bundled_model_dir,
                                                          prompts_file):
    from alignment.models import load_causal_lm
    from alignment.rollout.hf import HFEngine
    from alignment.rollout.sync_check import StaleWeightsError
    from alignment.trainers.grpo import GRPOTrainer

    class CopyEngine(HFEngine):
        """Samples from its own copy of the policy; `lag` = 1: each sync copies the
        weights of the sync before (an engine one optimizer step stale)."""

        lag = 0
        syncs = 0

        def sync_weights(self, model):
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.queue = [*getattr(self, "queue", []), state]
            if len(self.queue) > self.lag:
                self.model.load_state_dict(self.queue.pop(0))
            self.syncs += 1
            self.verify(model)
            return 0.0

    def run(lag: int, out):
        class Trainer(GRPOTrainer):
            def start_engine(self):
                super().start_engine()
                self.engine = CopyEngine(load_causal_lm(str(self.model_path), self.dtype),
                                         self.tokenizer)
                self.engine.lag = lag
                self.engine.verify(self.policy)

        trainer = Trainer(grpo_recipe(
            out, bundled_model_dir, prompts_file, dtype="bfloat16",
            trainer={"lr": 1e-6, "max_steps": 3},
            rewards=[{"name": "test_numerics:completion_length"}]))
        return trainer

    def steps(trainer, n):   # the loop of `train()`, without its checkpoint and export
        trainer.output_dir.mkdir(parents=True, exist_ok=True)   # (holds the run lock)
        trainer.before_training()
        for _ in range(n):
            row = trainer._train_step()
            assert "skipped" not in row and row["grad_norm"] > 0   # the weights moved
            trainer.step += 1

    synced = run(0, tmp_path / "synced")
    steps(synced, 2)                                     # synced: no false alarm
    assert synced.engine.syncs == 2
    stale = run(1, tmp_path / "stale")
    with pytest.raises(StaleWeightsError, match="the new weights did not arrive"):
        steps(stale, 2)
    assert stale.engine.syncs == 1 and stale.step == 0   # stopped at the first sync


DEEPSPEED_SCRIPT = '''
import json, math, sys
from pathlib import Path
import torch
from alignment.config import recipe_from_dict
from alignment.trainers.dpo import DPOTrainer

model, pairs, out = sys.argv[1:4]

class Recording(DPOTrainer):
    def update(self, batches):
        metrics = super().update(batches)
        self.after.append([p.detach().clone() for p in self.model.parameters()])
        return metrics

trainer = Recording(recipe_from_dict({
    "algorithm": "dpo", "output_dir": out, "model": {"name": model, "dtype": "float32"},
    "data": {"train": pairs, "eval": None},
    "trainer": {"batch_size": 2, "grad_accum": 2, "max_steps": 3, "lr": 1e-3,
                "save_every": None},
    "eval": {"before_after": False},
    "logging": {"report_to": [], "progress_bar": False}}))
trainer.after = [[p.detach().clone() for p in trainer.model.parameters()]]
param = next(p for p in trainer.model.parameters() if p.requires_grad)
calls = [0]

def hook(grad):   # inf in rank 0's 2nd micro-batch of step 2
    step, micro = divmod(calls[0], 2)
    calls[0] += 1
    if step == 1 and micro == 1 and trainer.rank == 0:
        grad = grad.clone()
        grad.view(-1)[0] = math.inf
    return grad

param.register_hook(hook)
trainer.train()
same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a, b))
# one file per process (two processes printing at once interleave their lines)
Path(out, f"result_{trainer.rank}.json").write_text(json.dumps({
    "rank": trainer.rank, "zero": trainer.zero_stage,
    "skipped": getattr(trainer, "skipped_steps", 0),
    "step_2_unchanged": same(trainer.after[1], trainer.after[2]),
    "steps_1_3_changed": not same(trainer.after[0], trainer.after[1])
                         and not same(trainer.after[2], trainer.after[3]),
    "finite": bool(all(torch.isfinite(p).all() for p in trainer.after[3]))}))
'''


@pytest.mark.slow
def test_an_inf_gradient_under_deepspeed_zero2_skips_the_step(tmp_path, tiny_model_dir,
                                                              pairs_file):
    """ZeRO-2 on 2 CPU processes: DeepSpeed's optimizer drops the step itself (its
    overflow check), the trainer reads `was_step_applied()` and counts it."""
    import os
    import socket
    import subprocess
    import sys

    pytest.importorskip("deepspeed")
    config = tmp_path / "zero2.yaml"
    config.write_text((ROOT / "launch/deepspeed_zero2.yaml").read_text())
    script = tmp_path / "poisoned.py"
    script.write_text(DEEPSPEED_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
         "--num_processes", "2", "--main_process_port", str(port), str(script),
         tiny_model_dir, str(pairs_file), str(tmp_path / "run")],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
        timeout=400, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads((tmp_path / "run" / f"result_{rank}.json").read_text())
               for rank in (0, 1)]
    for r in results:   # both processes skipped the same step: the weights stay replicated
        assert r["zero"] == 2 and r["skipped"] == 1 and r["step_2_unchanged"]
        assert r["steps_1_3_changed"] and r["finite"]
    assert "step 2: non-finite gradient" in out.stderr


@pytest.mark.vllm
@pytest.mark.bundled
def test_a_vllm_engine_one_step_stale_in_bf16_is_caught(bundled_model_dir, tokenizer):
    """The same with a real vLLM engine (its own kernels and bf16 weights): synced steps
    pass, a sync that is skipped once is caught."""
    pytest.importorskip("vllm")
    from alignment.config.schema import TrainerConfig
    from alignment.models import load_causal_lm
    from alignment.rollout.sync_check import StaleWeightsError
    from alignment.rollout.vllm_engine import VLLMEngine
    from alignment.trainers.optim import MasterWeightOptimizer

    policy = load_causal_lm(bundled_model_dir, torch.bfloat16)
    engine = VLLMEngine(bundled_model_dir, tokenizer, dtype="bfloat16", max_model_len=256)
    engine.sync_weights(policy)                          # as `make_engine` does
    optim = MasterWeightOptimizer(list(policy.parameters()), TrainerConfig(lr=1e-6))
    seen = []
    for _ in range(3):
        lm_step(policy, optim, tokenizer)
        engine.sync_weights(policy)                      # no false alarm across kernels
        seen.append((engine.last_probe_gap, *engine.sync_check.last_moves))
    lm_step(policy, optim, tokenizer)
    with pytest.raises(StaleWeightsError, match="the new weights did not arrive"):
        engine.verify(policy)
    seen.append((engine.last_probe_gap, *engine.sync_check.last_moves))
    print("vLLM bf16 (gap, trainer moved, engine moved) per sync, the last stale:",
          [tuple(round(x, 4) for x in row) for row in seen])
    assert seen[-1][2] == 0.0                            # a stale engine: exactly unmoved
    assert engine.last_probe_gap < engine.probe_tolerance   # the gap alone would pass it
    engine.sync_weights(policy)


def _trajectory(optimizer: str, dtype: torch.dtype, steps: int = 300) -> torch.Tensor:
    """Weights of ~0.05 stepped by AdamW at lr 1e-5 with a fixed noisy gradient: each
    update is ~2e-4 of the weight, below bf16's resolution (~4e-3)."""
    from alignment.config.schema import TrainerConfig
    from alignment.trainers.optim import MasterWeightOptimizer

    gen = torch.Generator().manual_seed(0)
    start = 0.05 + 0.01 * torch.randn(4096, generator=gen)
    grads = torch.randn(steps, 4096, generator=gen) + 0.5     # a drift + noise
    weight = torch.nn.Parameter(start.to(dtype).clone())
    optim = MasterWeightOptimizer([weight], TrainerConfig(lr=1e-5, optimizer=optimizer,
                                                          weight_decay=0.0,
                                                          max_grad_norm=None))
    for g in grads:
        weight.grad = g.to(dtype)
        optim.step()
    return weight.detach().double() - start.to(dtype).double()


def test_kahan_adamw_keeps_bf16_updates_that_plain_bf16_adamw_loses():
    """trainer.optimizer adamw_kahan (no fp32 master copy) moves bf16 weights as the fp32
    run moves them, where AdamW on the bf16 weights directly rounds most updates away."""
    exact = _trajectory("adamw", torch.float32)
    kahan = _trajectory("adamw_kahan", torch.bfloat16)
    master = _trajectory("adamw", torch.bfloat16)              # fp32 master copy
    weight = torch.nn.Parameter((0.05 + 0.01 * torch.randn(
        4096, generator=torch.Generator().manual_seed(0))).bfloat16())
    start = weight.detach().double().clone()
    bare = torch.optim.AdamW([weight], lr=1e-5, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    torch.randn(4096, generator=gen)
    for g in torch.randn(300, 4096, generator=gen) + 0.5:
        weight.grad = g.bfloat16()
        bare.step()
    bare_moved = weight.detach().double() - start

    def error(x):
        return ((x - exact).norm() / exact.norm()).item()

    # the rest is the rounding of the final bf16 weights themselves (~6% of the delta)
    assert exact.abs().mean() > 1e-3                              # the weights did move
    assert error(kahan) < 0.1 and error(master) < 0.1             # compensated / fp32 copy
    assert error(bare_moved) > 3 * error(kahan)                   # bf16 alone: lost updates
