"""Kill anywhere, resume exactly: a short SIGKILL campaign on DPO and GRPO (the long one is
`bench/kill_resume.py`), the checks it relies on, hidden leftovers of killed saves, a
resume refused when the recipe changed, and (slow) SIGKILLed 2-process DDP and ZeRO-2 runs
resumed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alignment import atomic
from alignment.config import dump_recipe, recipe_from_dict
from alignment.trainers import checkpoint
from alignment.trainers.dpo import DPOTrainer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import kill_resume as kr  # noqa: E402

K = kr.Kill
# every kill point, a random moment in a step and one during start-up/resume (~40 s)
SHORT_CAMPAIGN = [("dpo", [K("checkpoint", nth=2), K("random", at=0.5, delay=1.0),
                           K("step", nth=2)]),
                  ("grpo", [K("sync", nth=3), K("checkpoint", nth=1), K("start", delay=4.0)])]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    return root, kr.campaign(root, 0, cases=SHORT_CAMPAIGN)


def test_short_campaign_survives_every_kill(campaign):
    _, result = campaign
    problems = [(c["recipe"], c.get("error"), c.get("problems")) for c in campaign[1]["cases"]
                if not c["ok"]]
    assert not problems
    killed = [x["kill"]["how"] for c in result["cases"] for x in c["launches"] if x["killed"]]
    # the kill points are reached by construction; the timed kills may come too late
    assert {"checkpoint", "step", "sync"} <= set(killed) and len(killed) >= 4, killed
    assert result["survived"] == result["kills"] == len(killed)
    assert result["lost_steps"] == 0 and result["repeated_steps"] == 0
    assert result["max_rel_diff"] == 0.0   # bitwise, on CPU
    resumed = [x for c in result["cases"] for x in c["launches"] if x["from_step"] > 0]
    assert resumed, "no launch resumed from a checkpoint"


def test_the_comparison_sees_lost_repeated_and_changed_steps(campaign, tmp_path):
    root, _ = campaign
    copy = tmp_path / "copy"
    shutil.copytree(root / "dpo-reference", copy)
    rows = kr.read_jsonl(copy / "metrics.jsonl")
    train = [i for i, r in enumerate(rows) if "step_seconds" in r]
    rows[train[6]]["loss"] *= 1 + 1e-5           # a value off by 10x the tolerance
    rows.insert(train[4], dict(rows[train[4]]))  # a step done twice
    del rows[train[2]]                           # a step lost
    (copy / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = kr.compare(root / "dpo-reference", copy)
    assert result["lost"] == 1 and result["repeated"] == 1
    assert any("loss" in p for p in result["problems"])
    assert kr.check_checkpoints(copy) == []
    half = sorted((copy / "checkpoints").iterdir())[-1]
    (half / "trainer.pt").unlink()
    assert kr.check_checkpoints(copy) and half.name in kr.check_checkpoints(copy)[0]


def test_restart_restores_a_checkpoint_set_aside_and_clears_leftovers(tmp_path):
    root = tmp_path / "checkpoints"
    for name in ("step-000003", ".step-000006.old", ".step-000009.x1.tmp",
                 ".step-000001.trash"):
        (root / name).mkdir(parents=True)
        (root / name / "trainer_state.json").write_text("{}")
    checkpoint.remove_partial(tmp_path)   # killed between replace_dir's two renames
    assert sorted(p.name for p in root.iterdir()) == ["step-000003", "step-000006"]
    # replace_dir over an existing folder, and remove_dir: no hidden name stays behind
    new = tmp_path / "new"
    new.mkdir()
    (new / "f").write_text("new")
    atomic.replace_dir(new, root / "step-000006")
    assert (root / "step-000006" / "f").read_text() == "new" and not new.exists()
    atomic.remove_dir(root / "step-000003")
    assert sorted(p.name for p in root.iterdir()) == ["step-000006"]


def _dpo(out: Path, files: dict, **trainer) -> dict:
    return {"algorithm": "dpo", "output_dir": str(out),
            "model": {"name": files["model"], "dtype": "float32"},
            "data": {"train": files["pairs"], "eval": None},
            "trainer": {"batch_size": 2, "lr": 1e-3, "max_steps": 2, "save_every": 2,
                        "threads": 1, **trainer},
            "eval": {"before_after": False},
            "logging": {"report_to": [], "progress_bar": False}}


def test_resume_with_a_changed_recipe_stops_and_lists_the_changes(campaign, tmp_path, capsys):
    root, _ = campaign
    files = {"model": str(root / "policy"), "pairs": str(root / "pairs.jsonl")}
    out = tmp_path / "run"
    DPOTrainer(recipe_from_dict(_dpo(out, files))).train()
    changed = _dpo(out, files, lr=2e-3, max_steps=4, save_every=1)   # lr: not allowed
    changed["dpo"] = {"beta": 0.2}
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    cli = subprocess.run([sys.executable, "-m", "alignment", "train", str(path)],
                         env=kr.ENV, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 2, cli.stderr[-2000:]
    message = cli.stderr[cli.stderr.index("error:"):]
    assert "dpo.beta: 0.1 -> 0.2" in message and "trainer.lr: 0.001 -> 0.002" in message
    assert "max_steps" not in message and "save_every" not in message   # may change
    assert "trainer.resume_ignore_changes=true" in message
    assert checkpoint.latest_checkpoint(out).name == "step-000002"   # nothing overwritten

    changed["trainer"]["resume_ignore_changes"] = True
    summary = DPOTrainer(recipe_from_dict(changed)).train()
    assert summary["steps"] == 4
    assert "with a changed recipe" in capsys.readouterr().err


def test_recipe_changes_ignore_only_the_keys_that_may_change():
    base = recipe_from_dict({"algorithm": "dpo"})
    other = recipe_from_dict({"algorithm": "dpo", "output_dir": "elsewhere",
                              "trainer": {"max_steps": 9, "threads": 1, "eval_every": 3},
                              "launch": {"num_processes": 2}, "logging": {"report_to": []},
                              "eval": {"limit": 5}, "model": {"lora": {"r": 8}}})
    assert checkpoint.recipe_changes(dump_recipe(base), dump_recipe(other)) == [
        "model.lora.r: 0 -> 8"]
    # a key the checkpoint's version did not have
    assert checkpoint.recipe_changes("algorithm: dpo\n", "algorithm: dpo\nnew_key: 1\n") == [
        "new_key: <absent> -> 1"]


@pytest.mark.slow   # 3 two-process runs, ~60 s
def test_sigkilled_two_process_run_with_dropout_resumes_exactly(campaign, tmp_path):
    """Each process's own RNG state comes back: LoRA dropout draws differ by rank (their
    batches differ), so restoring rank 0's state on both would change the curve."""
    root, _ = campaign
    files = {"model": str(root / "policy"), "pairs": str(root / "pairs.jsonl")}
    straight = kr.write_recipe(tmp_path, "dpo", "straight", files, processes=2)
    assert kr.launch(straight)["rc"] == 0
    killed = kr.write_recipe(tmp_path, "dpo", "killed", files, processes=2)
    result = kr.run_case(killed, tmp_path / "straight", [K("step", nth=5)], 0.1)
    assert result["ok"] and result["kills"] == 1, result
    assert [x["from_step"] for x in result["launches"]] == [0, 3]
    assert result["max_rel_diff"] == 0.0


