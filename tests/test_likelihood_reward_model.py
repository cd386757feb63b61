"""`reward_model.kind: likelihood`: the causal LM as its own reward model, r = β · log p(y|x),
trained with the Bradley-Terry loss; its folder scored, evaluated and used like a classifier."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from alignment.cli import main
from alignment.config import ConfigError, recipe_from_dict
from alignment.data import load_examples, scorer_prompt
from alignment.losses import bradley_terry_loss
from alignment.trainers.reward_model import RewardModelTrainer
from reward_models.reward_model import RewardModelError, RewardModelScorer

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "data/arithmetic/add2_rm/train.jsonl"
BETA = 0.5


def _recipe(tmp, tiny_model_dir, data, **overrides) -> dict:
    recipe = {
        "algorithm": "reward_model", "output_dir": str(tmp / "rm"),
        "model": {"name": tiny_model_dir, "dtype": "float32"},
        "data": {"train": str(data), "eval": str(data)},
        "trainer": {"batch_size": 8, "lr": 3e-3, "max_steps": 30, "save_every": None,
                    "scheduler": "constant"},
        "reward_model": {"kind": "likelihood", "beta": BETA},
        "logging": {"report_to": [], "progress_bar": False}}
    for key, value in overrides.items():
        recipe[key] = {**recipe.get(key, {}), **value}
    return recipe


@pytest.fixture(scope="module")
def likelihood_rm(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("lrm")
    data = tmp / "pairs.jsonl"
    data.write_text("\n".join(PAIRS.read_text().splitlines()[:16]) + "\n")
    trainer = RewardModelTrainer(recipe_from_dict(_recipe(tmp, tiny_model_dir, data)))
    before = trainer.evaluate_loss()
    summary = trainer.train()
    return tmp / "rm", data, before, summary, trainer


def _sum_logps(model, prompt_ids: list[int], completion_ids: list[int]) -> float:
    """log p(completion | prompt) from one plain forward pass over the whole sequence."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    token = logps.gather(1, ids[0, 1:, None])[:, 0]
    return token[len(prompt_ids) - 1:].sum().item()


def test_the_pair_row_margin_is_beta_times_the_log_likelihood_ratio(tmp_path, tiny_model_dir):
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(PAIRS.read_text().splitlines()[:6]) + "\n")
    trainer = RewardModelTrainer(recipe_from_dict(_recipe(tmp_path, tiny_model_dir, data)))
    trainer.model.double()
    pairs = trainer.load_examples(str(data), None, "train")
    batch = trainer.collate(pairs)
    assert batch["input_ids"].numel() < batch["n_tokens"]     # the shared start is computed once
    with torch.no_grad():
        loss, metrics = trainer.compute_loss(batch)
    model = trainer.accelerator.unwrap_model(trainer.model)
    margins = torch.tensor([
        BETA * (_sum_logps(model, p.prompt_ids, p.chosen_ids)
                - _sum_logps(model, p.prompt_ids, p.rejected_ids)) for p in pairs])
    expected, _ = bradley_terry_loss(margins, torch.zeros_like(margins))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert metrics["rewards/margin"].item() == pytest.approx(margins.mean().item(), abs=1e-6)


