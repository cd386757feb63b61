"""SFT: the loss against cross-entropy by hand, and the trainer on a tiny random Llama
(the loss falls, only completion tokens count, micro-batches make the same step)."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F

from alignment.config import recipe_from_dict
from alignment.data import DataError
from alignment.losses import sft_loss
from alignment.trainers.sft import SFTTrainer


def test_sft_loss_is_the_token_mean_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    logps = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    loss, metrics = sft_loss(logps, mask)
    # F.cross_entropy over the 9 real tokens (mean over tokens, not over sequences)
    expected = F.cross_entropy(logits[mask], labels[mask])
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
    assert metrics["sft/perplexity"].item() == pytest.approx(expected.exp().item(), rel=1e-12)
    assert metrics["sft/completion_tokens"].item() == pytest.approx(3.0)
    # a per-sequence mean would weigh the 1-token row like the 5-token one: not this loss
    per_sequence = torch.stack([-(logps[i][mask[i]]).mean() for i in range(3)]).mean()
    assert abs(per_sequence.item() - loss.item()) > 1e-3


def test_sft_loss_rejects_an_empty_batch_and_shape_mismatch():
    with pytest.raises(ValueError, match="no completion token"):
        sft_loss(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="differ in shape"):
        sft_loss(torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool))


@pytest.fixture(scope="module")
def columns_file(tmp_path_factory, repo_root):
    rows = (repo_root / "data/arithmetic/sft_columns/train.jsonl").read_text().splitlines()
    path = tmp_path_factory.mktemp("sft") / "columns.jsonl"
    path.write_text("\n".join(rows[:16]) + "\n")
    return str(path)


def sft_recipe(out, model, train, **sections):
    base = {"algorithm": "sft", "output_dir": str(out),
            "model": {"name": model, "dtype": "float64"},
            "data": {"train": train, "eval": train, "eval_limit": 8, "max_prompt_length": 64,
                     "max_length": 192},
            "trainer": {"lr": 1e-2, "batch_size": 8, "max_steps": 16, "save_every": None,
                        "eval_every": 16, "scheduler": "constant", "seed": 3},
            "eval": {"before_after": False},
            "logging": {"report_to": [], "progress_bar": False}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return recipe_from_dict(base)


def test_sft_trains_on_completion_tokens_only_and_the_loss_falls(tmp_path, tiny_model_dir,
                                                                 columns_file, tokenizer):
    trainer = SFTTrainer(sft_recipe(tmp_path, tiny_model_dir, columns_file))
    demo = trainer.train_set[0]
    # the completion ends at the end-of-turn token: the template's newline after it is cut
    assert demo.chosen_ids[-1] == tokenizer.eos_token_id
    assert demo.chosen_ids.count(tokenizer.eos_token_id) == 1
    assert tokenizer.decode(demo.chosen_ids).startswith("241 - 222: 11-2=9")
    batch = trainer.collate(trainer.train_set[:4])
    assert trainer.batch_weight(batch) == sum(len(d.chosen_ids) for d in trainer.train_set[:4])
    summary = trainer.train()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval/loss"] for r in rows if "eval/loss" in r]
    assert evals[-1] < 0.7 * evals[0], evals   # (10.8 -> 3.3)
    assert summary["steps"] == 16 and (tmp_path / "final" / "config.json").is_file()


def test_micro_batches_make_the_same_token_mean_step(tmp_path, tiny_model_dir, columns_file):
    """grad_accum 4 × 2 rows = one batch of 8 (the same 8 rows: one step is the epoch): the
    loss is weighted by tokens, not rows."""
    losses = []
    for name, trainer_cfg in (("whole", {"batch_size": 8, "grad_accum": 1}),
                              ("accum", {"batch_size": 2, "grad_accum": 4})):
        trainer = SFTTrainer(sft_recipe(tmp_path / name, tiny_model_dir, columns_file,
                                        trainer={**trainer_cfg, "max_steps": 2},
                                        data={"eval": None, "train_limit": 8}))
        trainer.train()
        rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        losses.append([r["loss"] for r in rows if "loss" in r])
    assert losses[0] == pytest.approx(losses[1], rel=1e-9)


def test_sft_needs_completions(tmp_path, tiny_model_dir, repo_root):
    prompts = str(repo_root / "data/arithmetic/add2/test.jsonl")
    with pytest.raises(DataError, match=re.escape(f"{prompts}: SFT data needs a 'messages' "
                                                  "column, 'prompt' and 'completion' columns, "
                                                  "or a 'text' column")):
        SFTTrainer(sft_recipe(tmp_path, tiny_model_dir, prompts))
