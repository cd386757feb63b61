"""DPO / IPO trainers on tiny random Llamas: numbers, learning, resume, bad input."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from alignment.config import recipe_from_dict
from alignment.models import make_tiny_model
from alignment.trainers.base import TrainingError
from alignment.trainers.dpo import DPOTrainer
from alignment.trainers.ipo import IPOTrainer
from alignment.trainers.sequences import (
    collate_pairs,
    collate_sequences,
    completion_logps,
    pair_logps,
)

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def models(tmp_path_factory, bundled_model_dir):
    root = tmp_path_factory.mktemp("dpo-models")
    return {"policy": make_tiny_model(root / "policy", seed=1, tokenizer_from=bundled_model_dir),
            "ref": make_tiny_model(root / "ref", seed=0, tokenizer_from=bundled_model_dir)}


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    rows = (ROOT / "data/arithmetic/preference_chat/train.jsonl").read_text().splitlines()[:16]
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def make_recipe(out, algorithm="dpo", **sections):
    base = {"algorithm": algorithm, "output_dir": str(out),
            "eval": {"before_after": False},
            "logging": {"report_to": [], "progress_bar": False}}
    for key, value in sections.items():
        base[key] = value
    return recipe_from_dict(base)


# ------------------------------------------------------------------ batch layout

def test_shared_prompt_layout_equals_two_independent_sequences(models):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(models["policy"], dtype=torch.float64).eval()
    prompts = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]
    chosen = [[11, 12, 13], [14, 15, 16, 17, 18], [19]]
    rejected = [[21, 22], [23], [24, 25, 26, 27]]
    with torch.no_grad():
        shared = pair_logps(model, collate_pairs(prompts, chosen, rejected, pad_id=0))
        separate = completion_logps(model, collate_sequences(prompts + prompts,
                                                             chosen + rejected, pad_id=0))
        one_by_one = torch.stack([
            model(torch.tensor([p + c])).logits[0, len(p) - 1:-1].log_softmax(-1)
            .gather(-1, torch.tensor(c)[:, None]).sum()
            for p, c in zip(prompts + prompts, chosen + rejected, strict=True)])
    torch.testing.assert_close(shared, one_by_one, rtol=0, atol=1e-10)
    torch.testing.assert_close(separate, one_by_one, rtol=0, atol=1e-10)


# ------------------------------------------------------------------ numbers

@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_loss_equals_trl(tmp_path, models, pairs_file, loss_type):
    """Same tiny policy and reference, same batch: our loss = TRL's DPOTrainer loss."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig
    from trl import DPOTrainer as TRLDPOTrainer

    from alignment.models import load_tokenizer

    rows = [json.loads(line) for line in Path(pairs_file).read_text().splitlines()[:6]]
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, loss_type=[loss_type],
                     per_device_train_batch_size=6, report_to=[], max_length=None,
                     use_cpu=True)
    trl = TRLDPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(models["policy"], dtype=torch.float64),
        ref_model=AutoModelForCausalLM.from_pretrained(models["ref"], dtype=torch.float64),
        args=args, train_dataset=Dataset.from_list(rows),
        processing_class=load_tokenizer(models["policy"]))
    batch = next(iter(trl.get_train_dataloader()))
    trl_loss = trl.compute_loss(trl.model, batch).item()

    (tmp_path / "six.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    algorithm, section = ("dpo", {"beta": 0.1}) if loss_type == "sigmoid" else \
        ("ipo", {"tau": 0.1, "normalize": "mean"})
    recipe = make_recipe(tmp_path / "ours", algorithm,
                         model={"name": models["policy"], "reference": models["ref"],
                                "dtype": "float64"},
                         data={"train": str(tmp_path / "six.jsonl"), "eval": None},
                         trainer={"batch_size": 6}, **{algorithm: section})
    ours = (DPOTrainer if algorithm == "dpo" else IPOTrainer)(recipe)
    ours.before_training()
    our_loss = ours.compute_loss(ours.collate(ours.train_set))[0].item()
    # TRL's fused LM head computes log-probs in float32 even for a float64 model, which
    # bounds the agreement at ~1e-6 relative; 1e-5 relative is the contract.
    assert abs(our_loss - trl_loss) <= 1e-5 * max(1.0, abs(trl_loss)), (our_loss, trl_loss)


@pytest.mark.parametrize("algorithm, section, expected", [
    ("dpo", {"beta": 0.1}, math.log(2)),
    ("dpo", {"beta": 0.5, "reference": "model"}, math.log(2)),
    ("ipo", {"tau": 0.1, "normalize": "sum"}, 25.0),
    ("ipo", {"tau": 0.05, "normalize": "mean", "reference": "model"}, 100.0),
])
def test_first_step_loss_when_policy_is_reference(tmp_path, models, pairs_file, algorithm,
                                                  section, expected):
    recipe = make_recipe(tmp_path, algorithm, model={"name": models["policy"],
                                                     "dtype": "float64"},
                         data={"train": pairs_file, "eval": None},
                         trainer={"batch_size": 4}, **{algorithm: section})
    trainer = (DPOTrainer if algorithm == "dpo" else IPOTrainer)(recipe)
    trainer.before_training()
    loss, metrics = trainer.compute_loss(trainer.collate(trainer.train_set[:4]))
    assert loss.item() == pytest.approx(expected, abs=1e-9)
    assert metrics["rewards/margin"] == pytest.approx(0.0, abs=1e-9)


def test_rpo_adds_the_chosen_per_token_nll(tmp_path, models, pairs_file):
    recipe = make_recipe(tmp_path, "dpo", model={"name": models["policy"], "dtype": "float64"},
                         data={"train": pairs_file, "eval": None}, trainer={"batch_size": 4},
                         dpo={"beta": 0.1, "sft_weight": 0.5})
    trainer = DPOTrainer(recipe)
    trainer.before_training()
    pairs = trainer.train_set[:4]
    loss, metrics = trainer.compute_loss(trainer.collate(pairs))
    with torch.no_grad():  # the chosen NLL per token, from plain separate sequences
        logps = completion_logps(trainer.policy, collate_sequences(
            [p.prompt_ids for p in pairs], [p.chosen_ids for p in pairs], pad_id=0),
            average=True)
    nll = -logps.mean().item()
    assert metrics["loss/sft"].item() == pytest.approx(nll, rel=1e-9)
    assert loss.item() == pytest.approx(math.log(2) + 0.5 * nll, rel=1e-9)


def test_gradient_accumulation_is_exact(tmp_path, models, pairs_file):
    """One step over 8 pairs: batch 8 = 4 x 2 accumulated = 2 x 4 accumulated. (In pair
    rows: 8, 4 and 2 pairs would otherwise get different layouts, whose attention kernels
    differ by ~1e-7 in float64 — more than enough to flip Adam's first step on gradients
    near zero; tests/test_fused_logps.py checks the layouts against each other.)"""
    params = []
    for batch_size, accum in [(8, 1), (4, 2), (2, 4)]:
        recipe = make_recipe(tmp_path / f"b{batch_size}", "dpo",
                             model={"name": models["policy"], "dtype": "float64",
                                    "reference": models["ref"]},
                             data={"train": pairs_file, "eval": None, "train_limit": 8},
                             trainer={"batch_size": batch_size, "grad_accum": accum,
                                      "max_steps": 1, "lr": 1e-2, "save_every": None,
                                      "max_grad_norm": None})
        trainer = DPOTrainer(recipe)
        trainer.layout = "rows"
        trainer.train()
        params.append(torch.cat([p.detach().flatten() for p in trainer.policy.parameters()]))
    torch.testing.assert_close(params[1], params[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(params[2], params[0], rtol=0, atol=1e-12)


# ------------------------------------------------------------------ training runs

@pytest.mark.parametrize("algorithm, section", [("dpo", {"beta": 0.5}),
                                                ("ipo", {"tau": 0.5, "normalize": "sum"})])
def test_training_moves_the_preference_metrics(tmp_path, models, pairs_file, algorithm,
                                               section):
    recipe = make_recipe(tmp_path, algorithm, model={"name": models["policy"],
                                                     "dtype": "float32"},
                         data={"train": pairs_file, "eval": pairs_file},
                         trainer={"batch_size": 8, "lr": 3e-3, "max_steps": 16,
                                  "save_every": None, "warmup_steps": 0,
                                  "scheduler": "constant"},
                         **{algorithm: section})
    trainer = (DPOTrainer if algorithm == "dpo" else IPOTrainer)(recipe)
    trainer.before_training()
    before = trainer.evaluate_loss()
    summary = trainer.train()
    after = summary["final_eval"]
    assert after["eval/loss"] < before["eval/loss"] - 0.05, (before, after)
    assert after["eval/rewards/margin"] > before["eval/rewards/margin"]
    assert after["eval/rewards/accuracy"] >= 0.75
    out = Path(tmp_path)
    assert (out / "final" / "model.safetensors").is_file()
    assert (out / "summary.json").is_file() and (out / "curves.png").is_file()
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history if "loss" in r] == list(range(1, 17))


def test_lora_ipo_uses_disabled_adapters_as_reference(tmp_path, models, pairs_file):
    recipe = make_recipe(tmp_path, "ipo", model={"name": models["policy"], "dtype": "float32",
                                                 "lora": {"r": 4, "alpha": 8}},
                         data={"train": pairs_file, "eval": None},
                         trainer={"batch_size": 4, "lr": 1e-2, "max_steps": 3,
                                  "save_every": None},
                         ipo={"tau": 0.1, "reference": "model"})
    trainer = IPOTrainer(recipe)
    assert not hasattr(trainer, "_ref_model")
    trainer.train()
    assert not hasattr(trainer, "_ref_model")             # no second copy was loaded
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert history[0]["loss"] == pytest.approx(25.0, rel=1e-5)   # 1/(4 tau^2) at step 1
    final = tmp_path / "final"
    assert (final / "adapter" / "adapter_config.json").is_file()
    config = json.loads((final / "config.json").read_text())
    assert config["model_type"] == "llama"               # merged into a plain model
    trainable = [p for p in trainer.policy.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) < 100_000


def test_non_finite_losses_are_skipped_then_stop(tmp_path, models, pairs_file):
    class Exploding(DPOTrainer):
        def preference_loss(self, *args):
            loss, metrics = super().preference_loss(*args)
            return loss * float("nan"), metrics

    recipe = make_recipe(tmp_path, "dpo", model={"name": models["policy"], "dtype": "float32"},
                         data={"train": pairs_file, "eval": None},
                         trainer={"batch_size": 4, "max_steps": 4, "max_nan_steps": 2,
                                  "save_every": None})
    trainer = Exploding(recipe)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    with pytest.raises(TrainingError, match="2 non-finite losses in a row"):
        trainer.train()
    assert trainer.skipped_steps == 2
    for p, q in zip(trainer.policy.parameters(), before, strict=True):
        assert torch.equal(p, q)                          # skipped steps changed nothing


# ------------------------------------------------------------------ end to end, as a user

def _write_recipe(path: Path, models, pairs_file, out, **overrides) -> Path:
    recipe = {"algorithm": "dpo", "output_dir": str(out),
              "model": {"name": models["policy"], "dtype": "float32"},
              "data": {"train": pairs_file, "eval": None},
              "trainer": {"batch_size": 2, "lr": 1e-3, "max_steps": 12, "save_every": 3,
                          "keep_checkpoints": 2},
              "eval": {"before_after": False},
              "logging": {"report_to": []}}
    for key, value in overrides.items():
        recipe[key] = {**recipe.get(key, {}), **value}
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_accelerate_launch_runs_the_recipe_literally(tmp_path, models, pairs_file):
    recipe = _write_recipe(tmp_path / "dpo.yaml", models, pairs_file, tmp_path / "out",
                           trainer={"max_steps": 2, "save_every": None})
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    out = subprocess.run([accelerate, "launch", "--cpu", "--num_processes", "1", str(recipe)],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "out" / "final" / "config.json").is_file()
    assert "training dpo for 2 steps" in out.stderr


@pytest.mark.parametrize("rows, message", [
    ([{"prompt": "a", "chosen": "b"}], "missing column 'rejected'"),
    ([{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "",
                                                         "rejected": "c"}],
     "line 2: column 'chosen' is empty"),
    ([{"prompt": "a", "chosen": "same", "rejected": "same"}] * 3,
     "no usable preference pairs left (skipped 3 rows whose chosen and rejected are identical"),
    ([{"prompt": "word " * 400, "chosen": "b", "rejected": "c"}] * 2,
     "no usable preference pairs left (skipped 2 over-long rows"),
])
def test_bad_preference_data_is_reported(tmp_path, models, rows, message):
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = _write_recipe(tmp_path / "r.yaml", models, str(data), tmp_path / "out")
    out = subprocess.run([sys.executable, "-m", "alignment", "train", str(recipe)], env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert message in out.stderr and str(data) in out.stderr
    assert "Traceback" not in out.stderr


def test_skipped_rows_are_counted_and_training_goes_on(tmp_path, models, pairs_file):
    rows = [json.loads(x) for x in Path(pairs_file).read_text().splitlines()][:4]
    rows.append({"prompt": "q", "chosen": "same", "rejected": "same"})
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = _write_recipe(tmp_path / "r.yaml", models, str(data), tmp_path / "out",
                           trainer={"max_steps": 1, "save_every": None})
    out = subprocess.run([sys.executable, "-m", "alignment", "train", str(recipe)], env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "skipped 1 rows whose chosen and rejected are identical" in out.stderr
    assert f"{data} line 5" in out.stderr
