"""Using a trained reward model: `alignment eval --reward-model`, `alignment score`, best-of-N
(`alignment generate`), folders from TRL's RewardTrainer, and the scorer inside training
rendering text exactly as the reward model was trained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from alignment.cli import main
from alignment.config import recipe_from_dict
from alignment.data import load_examples, scorer_prompt
from alignment.trainers.reward_model import RewardModelTrainer
from reward_models.reward_model import RewardModelScorer

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "data/arithmetic/add2_rm/train.jsonl"


def _pairs(tmp_path, n=16, name="pairs.jsonl") -> Path:
    rows = PAIRS.read_text().splitlines()[:n]
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def trained_rm(tmp_path_factory, tiny_model_dir):
    """Our trainer's reward model on a tiny Llama: (output dir, pairs file, trainer summary)."""
    tmp = tmp_path_factory.mktemp("rm")
    data = _pairs(tmp)
    recipe = recipe_from_dict({
        "algorithm": "reward_model", "output_dir": str(tmp / "rm"),
        "model": {"name": tiny_model_dir, "dtype": "float32"},
        "data": {"train": str(data), "eval": str(data)},
        "trainer": {"batch_size": 8, "lr": 3e-3, "max_steps": 30, "save_every": None,
                    "scheduler": "constant"},
        "logging": {"report_to": [], "progress_bar": False}})
    trainer = RewardModelTrainer(recipe)
    summary = trainer.train()
    return tmp / "rm", data, summary, trainer


def test_scorer_renders_exactly_the_training_tokens(trained_rm):
    out, data, _, trainer = trained_rm
    scorer = RewardModelScorer(str(out))          # an output dir resolves to final/
    pairs = trainer.load_examples(str(data), None, "eval")
    for pair, ex in zip(pairs, load_examples(str(data), "preference"), strict=True):
        for ids, side in ((pair.chosen_ids, "chosen"), (pair.rejected_ids, "rejected")):
            text = scorer.render(scorer_prompt(ex), ex.completions[side][-1]["content"])
            assert scorer.tokenizer(text, add_special_tokens=False)["input_ids"] == \
                pair.prompt_ids + ids


def test_eval_cli_reports_the_trainers_accuracy(trained_rm, tmp_path, capsys):
    out, data, summary, _ = trained_rm
    report = tmp_path / "rm_eval.json"
    assert main(["eval", "--reward-model", str(out), "--data", str(data), "--dtype", "float32",
                 "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    final = summary["final_eval"]
    assert result["n"] == 16
    assert result["accuracy"] == pytest.approx(final["eval/rewards/accuracy"], abs=1e-9)
    # same pairs, same rule; the margin to fp32 rounding of two layouts (one row per pair in
    # training, separate sequences here): alone this agrees to 1e-6, after other tests in
    # the same process CPU kernels differ by up to ~1e-3 relative (seen in CI)
    assert result["mean_margin"] == pytest.approx(final["eval/rewards/margin"], rel=2e-3)
    assert set(result["by"]["task"]) == {"add2"}
    assert set(result["by"]) == {"task"}
    printed = capsys.readouterr().out
    assert "overall" in printed and f"{result['accuracy']:.1%}" in printed


def test_eval_breaks_down_by_columns_and_counts_identical_pairs(trained_rm, tmp_path):
    out, data, _, _ = trained_rm
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows.append(dict(rows[0], rejected=rows[0]["chosen"]))          # an identical pair
    bad = tmp_path / "with_identical.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = tmp_path / "r.json"
    assert main(["eval", "--reward-model", str(out), "--data", str(bad), "--by", "task,error",
                 "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["n"] == 16
    assert result["skipped"]["identical chosen and rejected"]["n"] == 1
    errors = result["by"]["error"]
    assert sum(g["n"] for g in errors.values()) == 16
    assert set(errors) <= {"off_by_one", "carry", "digit_swap", "tens", "final_only"}


def test_bad_reward_model_folders_exit_2(tiny_model_dir, trained_rm, tmp_path, capsys):
    _, data, _, _ = trained_rm
    # a causal LM: no score head
    assert main(["eval", "--reward-model", tiny_model_dir, "--data", str(data)]) == 2
    assert "not a reward model" in capsys.readouterr().err
    # a reward model whose tokenizer lost its chat template, with no recipe saying how
    # it was trained
    folder = tmp_path / "no_template"
    shutil.copytree(trained_rm[0] / "final", folder)
    (folder / "recipe.yaml").unlink()
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert main(["score", "--reward-model", str(folder), "--input", str(data),
                 "--output", str(tmp_path / "s.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "no chat template" in err and "chat_template=false" in err
    assert not (tmp_path / "s.jsonl").exists()
    # ... and told to score plain text, it does
    scored = tmp_path / "plain.jsonl"
    rows = [{"prompt": "1 + 1 = ", "completion": "2"}]
    scored.write_text(json.dumps(rows[0]) + "\n")
    assert main(["score", "--reward-model", str(folder), "--set", "chat_template=false",
                 "--input", str(scored), "--output", str(tmp_path / "p.jsonl")]) == 0
    assert main(["eval", "--reward-model", str(tmp_path / "missing"),
                 "--data", str(data)]) == 2


def test_pairs_with_nothing_scorable_exit_2(trained_rm, tmp_path, capsys):
    out, _, _, _ = trained_rm
    same = tmp_path / "same.jsonl"
    same.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "a"}) + "\n")
    assert main(["eval", "--reward-model", str(out), "--data", str(same)]) == 2
    assert "no pair could be scored" in capsys.readouterr().err


# ---------------------------------------------------------------- TRL interoperability
def _trl_reward_trainer(model, tokenizer, pairs: Path, out: Path, steps: int):
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    chat = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                               "chosen": [{"role": "assistant", "content": r["chosen"]}],
                               "rejected": [{"role": "assistant", "content": r["rejected"]}]}
                              for r in rows])
    args = RewardConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=8,
                        per_device_eval_batch_size=16, learning_rate=3e-3, report_to=[],
                        save_strategy="no", logging_steps=1, bf16=False,
                        gradient_checkpointing=False, use_cpu=True, dataloader_num_workers=0)
    return RewardTrainer(model=model, args=args, processing_class=tokenizer,
                         train_dataset=chat, eval_dataset=chat)


