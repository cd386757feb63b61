"""PPO, APA and DR-PO on tiny random Llamas with the `hf` rollout backend: the critic's
per-token values in the packed layout, the direction of one update, the resets, the
run's logs and files, resume after a SIGKILL, data parallelism, PPO-max's options, and
clear failures."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_distributed import (
    CLI,
    ENV,
    assert_same_metrics,
    assert_same_model,
    history,
    train,
    two_processes,
)
from transformers import AutoModelForSequenceClassification

from alignment.config import ConfigError, recipe_from_dict
from alignment.data import DataError
from alignment.losses import adaptive_kl_coef
from alignment.trainers.apa import APATrainer
from alignment.trainers.drpo import DRPOTrainer
from alignment.trainers.online import Sample
from alignment.trainers.ppo import PPOTrainer
from alignment.trainers.sequences import collate_online, collate_sequences
from alignment.trainers.sft import demonstration_loss
from alignment.value_model import load_critic, token_values

ROOT = Path(__file__).resolve().parents[1]
TRAINERS = {"ppo": PPOTrainer, "apa": APATrainer, "drpo": DRPOTrainer}


@pytest.fixture(scope="module")
def policy(tmp_path_factory, bundled_model_dir):
    from alignment.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("ac") / "policy", seed=1,
                           tokenizer_from=bundled_model_dir)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    rows = (ROOT / "data/arithmetic/add2/train.jsonl").read_text().splitlines()[:16]
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    """Six add2 demonstrations (prompt / worked completion) for PPO-ptx."""
    rows = (ROOT / "data/arithmetic/add2_sft_plain/train.jsonl").read_text().splitlines()[:6]
    path = tmp_path_factory.mktemp("demos") / "demos.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def ac_dict(algorithm, out, policy, prompts, **sections) -> dict:
    base = {"algorithm": algorithm, "output_dir": str(out),
            "model": {"name": policy, "dtype": "float32"},
            "data": {"train": prompts, "eval": prompts, "eval_limit": 5,
                     "max_prompt_length": 96, "max_length": 128},
            "trainer": {"lr": 1e-3, "batch_size": 8, "max_steps": 3, "save_every": None,
                        "scheduler": "constant", "seed": 3, "eval_every": 3},
            algorithm: {"prompts_per_step": 2, "samples_per_prompt": 2, "epochs": 2,
                        # (half from the prompt: a reset answer never starts with a space)
                        **({"reset_column": "answer", "reset_prob": 0.5}
                           if algorithm == "drpo" else {})},
            "rollout": {"backend": "hf", "max_new_tokens": 6, "temperature": 1.0},
            # the tiny random model starts its answer with a space about half the time
            "rewards": [{"name": "regex", "pattern": "^ "}],
            "eval": {"before_after": False},
            "logging": {"report_to": [], "progress_bar": False}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return base


def ac_file(tmp_path, algorithm, out, policy, prompts, **sections) -> Path:
    path = tmp_path / f"{Path(out).name}.yaml"
    path.write_text(yaml.safe_dump(ac_dict(algorithm, out, policy, prompts, **sections)))
    return path


def make_trainer(algorithm, out, policy, prompts, **sections):
    trainer = TRAINERS[algorithm](recipe_from_dict(ac_dict(algorithm, out, policy, prompts,
                                                           **sections)))
    trainer.before_training()
    return trainer


# ------------------------------------------------------------------ the critic
@pytest.mark.parametrize("layout", ["grouped", "separate"])
def test_packed_values_equal_values_of_separate_sequences(policy, layout):
    critic = load_critic("policy", policy, torch.float64)
    torch.nn.init.normal_(critic.score.weight)   # (a fresh head is 0: make values vary)
    prompts = [[1, 5, 7, 9], [3, 4]]
    groups = [[[10, 11, 12], [13], [14, 15]], [[20, 21, 22, 23], [24, 25]]]
    from alignment.trainers.sequences import select_completion_columns

    packed_batch = collate_online(prompts, groups, 0, layout=layout)
    _, k, width = packed_batch["group_layout"]
    kept = token_values(critic, input_ids=packed_batch["input_ids"],
                        attention_mask=packed_batch["attention_mask"],
                        position_ids=packed_batch["position_ids"], keep=k * width + 1)
    packed = select_completion_columns(kept, packed_batch)
    flat_prompts = [p for p, g in zip(prompts, groups, strict=True) for _ in g]
    flat = collate_sequences(flat_prompts, [c for g in groups for c in g], 0)
    c = flat["completion_mask"].shape[1]
    plain = token_values(critic, input_ids=flat["input_ids"], attention_mask=flat["attention_mask"],
                         position_ids=flat["position_ids"], keep=c + 1)[:, :-1]
    mask = flat["completion_mask"]
    assert packed.shape == plain.shape == (5, 4)
    assert plain[mask].std() > 1e-3                  # real values, not a constant
    torch.testing.assert_close(packed[mask], plain[mask].float(), rtol=1e-6, atol=1e-6)


def test_critic_from_a_reward_model_keeps_its_head(tmp_path, policy):
    rm = load_critic("policy", policy, torch.float32)
    torch.nn.init.normal_(rm.score.weight)          # a "trained" head
    rm.save_pretrained(tmp_path / "rm")
    critic = load_critic("reward_model", policy, torch.float32, path=str(tmp_path / "rm"))
    torch.testing.assert_close(critic.score.weight, rm.score.weight)
    fresh = load_critic("policy", policy, torch.float32)
    assert not torch.equal(fresh.score.weight, rm.score.weight)
    assert fresh.score.weight.abs().max().item() == 0.0     # V = 0 until it learns


# ------------------------------------------------------------------ one update
def fixed_samples(trainer, scores):
    """Two prompts x 2 hand-made completions; all tokens the policy's own."""
    samples = []
    for i, score in enumerate(scores):
        completion = [40 + i, 41 + i, 42 + i][: 2 + i % 2]
        samples.append(Sample(trainer.train_set[i // 2].prompt_ids, completion,
                              [0.0] * len(completion), [True] * len(completion), reward=score,
                              group=i // 2))
    return samples


@pytest.mark.parametrize("algorithm", ["ppo", "apa"])
def test_updates_raise_good_samples_and_fit_the_critic(tmp_path, policy, prompts, algorithm):
    trainer = make_trainer(algorithm, tmp_path / "out", policy, prompts,
                           critic={"lr": 1e-2},
                           **{algorithm: {"epochs": 6, "kl_coef": 0.0, "value_clip": None}})
    samples = fixed_samples(trainer, [1.0, 0.0, 0.0, 1.0])
    batches = [trainer.collate(samples)]
    rollout = trainer.prepare_batches(batches)
    assert set(rollout) >= {"critic/values", "critic/returns", "critic/explained_variance"}
    before = batches[0]["old_logps"].clone()
    value_losses = []
    for step in trainer.update_plan(batches, trainer.train_set[0]):
        value_losses.append(trainer.update(step)["loss/value"])
    from alignment.trainers.sequences import group_token_logps

    with torch.no_grad():
        after = group_token_logps(trainer.policy, batches[0])
    mask = batches[0]["completion_mask"]
    moved = ((after - before) * mask).sum(1)        # per sample: Σ_t Δ log π
    assert moved[0] > 0 and moved[3] > 0            # score 1: more likely
    assert moved[1] < 0 and moved[2] < 0            # score 0: less likely
    assert len(value_losses) == 6 and value_losses[-1] < 0.5 * value_losses[0]


def test_minibatches_split_each_epoch_into_optimizer_steps(tmp_path, policy, prompts):
    trainer = make_trainer("ppo", tmp_path / "out", policy, prompts,
                           ppo={"epochs": 3, "minibatches": 2})
    assert trainer.micro_batch_size(4) == 2
    batches = [trainer.collate(s) for s in
               [fixed_samples(trainer, [1.0, 0.0, 0.0, 1.0])[i:i + 2] for i in (0, 2)]]
    plan = trainer.update_plan(batches, trainer.train_set[0])
    assert len(plan) == 6 and all(len(step) == 1 for step in plan)
    # a process with one micro-batch for two minibatches: the other gets a stand-in
    lonely = trainer.update_plan(batches[:1], trainer.train_set[0])
    assert sum(b.get("stand_in", False) for step in lonely for b in step) == 3


def test_ppo_max_critic_warmup_then_ptx_adds_the_sft_gradient(tmp_path, policy, prompts,
                                                              demos):
    """One PPO-max trainer. Its warm-up step (generated, scored, updated) moves the critic
    and not the policy, bit for bit, with no ptx batch, and logs the entropy and the clip
    shares. After it, the ptx term's gradient on the policy is ptx_coef x SFT's gradient
    on its demonstrations (the PPO term held at 0 by zero advantages; plain SGD)."""
    lr, coef = 0.05, 0.5
    trainer = make_trainer("ppo", tmp_path / "out", policy, prompts,
                           trainer={"optimizer": "sgd", "lr": lr, "max_grad_norm": None},
                           critic={"lr": lr},
                           ppo={"critic_warmup_steps": 1, "ptx_coef": coef, "ptx_data": demos,
                                "ptx_batch_size": 3, "reward_clip": 0.5,
                                "advantage_clip": 1.0, "epochs": 1})
    snapshot = lambda m: {k: v.clone() for k, v in m.state_dict().items()}  # noqa: E731
    policy0, critic0 = snapshot(trainer.policy), snapshot(trainer.critic)
    metrics = trainer._train_step()
    assert all(torch.equal(policy0[k], v) for k, v in trainer.policy.state_dict().items())
    assert not all(torch.equal(critic0[k], v) for k, v in trainer.critic.state_dict().items())
    assert metrics["critic_warmup"] == 1.0 and "loss/ptx" not in metrics
    assert 0 < metrics["policy/entropy"] <= math.log(len(trainer.tokenizer)) + 1e-3
    assert 0 <= metrics["reward/clipped_fraction"] <= 1
    assert 0 <= metrics["advantages/clipped_fraction"] <= 1

    trainer.step = 1                                         # warm-up over
    batches = [trainer.collate(fixed_samples(trainer, [1.0, 0.0, 0.0, 1.0]))]
    trainer.prepare_batches(batches)
    batches[0]["token_advantages"].zero_()
    plan = trainer.update_plan(batches, trainer.train_set[0])
    ptx = plan[0][0]
    assert len(plan) == 1 and plan[0][0]["term"] == "ptx"
    params = [p for p in trainer.policy.parameters() if p.requires_grad]
    nll, _ = demonstration_loss(trainer.policy, ptx)
    grads = torch.autograd.grad(nll, params)
    before = [p.detach().clone() for p in params]
    out = trainer.update(plan[0])
    for p, p0, g in zip(params, before, grads, strict=True):
        torch.testing.assert_close(p.detach(), p0 - lr * coef * g, rtol=1e-6, atol=1e-8)
    assert out["loss/ptx"] == pytest.approx(nll.item(), rel=1e-6)
    assert out["loss"] == pytest.approx(out["loss/policy"] + 0.1 * out["loss/value"]
                                        + coef * nll.item(), rel=1e-6)


# ------------------------------------------------------------------ whole runs
@pytest.mark.parametrize("algorithm", ["ppo", "apa", "drpo"])
def test_run_logs_critic_kl_time_split_and_saves_the_critic(tmp_path, policy, prompts,
                                                            algorithm):
    out = tmp_path / algorithm
    result = train(ac_file(tmp_path, algorithm, out, policy, prompts,
                           trainer={"save_every": 2},
                           **{algorithm: {"kl_coef": 0.05, "kl_target": 0.01}}))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [r for r in history(out) if "loss" in r]
    assert len(rows) == 3
    for key in ("loss/policy", "loss/value", "critic/values", "critic/explained_variance",
                "policy/kl", "kl_coef", "time/generate", "time/score", "time/prepare",
                "time/update", "time/sync", "rollout/logprob_gap_mean", "reward"):
        assert key in rows[0], key
    assert rows[0]["rollout/logprob_gap_max"] < 1e-4   # HF engine = the trainer's weights
    assert 0 < sum(r["reward"] for r in rows) < 3
    # adaptive KL: each step's coefficient follows from the previous one and the KL seen
    for prev, row in zip(rows, rows[1:], strict=False):
        expected = adaptive_kl_coef(prev["kl_coef"], row["policy/kl"], 0.01, 10000,
                                    int(row["samples"]))
        assert row["kl_coef"] == pytest.approx(expected, rel=1e-9)
    assert rows[-1]["kl_coef"] != 0.05
    assert (out / "checkpoints" / "step-000002" / "critic" / "model.safetensors").is_file()
    critic = AutoModelForSequenceClassification.from_pretrained(out / "final" / "critic")
    assert critic.config.num_labels == 1
    initial = load_critic("policy", policy, torch.float32)
    assert not torch.equal(critic.model.layers[0].mlp.up_proj.weight,
                           initial.model.layers[0].mlp.up_proj.weight)   # it trained


def test_ppo_with_a_reward_model_as_critic_and_reward(tmp_path, policy, prompts):
    """The documented override: critic initialised from a reward-model folder, which is
    also the reward (`rewards: [{name: reward_model, path: ...}]`)."""
    rm = load_critic("policy", policy, torch.float32)
    torch.nn.init.normal_(rm.score.weight)
    rm.save_pretrained(tmp_path / "rm")
    from alignment.models import load_tokenizer

    load_tokenizer(policy).save_pretrained(tmp_path / "rm")
    out = tmp_path / "out"
    result = train(ac_file(tmp_path, "ppo", out, policy, prompts,
                           critic={"init": "reward_model", "path": str(tmp_path / "rm")},
                           rewards=[{"name": "reward_model", "path": str(tmp_path / "rm")}]))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [r for r in history(out) if "loss" in r]
    assert all("rewards/reward_model" in r for r in rows)
    assert len({round(r["reward"], 6) for r in rows}) > 1          # real, varying scores
    assert abs(rows[0]["critic/explained_variance"]) > 0        # values from the RM's head


def test_lora_policy_and_critic(tmp_path, policy, prompts):
    """LoRA on both: π_ref is the policy with its adapters off, the critic trains its
    adapters and head, and final/ holds both merged (adapters kept beside them)."""
    out = tmp_path / "lora"
    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    result = train(ac_file(tmp_path, "ppo", out, policy, prompts, model={"lora": lora},
                           critic={"lora": lora}, ppo={"kl_coef": 0.05}))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [r for r in history(out) if "loss" in r]
    assert rows[0]["policy/kl"] == pytest.approx(0.0, abs=1e-6)   # step 1: π_old = π_ref
    for folder in (out / "final", out / "final" / "critic"):
        assert (folder / "model.safetensors").is_file() and (folder / "adapter").is_dir()
    critic = AutoModelForSequenceClassification.from_pretrained(out / "final" / "critic")
    initial = load_critic("policy", policy, torch.float32)
    assert not torch.equal(critic.model.layers[0].self_attn.q_proj.weight,
                           initial.model.layers[0].self_attn.q_proj.weight)   # merged


def test_killed_ppo_run_resumes_with_the_same_critic_kl_coef_and_curve(tmp_path, policy,
                                                                       prompts, demos):
    """With PPO-max's options on (no extra run): the running score moments come back from
    the checkpoint and the ptx demonstrations follow the same order."""
    sections = {"trainer": {"max_steps": 6, "save_every": 2, "eval_every": None},
                "ppo": {"kl_coef": 0.05, "kl_target": 0.01, "reward_norm": True,
                        "reward_clip": 1.5, "advantage_clip": 2.0, "critic_warmup_steps": 1,
                        "ptx_coef": 0.1, "ptx_data": demos, "ptx_batch_size": 2}}
    straight = ac_file(tmp_path, "ppo", tmp_path / "straight", policy, prompts, **sections)
    assert train(straight).returncode == 0
    killed = ac_file(tmp_path, "ppo", tmp_path / "killed", policy, prompts, **sections)
    proc = subprocess.Popen(CLI + [str(killed)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoints" / "step-000002"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert not (tmp_path / "killed" / "final").exists(), "killed too late to test resuming"
    resumed = train(killed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    for part in ("model.safetensors", "critic/model.safetensors"):
        a = load_file(str(tmp_path / "straight" / "final" / part))
        b = load_file(str(tmp_path / "killed" / "final" / part))
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6)
    h1 = [r for r in history(tmp_path / "straight") if "loss" in r]
    h2 = [r for r in history(tmp_path / "killed") if "loss" in r]
    assert [r["step"] for r in h2] == list(range(1, 7))
    for r1, r2 in zip(h1, h2, strict=True):
        for key in ("loss", "loss/value", "kl_coef", "reward", "reward/running_std",
                    "loss/ptx", "policy/entropy"):
            if key in r1 or key in r2:
                assert r2[key] == pytest.approx(r1[key], abs=1e-6), (key, r1["step"])
    assert "loss/ptx" in h1[-1] and h1[0]["critic_warmup"] == 1.0
    states = [json.loads((tmp_path / run / "checkpoints" / "step-000006" /
                          "trainer_state.json").read_text())["extra"]
              for run in ("straight", "killed")]
    assert states[0]["reward_moments"][0] == 6 * 4           # every score of the run
    assert states[1] == states[0]                            # bit for bit after the resume


# ------------------------------------------------------------------ DR-PO resets
def test_drpo_resets_force_reference_tokens_and_keep_them_out_of_the_loss(tmp_path, policy,
                                                                          prompts):
    trainer = make_trainer("drpo", tmp_path / "out", policy, prompts,
                           drpo={"reset_prob": 1.0, "samples_per_prompt": 3})
    prompts_used, rollouts = trainer.generate_rollouts(trainer.train_set[:2], 0)
    assert len(prompts_used) == 2 and len(rollouts) == 6
    assert rollouts.prompt_index == [0, 0, 0, 1, 1, 1]   # regrouped under their prompt
    forced_any = 0
    for i, completion in enumerate(rollouts.completion_ids):
        reference = prompts_used[rollouts.prompt_index[i]].reset_ids
        k = sum(rollouts.forced[i])
        assert 1 <= k <= len(reference) - 1         # L >= 2 here: always reset
        assert completion[:k] == reference[:k]
        forced_any += k
    samples = trainer.make_batch(rollouts, [1.0] * 6, [False] * 6, _stats())
    for sample, forced in zip(samples, rollouts.forced, strict=True):
        assert sample.loss_mask == [not f for f in forced]
    again = trainer.generate_rollouts(trainer.train_set[:2], 0)[1]
    assert again.completion_ids == rollouts.completion_ids   # seeded: resumable
    assert forced_any > 0


def _stats():
    from alignment.trainers.online import RoundStats

    return RoundStats()


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("sections, message", [
    ({"critic": {"init": "reward_model"}}, "critic.path is not set"),
    ({"ppo": {"clp": 0.1}}, "did you mean 'ppo.clip'"),
    ({"ppo": {"epochs": 0}}, "ppo.epochs"),
    ({"ppo": {"kl_estimator": "k2"}}, "k1"),
    ({"ppo": {"gae_lambda": 1.5}}, "ppo.gae_lambda"),
    ({"model": {"lora": {"r": 4, "dropout": 0.1}}}, "dropout must be 0"),
    ({"ppo": {"ptx_coef": 0.1}}, "ppo.ptx_coef is 0.1 but ppo.ptx_data is not set"),
    ({"ppo": {"ptx_coef": 0.1, "ptx_data": "no/such.jsonl"}},
     "ppo.ptx_data: 'no/such.jsonl' does not exist"),
    ({"ppo": {"ptx_batch_size": 4}}, "ppo.ptx_batch_size is only read with ppo.ptx_coef > 0"),
    ({"ppo": {"critic_warmup_steps": 3}},
     re.escape("ppo.critic_warmup_steps (3) must be smaller than trainer.max_steps (3)")),
    ({"ppo": {"advantage_clip": 0}}, "ppo.advantage_clip: must be > 0"),
])
def test_bad_actor_critic_keys_are_reported(tmp_path, policy, prompts, sections, message):
    with pytest.raises(ConfigError, match=message):
        recipe_from_dict(ac_dict("ppo", tmp_path, policy, prompts, **sections))


def test_ptx_data_without_completions_gets_sfts_error_before_training(tmp_path, policy,
                                                                      prompts):
    from alignment.preflight import check_data

    ppo = recipe_from_dict(ac_dict("ppo", tmp_path, policy, prompts,
                                   ppo={"ptx_coef": 0.1, "ptx_data": prompts}))
    sft = recipe_from_dict({"algorithm": "sft", "output_dir": str(tmp_path),
                            "data": {"train": prompts, "eval": None},
                            "eval": {"before_after": False}})
    errors = []
    for recipe in (ppo, sft):
        with pytest.raises(DataError) as err:
            check_data(recipe)
        errors.append(str(err.value))
    assert errors[0].startswith("ppo.ptx_data: ") and "SFT data needs" in errors[0]
    assert errors[0].removeprefix("ppo.ptx_data: ") == errors[1].removeprefix("data.train: ")


def test_critic_section_refused_for_algorithms_without_one(tmp_path, policy, prompts):
    raw = ac_dict("ppo", tmp_path, policy, prompts)
    raw["algorithm"] = "grpo"
    raw["grpo"] = raw.pop("ppo") and {"prompts_per_step": 2}
    raw["critic"] = {"lr": 1e-4}
    with pytest.raises(ConfigError, match="section 'critic' applies to"):
        recipe_from_dict(raw)


def test_critic_path_that_is_not_a_classifier_exits_2(tmp_path, policy, prompts):
    recipe = ac_file(tmp_path, "ppo", tmp_path / "out", policy, prompts,
                     critic={"init": "reward_model", "path": policy})
    result = train(recipe)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "not a sequence-classification model" in result.stderr
    assert "Traceback" not in result.stderr


def test_drpo_without_reference_responses_is_a_data_error(tmp_path, policy, prompts):
    with pytest.raises(DataError, match="no reference response in column 'completion'"):
        make_trainer("drpo", tmp_path / "out", policy, prompts, drpo={"reset_column":
                                                                      "completion"})


# ------------------------------------------------------------------ data parallel
def test_ppo_on_two_processes_trains_like_one(tmp_path, policy, prompts):
    """Rollout statistics (whitening, KL) are global: 2 ranks x 2 prompts = 1 x 4."""
    one = train(ac_file(tmp_path, "ppo", tmp_path / "one", policy, prompts),
                "ppo.prompts_per_step=4")
    assert one.returncode == 0, one.stderr[-3000:]
    two = train(ac_file(tmp_path, "ppo", tmp_path / "two", policy, prompts), *two_processes())
    assert two.returncode == 0, two.stderr[-3000:]
    _same_run(tmp_path / "one", tmp_path / "two", policy)


@pytest.fixture(scope="module")
def ppo_one_process(tmp_path_factory, policy, prompts):
    """PPO on one process, the reference of the sharded runs (unclipped: the DeepSpeed
    engine clips the norm of policy and critic gradients together, our optimizer each
    model's on its own; both documented)."""
    tmp = tmp_path_factory.mktemp("ppo_one")
    one = train(ac_file(tmp, "ppo", tmp / "one", policy, prompts), "ppo.prompts_per_step=4",
                "trainer.max_grad_norm=null")
    assert one.returncode == 0, one.stderr[-3000:]
    return tmp / "one"


@pytest.mark.slow
# (ZeRO-2 left out for time: DDP (test_ppo_on_two_processes_trains_like_one) and ZeRO-3
# bracket it, and its checkpoints are tested by test_kill_resume's zero2 case)
@pytest.mark.parametrize("sharding", ["zero3", "fsdp2"])
def test_ppo_sharded_trains_like_one_process(tmp_path, policy, prompts, ppo_one_process,
                                             sharding):
    """Under ZeRO-3 and FSDP2 policy, critic (its zero-initialised head included) and,
    under ZeRO-3, the frozen π_ref are sharded over the two processes; every forward
    gathers them. FSDP2 makes policy and critic units of their own (the rollout, π_old
    and V_old passes call each directly)."""
    from test_sharding import fsdp, zero

    launch = fsdp() if sharding == "fsdp2" else zero(tmp_path, int(sharding[-1]))
    out = train(ac_file(tmp_path, "ppo", tmp_path / "z", policy, prompts), *launch,
                "trainer.max_grad_norm=null", timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert ("FSDP2" if sharding == "fsdp2" else f"ZeRO-{sharding[-1]}") in out.stderr
    _same_run(ppo_one_process, tmp_path / "z", policy)


def _same_run(a: Path, b: Path, policy: str) -> None:
    assert_same_model(a, b, policy)
    ca, cb = (load_file(str(p / "final" / "critic" / "model.safetensors")) for p in (a, b))
    for name in ca:
        torch.testing.assert_close(cb[name], ca[name], rtol=0, atol=1e-5)
    assert_same_metrics(history(a), history(b), ("reward", "loss", "loss/value", "policy/kl",
                                                 "critic/explained_variance"))