def test_likelihood_reward_model_learns_and_exports_a_causal_lm(likelihood_rm):
    out, _, before, summary, _ = likelihood_rm
    after = summary["final_eval"]
    # 16 pairs, 30 steps at lr 3e-3 on the tiny model: 0.69 -> < 0.3, accuracy 1.0 (seed 0)
    assert after["eval/loss"] < before["eval/loss"] - 0.2, (before, after)
    assert after["eval/rewards/accuracy"] >= 0.75
    config = json.loads((out / "final/config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    saved = yaml.safe_load((out / "final/recipe.yaml").read_text())
    assert saved["reward_model"]["kind"] == "likelihood" and saved["reward_model"]["beta"] == BETA


def test_scorer_reads_beta_times_the_completion_log_likelihood(likelihood_rm):
    out, data, _, _, trainer = likelihood_rm
    scorer = RewardModelScorer(str(out))
    assert scorer.beta == BETA
    pairs = trainer.load_examples(str(data), None, "eval")
    examples = load_examples(str(data), "preference")
    prompts = [scorer_prompt(ex) for ex in examples]
    completions = [ex.completions["chosen"][-1]["content"] for ex in examples]
    scores = scorer.score(prompts, completions).rewards
    for pair, score in zip(pairs, scores, strict=True):
        expected = BETA * _sum_logps(scorer.model, pair.prompt_ids, pair.chosen_ids)
        assert score == pytest.approx(expected, rel=1e-4, abs=1e-4)
    # a batch of one scores the same as the padded batch
    assert scorer.score(prompts[:1], completions[:1]).rewards[0] == pytest.approx(
        scores[0], rel=1e-4, abs=1e-4)


def test_eval_cli_reports_the_trainers_accuracy_and_margin(likelihood_rm, tmp_path):
    out, data, _, summary, _ = likelihood_rm
    report = tmp_path / "eval.json"
    assert main(["eval", "--reward-model", str(out), "--data", str(data), "--dtype", "float32",
                 "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    final = summary["final_eval"]
    assert result["n"] == 16
    assert result["accuracy"] == pytest.approx(final["eval/rewards/accuracy"], abs=1e-9)
    # the shared start adds the same log-prob to both: the margins are the whole sequences'
    assert result["mean_margin"] == pytest.approx(final["eval/rewards/margin"], rel=2e-3)
    # the length diagnostic: over the 32 scored completions, and per pair
    bias = result["length_bias"]
    assert bias["n"] == 32 and -1 <= bias["spearman"] <= 1
    assert bias["unequal_pairs"] <= 16
    assert (bias["shorter_preferred"] is None if bias["unequal_pairs"] == 0
            else 0 <= bias["shorter_preferred"] <= 1)


def test_likelihood_folder_checks(likelihood_rm, tmp_path, capsys):
    out, data, _, _, _ = likelihood_rm
    recipe = str(ROOT / "recipes/grpo.yaml")
    assert main(["check", recipe, f"rewards=[{{name: reward_model, path: {out}}}]"]) == 0
    capsys.readouterr()
    # the recipe says likelihood, the weights are a classifier: refused, not misread
    folder = tmp_path / "wrong"
    shutil.copytree(out / "final", folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["LlamaForSequenceClassification"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RewardModelError, match="not a \\*ForCausalLM"):
        RewardModelScorer(str(folder))
    # without its recipe.yaml the causal LM is no reward model at all
    (folder / "recipe.yaml").unlink()
    config["architectures"] = ["LlamaForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["eval", "--reward-model", str(folder), "--data", str(data)]) == 2
    assert "not a reward model" in capsys.readouterr().err


def test_classifier_only_keys_are_refused_with_likelihood(tmp_path, tiny_model_dir):
    data = tmp_path / "pairs.jsonl"
    data.write_text(PAIRS.read_text().splitlines()[0] + "\n")
    for key, value in (("token_weight", 1.0), ("lm_weight", 1.0), ("center_weight", 0.01),
                       ("lm_layer", 1)):
        with pytest.raises(ConfigError, match=f"reward_model.{key} applies to kind"):
            recipe_from_dict(_recipe(tmp_path, tiny_model_dir, data,
                                     reward_model={key: value}))
    with pytest.raises(ConfigError, match="reward_model.beta"):
        recipe_from_dict(_recipe(tmp_path, tiny_model_dir, data, reward_model={"beta": 0}))


def test_reference_scores_the_log_likelihood_ratio(likelihood_rm, tiny_model_dir, tmp_path,
                                                   capsys):
    """reference=True: β · (log p − log p_ref) against the model it was trained from."""
    from transformers import AutoModelForCausalLM

    out, data, _, _, trainer = likelihood_rm
    scorer = RewardModelScorer(str(out), reference=True)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    pairs = trainer.load_examples(str(data), None, "eval")[:4]
    examples = load_examples(str(data), "preference")[:4]
    scores = scorer.score([scorer_prompt(ex) for ex in examples],
                          [ex.completions["rejected"][-1]["content"] for ex in examples]).rewards
    for pair, score in zip(pairs, scores, strict=True):
        expected = BETA * (_sum_logps(scorer.model, pair.prompt_ids, pair.rejected_ids)
                           - _sum_logps(base, pair.prompt_ids, pair.rejected_ids))
        assert score == pytest.approx(expected, rel=1e-4, abs=1e-4)
    # a classifier has no reference: refused when the recipe is checked
    classifier = tmp_path / "clf"
    recipe_file = ROOT / "recipes/grpo.yaml"
    recipe = _recipe(tmp_path, tiny_model_dir, data, reward_model={"kind": "classifier"},
                     trainer={"max_steps": 1})
    RewardModelTrainer(recipe_from_dict({**recipe, "output_dir": str(classifier)})).train()
    assert main(["check", str(recipe_file),
                 f"rewards=[{{name: reward_model, path: {classifier}, reference: true}}]"]) == 2
    assert "likelihood reward models only" in capsys.readouterr().err


def test_reference_trained_reward_model_is_dpo_and_is_scored_as_trained(tmp_path,
                                                                       tiny_model_dir):
    """reward_model.reference: the Bradley-Terry loss on β · log p/p_ref (DPO's loss): log 2
    at step 0; after training, the loss on a batch is the margin of plain forward passes of
    the trained and the initial model; the exported folder is scored against the reference
    without being told."""
    from transformers import AutoModelForCausalLM

    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(PAIRS.read_text().splitlines()[:6]) + "\n")
    recipe = _recipe(tmp_path, tiny_model_dir, data, reward_model={"reference": True},
                     trainer={"max_steps": 3, "batch_size": 6})
    trainer = RewardModelTrainer(recipe_from_dict(recipe))
    assert trainer.evaluate_loss()["eval/loss"] == pytest.approx(np.log(2), abs=1e-6)
    trainer.train()
    pairs = trainer.load_examples(str(data), None, "train")
    with torch.no_grad():
        loss, _ = trainer.compute_loss(trainer.collate(pairs))
    model = trainer.accelerator.unwrap_model(trainer.model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()

    def reward(p, ids):
        return BETA * (_sum_logps(model, p.prompt_ids, ids) - _sum_logps(base, p.prompt_ids, ids))

    margins = torch.tensor([reward(p, p.chosen_ids) - reward(p, p.rejected_ids) for p in pairs])
    expected, _ = bradley_terry_loss(margins, torch.zeros_like(margins))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert abs(loss.item() - np.log(2)) > 1e-3                    # it did train
    scorer = RewardModelScorer(str(tmp_path / "rm"))              # reference: as trained
    example = load_examples(str(data), "preference")[0]
    score = scorer.score([scorer_prompt(example)],
                         [example.completions["chosen"][-1]["content"]]).rewards[0]
    assert score == pytest.approx(BETA * (_sum_logps(scorer.model, pairs[0].prompt_ids,
                                                     pairs[0].chosen_ids)
                                          - _sum_logps(base, pairs[0].prompt_ids,
                                                       pairs[0].chosen_ids)), abs=1e-4)
    with pytest.raises(ConfigError, match="reward_model.reference applies to kind"):
        recipe_from_dict(_recipe(tmp_path, tiny_model_dir, data,
                                 reward_model={"kind": "classifier", "reference": True}))


def test_judge_answer_scores_the_final_answer_alone(likelihood_rm, tmp_path):
    """judge 'answer': a completion scores as its final answer written alone, whatever its
    length and wording; one with no answer scores `no_answer_score`, and nothing below it;
    a folder trained with `reward_model.judge: answer` is scored so without being told."""
    out, *_ = likelihood_rm
    whole = RewardModelScorer(str(out))
    judge = RewardModelScorer(str(out), judge="answer")
    prompt = "Add 62 and 52."
    completions = ["114", "Let me think. 62 + 52: 60 + 50 = 110, and 2 + 2 = 4, so 114.",
                   "62 + 52 = 114\n#### 114", "The answer is 124, I am sure of it.",
                   "I cannot say.", "124"]
    scores = judge.score([prompt] * len(completions), completions).rewards
    bare = whole.score([prompt] * 2, ["114", "124"]).rewards
    assert scores[0] == scores[1] == scores[2] == pytest.approx(max(bare[0], -10.0))
    assert scores[3] == scores[5] == pytest.approx(max(bare[1], -10.0))
    assert scores[4] == -10.0 and min(scores) == -10.0
    long = whole.score([prompt] * 2, completions[1:3]).rewards     # the whole text differs
    assert long[0] != pytest.approx(long[1])
    # the floor is an option, and a judged score never falls below it
    high = RewardModelScorer(str(out), judge="answer", no_answer_score=max(bare) + 1)
    assert high.score([prompt] * 2, ["114", "no idea"]).rewards == [max(bare) + 1] * 2
    # recorded by training: the folder says judge answer, the scorer reads it
    folder = tmp_path / "judged"
    shutil.copytree(out / "final", folder)
    recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
    recipe["reward_model"]["judge"] = "answer"
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert RewardModelScorer(str(folder)).score([prompt], [completions[1]]).rewards == \
        pytest.approx([scores[1]])
    assert RewardModelScorer.check_options({"path": str(folder), "judge": "last",
                                            "no_answer_score": "low"}) == \
        ["no_answer_score: must be a finite number (got 'low')",
         "judge: must be one of completion, answer (got 'last')"]