def test_trl_reward_trainer_folder_scores_like_trl(tiny_model_dir, trained_rm, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from alignment.models import load_tokenizer

    _, data, _, _ = trained_rm
    tokenizer = load_tokenizer(tiny_model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    trl = _trl_reward_trainer(model, tokenizer, data, tmp_path / "trl_run", steps=20)
    trl.train()
    trl_eval = trl.evaluate()
    folder = tmp_path / "trl_rm"
    trl.save_model(str(folder))
    tokenizer.save_pretrained(str(folder))
    # TRL's own reward for each text (its tokenisation, its padding) vs our scorer's
    batch = next(iter(trl.get_eval_dataloader()))
    with torch.no_grad():
        trl.model.eval()
        trl_rewards = trl.model(input_ids=batch["input_ids"],
                                attention_mask=batch["attention_mask"]).logits[:, 0]
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    scorer = RewardModelScorer(str(folder))
    ours = scorer.score([r["prompt"] for r in rows] * 2,
                        [r["chosen"] for r in rows] + [r["rejected"] for r in rows]).rewards
    assert ours == pytest.approx(trl_rewards.tolist(), abs=1e-4)
    report = tmp_path / "e.json"
    assert main(["eval", "--reward-model", str(folder), "--data", str(data), "--dtype", "float32",
                 "--json", str(report)]) == 0
    assert json.loads(report.read_text())["accuracy"] == \
        pytest.approx(trl_eval["eval_accuracy"], abs=1e-6)


def test_trl_reward_trainer_evaluates_our_folder_the_same(trained_rm, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from alignment.models import load_tokenizer

    out, data, summary, _ = trained_rm
    model = AutoModelForSequenceClassification.from_pretrained(out / "final")
    trl = _trl_reward_trainer(model, load_tokenizer(str(out / "final")), data,
                              tmp_path / "trl_eval", steps=1)
    trl_eval = trl.evaluate()
    assert trl_eval["eval_accuracy"] == \
        pytest.approx(summary["final_eval"]["eval/rewards/accuracy"], abs=1e-6)


# ---------------------------------------------------------------- best-of-N
def test_best_of_n_keeps_the_highest_scored_sample(tiny_model_dir, trained_rm, tmp_path,
                                                   capsys):
    out, _, _, _ = trained_rm
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"What is {a} + {b}?", "answer": a + b,
                                           "task": "add2"}) + "\n"
                               for a, b in ((12, 30), (45, 27), (88, 11))))
    output = tmp_path / "best.jsonl"
    assert main(["generate", "--model", tiny_model_dir, "--data", str(prompts), "--n", "4",
                 "--reward-model", str(out), "--output", str(output), "--backend", "hf",
                 "--max-new-tokens", "6", "--keep-all", "--dtype", "float32"]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 3 and [r["answer"] for r in rows] == [42, 72, 99]
    scorer = RewardModelScorer(str(out))
    for row in rows:
        rewards = [c["reward"] for c in row["candidates"]]
        assert len(rewards) == 4 and row["reward"] == max(rewards)
        assert row["completion"] == row["candidates"][rewards.index(max(rewards))]["completion"]
        again = scorer.score([row["prompt"]], [row["completion"]]).rewards[0]
        assert again == pytest.approx(row["reward"], abs=1e-4)
    printed = capsys.readouterr().out
    assert "accuracy_best_of_n" in printed and "accuracy_any_of_n" in printed
    assert not list(tmp_path.glob(".best.jsonl*"))          # no temporary left behind


def test_generate_bad_arguments_exit_2(tiny_model_dir, trained_rm, tmp_path, capsys):
    out, data, _, _ = trained_rm
    assert main(["generate", "--model", tiny_model_dir, "--data", str(data), "--n", "0",
                 "--reward-model", str(out), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "--n must be positive" in capsys.readouterr().err
    assert main(["generate", "--model", tiny_model_dir, "--data", str(data),
                 "--reward-model", tiny_model_dir, "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "not a reward model" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


# ---------------------------------------------------------------- inside training
def test_online_scorers_get_the_prompt_as_written(tiny_model_dir, tmp_path):
    """The online loop hands scorers the data's prompt, not the policy's rendering (which a
    reward model would wrap in a second chat template)."""
    from alignment.trainers.grpo import GRPOTrainer

    data = ROOT / "data/arithmetic/add2/test.jsonl"
    recipe = recipe_from_dict({
        "algorithm": "grpo", "output_dir": str(tmp_path / "g"),
        "model": {"name": tiny_model_dir, "dtype": "float32"},
        "data": {"train": str(data), "train_limit": 8, "system_prompt": "Be brief."},
        "rollout": {"backend": "hf", "max_new_tokens": 4},
        "rewards": [{"name": "exact_answer"}],
        "logging": {"report_to": [], "progress_bar": False}})
    trainer = GRPOTrainer(recipe)
    prompts = trainer.load_prompts(str(data), 4)
    first = json.loads(data.read_text().splitlines()[0])
    assert prompts[0].raw == first["prompt"]
    assert "Be brief." in prompts[0].text and prompts[0].text != prompts[0].raw


def test_recipe_checks_the_reward_model_folder(trained_rm, tiny_model_dir, capsys):
    """`rewards: [{name: reward_model, path: ...}]` (e.g. GRPO with the reward model as its
    only reward) is checked when the recipe loads, before any model is."""
    out = trained_rm[0]
    recipe = str(ROOT / "recipes/grpo.yaml")
    assert main(["check", recipe, f"rewards=[{{name: reward_model, path: {out}}}]"]) == 0
    capsys.readouterr()
    assert main(["check", recipe, "rewards=[{name: reward_model, path: /no/such/rm}]"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["check", recipe,
                 f"rewards=[{{name: reward_model, path: {tiny_model_dir}}}]"]) == 2
    assert "not a reward model" in capsys.readouterr().err


def test_grpo_trains_on_the_reward_model_alone(trained_rm, tiny_model_dir, tmp_path):
    """The reward model as the only reward of an online run: every sample scored by it (no
    scorer errors), the rewards are its scores, and the policy takes its steps."""
    from alignment.trainers.grpo import GRPOTrainer

    data = ROOT / "data/arithmetic/add2/train.jsonl"
    recipe = recipe_from_dict({
        "algorithm": "grpo", "output_dir": str(tmp_path / "g"),
        "model": {"name": tiny_model_dir, "dtype": "float32"},
        "data": {"train": str(data), "train_limit": 8},
        "trainer": {"max_steps": 2, "save_every": None, "eval_every": None},
        "grpo": {"prompts_per_step": 2, "num_generations": 4},
        "rollout": {"backend": "hf", "max_new_tokens": 6},
        "rewards": [{"name": "reward_model", "path": str(trained_rm[0])}],
        "eval": {"before_after": False},
        "logging": {"report_to": [], "progress_bar": False}})
    trainer = GRPOTrainer(recipe)
    summary = trainer.train()
    assert summary["steps"] == 2
    rows = [json.loads(line) for line in (tmp_path / "g/metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward" in r]
    assert len(steps) == 2
    assert [r["reward_errors"] for r in steps] == [0, 0]
    # the logged samples carry the reward model's own score of (data prompt, completion)
    scorer = RewardModelScorer(str(trained_rm[0]))
    sample = json.loads((tmp_path / "g/samples.jsonl").read_text().splitlines()[0])
    suffix = "<|im_end|>\n<|im_start|>assistant\n"      # the sample keeps the text's tail
    prompt = next(p for p in (json.loads(line)["prompt"] for line in data.read_text()
                              .splitlines()[:8])
                  if (p + suffix).endswith(sample["prompt"]) or
                  sample["prompt"].endswith(p + suffix))
    assert scorer.score([prompt], [sample["completion"]]).rewards[0] == \
        pytest.approx(sample["reward"], abs=1e-4)
