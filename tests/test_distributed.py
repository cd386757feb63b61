"""Real multi-process runs on CPU (torchrun + gloo, started by `alignment train` itself):
data parallelism gives the same model as one process with the same global batch, a crash
on one rank stops every rank, and two "machines" on 127.0.0.1 train together (a SIGKILLed
two-process run resuming exactly: test_kill_resume.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from alignment.models import make_tiny_model
from alignment.trainers import batching

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
CLI = [sys.executable, "-m", "alignment", "train"]
# fp32 on 2 processes sums the same per-example gradients in another order: ~1e-7 apart
ATOL = 1e-5


@pytest.fixture(scope="module")
def policy(tmp_path_factory, bundled_model_dir):
    return make_tiny_model(tmp_path_factory.mktemp("dist") / "policy", seed=1,
                           tokenizer_from=bundled_model_dir)


def _rows(name: str, n: int, tmp_path: Path) -> str:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("\n".join((ROOT / f"data/arithmetic/{name}/train.jsonl").read_text()
                              .splitlines()[:n]) + "\n")
    return str(path)


def dpo_recipe(tmp_path: Path, policy: str, out: Path, **trainer) -> Path:
    pairs = _rows("preference_chat", 16, tmp_path)
    recipe = {"algorithm": "dpo", "output_dir": str(out),
              "model": {"name": policy, "dtype": "float32"},
              "data": {"train": pairs, "eval": pairs, "eval_limit": 8},
              "trainer": {"batch_size": 2, "lr": 1e-3, "max_steps": 4, "save_every": None,
                          "eval_every": 2, **trainer},
              "eval": {"before_after": False},
              "logging": {"report_to": [], "progress_bar": False}}
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def grpo_recipe(tmp_path: Path, policy: str, out: Path, rewards=None, **grpo) -> Path:
    prompts = _rows("add2", 16, tmp_path)
    recipe = {"algorithm": "grpo", "output_dir": str(out),
              "model": {"name": policy, "dtype": "float32"},
              "data": {"train": prompts, "eval": prompts, "eval_limit": 5,
                       "max_prompt_length": 96, "max_length": 128},
              "trainer": {"lr": 1e-3, "batch_size": 4, "max_steps": 3, "save_every": None,
                          "scheduler": "constant", "seed": 3, "eval_every": 3},
              "grpo": {"prompts_per_step": 2, "num_generations": 4,
                       "aggregation": "token_mean", **grpo},
              "rollout": {"backend": "hf", "max_new_tokens": 6, "temperature": 1.0},
              # the tiny random model starts its answer with a space about half the time
              "rewards": rewards or [{"name": "regex", "pattern": "^ "}],
              "eval": {"before_after": False},
              "logging": {"report_to": [], "progress_bar": False}}
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(recipe: Path, *overrides: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + [str(recipe), *overrides], env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def two_processes(*overrides: str) -> list[str]:
    return ["launch.num_processes=2", f"launch.main_process_port={free_port()}", *overrides]


def weights(out: Path) -> dict:
    return load_file(str(out / "final" / "model.safetensors"))


def history(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_metrics(h1: list[dict], h2: list[dict], keys: tuple[str, ...],
                        atol: float = ATOL) -> None:
    """Row by row, each of `keys` the first run logged equals the second run's. Every key
    must appear in some row: a key the trainer does not log (any more) would otherwise make
    the comparison silently empty."""
    compared = set()
    for r1, r2 in zip(h1, h2, strict=True):
        for key in keys:
            if key in r1:
                compared.add(key)
                assert r2[key] == pytest.approx(r1[key], abs=atol), (key, r1, r2)
    assert compared == set(keys), f"never logged: {sorted(set(keys) - compared)}"


def assert_same_model(a: Path, b: Path, initial: str) -> float:
    wa, wb, w0 = weights(a), weights(b), load_file(str(Path(initial) / "model.safetensors"))
    moved = max((wa[k] - w0[k]).abs().max().item() for k in wa)
    assert moved > 1e-3, "training did not move the weights: the comparison would be empty"
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=ATOL)
    return moved


def test_grpo_on_two_processes_samples_and_trains_like_one(tmp_path, policy):
    """Each rank generates its half of the step's prompts with per-prompt random streams:
    the same samples, rewards and update as one process taking all the prompts."""
    one = train(grpo_recipe(tmp_path, policy, tmp_path / "one"), "grpo.prompts_per_step=4")
    assert one.returncode == 0, one.stderr[-3000:]
    two = train(grpo_recipe(tmp_path, policy, tmp_path / "two"), *two_processes())
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_model(tmp_path / "one", tmp_path / "two", policy)
    h1, h2 = history(tmp_path / "one"), history(tmp_path / "two")
    assert [r["step"] for r in h1] == [r["step"] for r in h2] == [0, 1, 2, 3, 3]
    assert_same_metrics(h1, h2, ("reward", "completion_length", "samples", "tokens", "loss",
                                 "eval/accuracy", "eval/completion_length"),   # (eval: 3 + 2)
                        atol=1e-6)
    rewards = [r["reward"] for r in h1 if "reward" in r]
    assert rewards and all(0 < r < 1 for r in rewards)   # signal: the comparison means something


def test_prompt_shards_cover_each_step_once():
    """Online trainers: every prompt of a step goes to exactly one rank, and the prompts a
    step takes do not depend on the number of processes (only on the global batch)."""
    lengths = [i % 7 + 3 for i in range(40)]
    plan = batching.epoch_plan(lengths, batch_size=8, seed=0, epoch=0)
    for step in plan:
        shards = [step[rank::2] for rank in range(2)]
        assert sorted(shards[0] + shards[1]) == sorted(step)
        assert not set(shards[0]) & set(shards[1])
    assert sorted(i for step in plan for i in step) == list(range(40))


def reward_that_fails_on_rank_1(prompts, completions, rows):
    if os.environ.get("RANK") == "1":
        raise RuntimeError("reward server unreachable from rank 1")
    return [0.0] * len(completions)


def test_a_crash_on_one_rank_stops_all_ranks(tmp_path, policy):
    recipe = grpo_recipe(tmp_path, policy, tmp_path / "crash", rewards=[
        {"name": "test_distributed:reward_that_fails_on_rank_1", "on_error": "raise"}])
    start = time.time()
    out = train(recipe, *two_processes("trainer.max_steps=50"), timeout=180)
    assert out.returncode != 0
    assert time.time() - start < 150           # stopped, not left hanging in a collective
    assert "reward server unreachable from rank 1" in out.stderr
    assert "the run failed" in out.stderr
    assert not (tmp_path / "crash" / "final").exists()


def reward_with_signal_on_rank_0_only(prompts, completions, rows):
    if os.environ.get("RANK") == "1":
        return [0.0] * len(completions)   # every group equal: DAPO drops them all
    return [float(c.startswith(" ")) for c in completions]


def test_a_rank_left_without_samples_keeps_step_with_the_others(tmp_path, policy):
    """DAPO's dynamic sampling can leave one rank with nothing to train on: it joins the
    others' gradient sync with a zero-weight stand-in batch instead of hanging, and the
    step trains on rank 0's samples alone."""
    recipe = grpo_recipe(tmp_path, policy, tmp_path / "lonely", rewards=[
        {"name": "test_distributed:reward_with_signal_on_rank_0_only"}],
        dynamic_sampling=True, max_sampling_rounds=2)
    out = train(recipe, *two_processes("data.eval=null"), timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [r for r in history(tmp_path / "lonely") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(0 < r["samples"] <= 8 for r in rows)   # rank 0's 2 prompts x 4 at most
    assert all(r["grad_norm"] > 0 for r in rows if not r.get("skipped"))


def test_two_machines_on_localhost_train_together(tmp_path, policy):
    """The command lines of a 2-node job (one per node, machine ranks 0 and 1, one
    rendezvous address), both on 127.0.0.1, 1 process each, gloo: DPO's data parallelism
    gives the model, the losses and the logged means of one process."""
    recipe = dpo_recipe(tmp_path, policy, tmp_path / "nodes")
    port = free_port()
    common = ["launch.num_processes=2", "launch.num_machines=2",
              "launch.main_process_ip=127.0.0.1", f"launch.main_process_port={port}"]
    nodes = [subprocess.Popen(CLI + [str(recipe), *common, f"launch.machine_rank={rank}"],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=240) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-3000:]
    assert "machine 1 of 2" in outputs[1][1]
    single = train(dpo_recipe(tmp_path, policy, tmp_path / "single"), "trainer.grad_accum=2")
    assert single.returncode == 0, single.stderr[-3000:]
    assert_same_model(tmp_path / "single", tmp_path / "nodes", policy)
    h1, h2 = history(tmp_path / "single"), history(tmp_path / "nodes")
    # rank 0 alone writes: one line per logged step; metrics are global means
    assert [r["step"] for r in h2] == [r["step"] for r in h1] == [0, 1, 2, 3, 4, 4]
    # (DPO logs its margin and accuracy as rewards/*: the bare names matched nothing)
    assert_same_metrics(h1, h2, ("loss", "eval/loss", "rewards/margin", "rewards/accuracy",
                                 "eval/rewards/margin", "tokens"))
    assert not list((tmp_path / "nodes").glob("*rank*"))


def test_accelerate_launch_asking_for_two_cpu_processes_is_not_silently_one(tmp_path, policy):
    recipe = dpo_recipe(tmp_path, policy, tmp_path / "acc")
    accelerate = str(Path(sys.executable).parent / "accelerate")
    out = subprocess.run([accelerate, "launch", "--cpu", "--num_processes", "2", str(recipe)],
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0, out.stderr[-3000:]
    assert "error: accelerate launch was asked for several processes but started ONE" \
        in out.stderr
    assert "launch.num_processes=N" in out.stderr
    assert not (tmp_path / "acc" / "final").exists()


@pytest.mark.parametrize("launch, message", [
    ({"num_processes": 3, "num_machines": 2}, "is not a multiple of launch.num_machines=2"),
    ({"num_processes": 2, "num_machines": 2, "machine_rank": 2}, "launch.machine_rank=2 must"),
    ({"config_file": "FSDP"}, "fsdp_version 1 is not supported"),
    ({"config_file": "TPU"}, "distributed_type XLA is not supported"),
    ({"config_file": "BROKEN"}, "is not valid YAML"),
])
def test_bad_launch_settings_are_reported(tmp_path, launch, message):
    from alignment import launch as launcher
    from alignment.config import ConfigError, recipe_from_dict

    if launch.get("config_file") == "FSDP":
        path = tmp_path / "fsdp.yaml"
        path.write_text("distributed_type: FSDP\nnum_processes: 2\n")
        launch = {"config_file": str(path)}
    if launch.get("config_file") == "TPU":
        path = tmp_path / "tpu.yaml"
        path.write_text("distributed_type: XLA\nnum_processes: 2\n")
        launch = {"config_file": str(path)}
    if launch.get("config_file") == "BROKEN":
        path = tmp_path / "broken.yaml"
        path.write_text("distributed_type: [MULTI_CPU\n")
        launch = {"config_file": str(path)}
    recipe = recipe_from_dict({"algorithm": "dpo", "launch": launch})
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        launcher.plan(recipe)


def test_launch_plan_reads_the_config_file_and_the_recipe_wins(tmp_path):
    from alignment import launch as launcher
    from alignment.config import recipe_from_dict

    recipe = recipe_from_dict({"algorithm": "dpo", "launch": {
        "config_file": str(ROOT / "launch/multi_node.yaml"), "machine_rank": 1,
        "main_process_ip": "10.1.2.3"}})
    p = launcher.plan(recipe)
    assert (p.num_processes, p.num_machines, p.machine_rank, p.per_machine) == (16, 2, 1, 8)
    assert (p.main_process_ip, p.main_process_port, p.distributed_type) == \
        ("10.1.2.3", 29500, "MULTI_GPU")
    assert p.needs_launcher
    single = launcher.plan(recipe_from_dict({"algorithm": "dpo"}))
    assert not single.needs_launcher and single.num_processes == 1
    one_zero = launcher.plan(recipe_from_dict({"algorithm": "dpo", "launch": {
        "config_file": str(ROOT / "launch/deepspeed_zero2.yaml"), "num_processes": 1}}))
    assert one_zero.needs_launcher   # DeepSpeed on one process still goes through accelerate
    cmd, env = launcher.command("recipes/dpo.yaml", ["trainer.lr=1e-5"], p)
    assert env["ALIGNMENT_LAUNCHED"] == "1"
    assert cmd[-5:] == ["-m", "alignment.cli", "train", "recipes/dpo.yaml", "trainer.lr=1e-5"]
    if p.use_cpu:   # (this machine): torchrun, 8 processes here, node 1 of 2
        assert env["ACCELERATE_USE_CPU"] == "1"
        for arg in ("--nproc_per_node=8", "--nnodes=2", "--node_rank=1",
                    "--master_addr=10.1.2.3", "--master_port=29500"):
            assert arg in cmd
    else:
        assert cmd[1:4] == ["launch", "--config_file", str(ROOT / "launch/multi_node.yaml")]