@pytest.mark.slow   # ~3 DeepSpeed starts of ~25 s (FSDP2: ~15 s)
@pytest.mark.parametrize("sharding", ["zero2", "fsdp2"])
def test_sigkilled_sharded_run_resumes_exactly(tmp_path, sharding):
    import torch
    from safetensors.torch import load_file
    from test_distributed import ENV, dpo_recipe, history, train
    from test_sharding import fsdp, zero

    from alignment.models import make_tiny_model

    def launch(*more):
        return zero(tmp_path, 2, *more) if sharding == "zero2" else fsdp(*more)

    policy = make_tiny_model(tmp_path / "policy", seed=1, tokenizer_from="smollm2-135m")
    settings = ["trainer.save_every=2", "trainer.max_steps=6"]
    straight = dpo_recipe(tmp_path, policy, tmp_path / "straight", eval_every=None)
    done = train(straight, *launch(*settings), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = dpo_recipe(tmp_path, policy, tmp_path / "killed", eval_every=None)
    # rank 0 kills itself while writing step 4's checkpoint (DeepSpeed shards / gathered
    # weights written, trainer_state.json not yet); the launcher then stops rank 1
    env = {**ENV, "ALIGNMENT_KILL_AT": "checkpoint:2"}
    first = subprocess.run([*kr.CLI, str(killed), *launch(*settings)], env=env,
                           capture_output=True, text=True, timeout=400)
    assert first.returncode != 0 and not (tmp_path / "killed" / "final").exists()
    assert kr.check_checkpoints(tmp_path / "killed") == []
    assert kr.latest_step(tmp_path / "killed") == 2
    if sharding == "fsdp2":
        shutil.copytree(tmp_path / "killed", tmp_path / "alone")
    second = train(killed, *launch(*settings), timeout=400)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr and "step-000002" in second.stderr
    result = kr.compare(tmp_path / "straight", tmp_path / "killed")
    assert result["lost"] == result["repeated"] == 0 and not result["problems"], result
    assert [r["step"] for r in history(tmp_path / "killed") if "loss" in r] == [1, 2, 3, 4, 5, 6]
    if sharding == "fsdp2":
        # FSDP2 checkpoints hold whole tensors: the same step-2 checkpoint also resumes on
        # one process (the masters and Adam state re-assembled), on the sharded run's curve
        alone = dpo_recipe(tmp_path, policy, tmp_path / "alone", eval_every=None)
        one = train(alone, *settings, "trainer.grad_accum=2", "trainer.resume_ignore_changes=true")
        assert one.returncode == 0, one.stderr[-3000:]
        assert "written by 2 process(es)" in one.stderr and "step-000002" in one.stderr
        losses = [[r["loss"] for r in history(tmp_path / o) if "loss" in r]
                  for o in ("straight", "alone")]
        assert len(losses[1]) == 6 and losses[1] == pytest.approx(losses[0], abs=1e-5)
        a, b = (load_file(str(tmp_path / o / "final" / "model.safetensors"))
                for o in ("straight", "alone"))
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5)


def test_a_dying_or_hung_engine_saves_the_step_and_resumes_exactly(campaign, tmp_path):
    """The engine raises in step 4's generate call (call 5: the first is the eval before
    training): the run saves step 3 (no checkpoint there: save_every=2), says so, exits 3.
    The same command resumes; its engine then never returns from step 6's call (call 4 of
    that launch: steps 4, 5, 6 and the eval after step 4), and the watchdog
    (rollout.timeout_s) saves step 5 and exits 3. The third launch finishes, and the curve
    is the uninterrupted run's, bitwise."""
    root, _ = campaign
    files = {"model": str(root / "policy"), "prompts": str(root / "prompts.jsonl")}
    recipe = kr.write_recipe(tmp_path, "grpo", "run", files)
    data = yaml.safe_load(recipe.read_text())
    data["rollout"]["timeout_s"] = 5.0
    recipe.write_text(yaml.safe_dump(data))

    def launch(fault=None):
        env = {**kr.ENV, **({"ALIGNMENT_FAULT": fault} if fault else {})}
        done = subprocess.run([*kr.CLI, str(recipe)], env=env, capture_output=True, text=True,
                              timeout=300)
        errors = [x for x in done.stderr.splitlines() if x.startswith("error:")]
        return done, errors[-1] if errors else ""

    first, line = launch("engine_error:5")
    assert first.returncode == 3, first.stderr[-3000:]
    assert "the rollout engine (hf) failed in generate: RuntimeError" in line, line
    assert "saved checkpoint step-000003 (step 3 of 8): run the same command" in line, line
    assert kr.check_checkpoints(tmp_path / "run") == []
    second, line = launch("engine_hang:4")
    assert second.returncode == 3, second.stderr[-3000:]
    assert "resuming from" in second.stderr and "step-000003" in second.stderr
    assert "hung: generate did not return within rollout.timeout_s=5 s at step 6" in line, line
    assert "saved checkpoint step-000005 (step 5 of 8)" in line, line
    third, _ = launch()
    assert third.returncode == 0, third.stderr[-3000:]
    assert "step-000005" in third.stderr.split("resuming from")[1]
    result = kr.compare(root / "grpo-reference", tmp_path / "run")
    assert result["lost"] == result["repeated"] == 0 and not result["problems"], result
