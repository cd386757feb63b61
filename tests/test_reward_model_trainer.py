"""Bradley-Terry loss numbers, and the reward-model trainer on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alignment.config import recipe_from_dict
from alignment.losses import bradley_terry_loss
from alignment.trainers.reward_model import RewardModelTrainer

ROOT = Path(__file__).resolve().parents[1]


def test_bradley_terry_numbers():
    chosen, rejected = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.0])
    loss, metrics = bradley_terry_loss(chosen, rejected)
    # -log σ(1) = 0.31326169, -log σ(-0.5) = 0.97407698
    assert loss.item() == pytest.approx((0.31326169 + 0.97407698) / 2, abs=1e-7)
    assert metrics["rewards/accuracy"].item() == 0.5
    assert metrics["rewards/margin"].item() == pytest.approx(0.25)
    centred, _ = bradley_terry_loss(chosen, rejected, center_weight=0.1)
    # + 0.1 * mean((1 + 0)^2, (0.5 + 1)^2) = 0.1 * 1.625
    assert centred.item() == pytest.approx(loss.item() + 0.1625, abs=1e-7)
    equal, _ = bradley_terry_loss(torch.zeros(3), torch.zeros(3))
    assert equal.item() == pytest.approx(0.69314718, abs=1e-7)
    with pytest.raises(ValueError):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3))


def test_gradient_raises_the_margin():
    chosen = torch.tensor([0.2, -0.1], requires_grad=True)
    rejected = torch.tensor([0.3, 0.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected)[0].backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()


def test_reward_model_trainer_learns_and_exports(tmp_path, tiny_model_dir):
    rows = (ROOT / "data/arithmetic/preference/train.jsonl").read_text().splitlines()[:16]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(rows) + "\n")
    recipe = recipe_from_dict({
        "algorithm": "reward_model", "output_dir": str(tmp_path / "rm"),
        "model": {"name": tiny_model_dir, "dtype": "float32"},
        "data": {"train": str(data), "eval": str(data)},
        "trainer": {"batch_size": 8, "lr": 3e-3, "max_steps": 40, "save_every": None,
                    "scheduler": "constant"},
        "logging": {"report_to": [], "progress_bar": False}})
    trainer = RewardModelTrainer(recipe)
    before = trainer.evaluate_loss()
    summary = trainer.train()
    after = summary["final_eval"]
    # fitting 16 pairs: 4 seeds x {20, 40} steps gave accuracy 0.81-1.0, loss 0.69 -> <= 0.67
    # (20 steps) / <= 0.38 (40 steps); the bounds leave room for CPU numerics
    assert after["eval/loss"] < before["eval/loss"] - 0.2, (before, after)
    assert after["eval/rewards/accuracy"] >= 0.75

    from reward_models import build_scorer

    pairs = [json.loads(r) for r in rows]
    scorer = build_scorer("reward_model", path=str(tmp_path / "rm" / "final"), batch_size=4)
    chosen = scorer.score([p["prompt"] for p in pairs], [p["chosen"] for p in pairs]).rewards
    rejected = scorer.score([p["prompt"] for p in pairs], [p["rejected"] for p in pairs]).rewards
    assert sum(c > r for c, r in zip(chosen, rejected, strict=True)) >= 12


def test_token_verifier_loss_numbers():
    from alignment.losses import token_verifier_loss

    scores = torch.tensor([[2.0, 0.0, 5.0], [-1.0, 3.0, 9.0]])
    labels = torch.tensor([1.0, 0.0])
    mask = torch.tensor([[1, 1, 0], [0, 1, 0]])
    loss, metrics = token_verifier_loss(scores, labels, mask)
    # -log σ(2) = 0.126928, -log σ(0) = 0.693147, -log(1 - σ(3)) = 3.048587; masked out: 5, -1, 9
    assert loss.item() == pytest.approx((0.126928 + 0.693147 + 3.048587) / 3, abs=1e-6)
    assert metrics["token_accuracy"].item() == pytest.approx(1 / 3)
    empty, _ = token_verifier_loss(scores, labels, torch.zeros(2, 3))
    assert empty.item() == 0.0
    with pytest.raises(ValueError):
        token_verifier_loss(scores, labels[:1], mask)


def _rm_trainer(tmp_path, tiny_model_dir, **reward_model):
    rows = (ROOT / "data/arithmetic/add2_rm/train.jsonl").read_text().splitlines()[:8]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(rows) + "\n")
    recipe = recipe_from_dict({
        "algorithm": "reward_model", "output_dir": str(tmp_path / "rm"),
        "model": {"name": tiny_model_dir, "dtype": "float32"},
        "data": {"train": str(data), "eval": str(data)},
        "trainer": {"batch_size": 4, "max_steps": 1, "save_every": None},
        "reward_model": reward_model,
        "logging": {"report_to": [], "progress_bar": False}})
    trainer = RewardModelTrainer(recipe)
    return trainer, trainer.load_examples(str(data), None, "train")


def _separate_rewards(trainer, pairs) -> torch.Tensor:
    """The rewards of prompt+chosen and prompt+rejected as two plain right-padded
    sequences through the HF classifier's own pooling: what a scorer computes."""
    rows = [p.prompt_ids + p.chosen_ids for p in pairs] + \
        [p.prompt_ids + p.rejected_ids for p in pairs]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), trainer.pool_pad_id)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    with torch.no_grad():
        return trainer.model(input_ids=ids, attention_mask=mask).logits[:, 0]


def test_a_pair_in_one_row_scores_like_two_sequences(tmp_path, tiny_model_dir):
    trainer, pairs = _rm_trainer(tmp_path, tiny_model_dir)
    trainer.model.double()     # both layouts in float64 (rewards cast to fp32 at the end)
    batch = trainer.collate(pairs)
    n = len(pairs)
    full = sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    assert batch["n_tokens"] == full and batch["input_ids"].numel() < 0.8 * full
    with torch.no_grad():
        loss, metrics = trainer.compute_loss(batch)
    separate = _separate_rewards(trainer, pairs)
    expected, expected_metrics = bradley_terry_loss(separate[:n], separate[n:])
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert metrics["rewards/margin"].item() == pytest.approx(
        expected_metrics["rewards/margin"].item(), abs=1e-6)


def test_token_level_term_reads_every_token_from_the_first_difference(tmp_path,
                                                                     tiny_model_dir):
    trainer, pairs = _rm_trainer(tmp_path, tiny_model_dir, token_weight=0.5)
    trainer.model.double()
    pairs = pairs[:4]
    batch = trainer.collate(pairs)
    width_p = batch["widths"][0]
    for k, p in enumerate(pairs):
        first = next(i for i, (a, b) in enumerate(zip(p.chosen_ids, p.rejected_ids,
                                                      strict=False)) if a != b)
        # the row holds the prompt and the common start once, then the two endings
        shared = p.prompt_ids + p.chosen_ids[:first]
        row = batch["input_ids"][k].tolist()
        assert row[width_p - len(shared):width_p] == shared
        assert batch["chosen_mask"][k].sum() == len(p.chosen_ids) - first
        assert batch["rejected_mask"][k].sum() == len(p.rejected_ids) - first
    loss, metrics = trainer.compute_loss(batch)
    with torch.no_grad():
        separate = _separate_rewards(trainer, pairs)
        # the token term from two separate sequences: the head at every token from the
        # first difference on, chosen labelled 1, rejected 0
        terms = []
        for p in pairs:
            first = next(i for i, (a, b) in enumerate(zip(p.chosen_ids, p.rejected_ids,
                                                          strict=False)) if a != b)
            for ids, label in ((p.chosen_ids, 1.0), (p.rejected_ids, 0.0)):
                seq = torch.tensor([p.prompt_ids + ids])
                hidden = trainer.model(input_ids=seq, output_hidden_states=True
                                       ).hidden_states[-1][0]
                scores = trainer._score_head()(hidden[len(p.prompt_ids) + first:])[:, 0]
                terms.append(torch.nn.functional.binary_cross_entropy_with_logits(
                    scores, torch.full_like(scores, label), reduction="none"))
        token_loss = torch.cat(terms).mean()
    assert metrics["token_loss"].item() == pytest.approx(token_loss.item(), abs=1e-6)
    bt, _ = bradley_terry_loss(separate[:4], separate[4:])
    assert loss.item() == pytest.approx(bt.item() + 0.5 * token_loss.item(), abs=1e-6)
    # the token term: every ending token labelled by its side, and its gradient reaches
    # the head
    loss.backward()
    assert trainer._score_head().weight.grad.abs().sum() > 0


def test_lm_term_is_the_causal_lm_loss_on_the_chosen_completion(tmp_path, tiny_model_dir):
    """reward_model.lm_weight: next-token cross-entropy over every chosen-completion token,
    through the tied embeddings: the same numbers as the folder loaded as a causal LM on
    prompt + chosen as plain sequences."""
    from transformers import AutoModelForCausalLM

    trainer, pairs = _rm_trainer(tmp_path, tiny_model_dir, lm_weight=0.5)
    trainer.model.double()
    batch = trainer.collate(pairs)
    loss, metrics = trainer.compute_loss(batch)
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    assert lm.config.tie_word_embeddings
    terms = []
    with torch.no_grad():
        for p in pairs:
            seq = torch.tensor([p.prompt_ids + p.chosen_ids])
            logits = lm(input_ids=seq).logits[0, len(p.prompt_ids) - 1:-1]
            terms.append(torch.nn.functional.cross_entropy(
                logits, torch.tensor(p.chosen_ids), reduction="none"))
        expected = torch.cat(terms).mean()
        separate = _separate_rewards(trainer, pairs)
    assert metrics["lm_loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    bt, _ = bradley_terry_loss(separate[:len(pairs)], separate[len(pairs):])
    assert loss.item() == pytest.approx(bt.item() + 0.5 * expected.item(), abs=1e-6)
    loss.backward()    # the term trains the backbone (the embeddings are the LM head)
    assert trainer.accelerator.unwrap_model(trainer.model).get_input_embeddings() \
        .weight.grad.abs().sum() > 0


def test_lm_term_can_read_a_middle_layer(tmp_path, tiny_model_dir):
    """reward_model.lm_layer: the term reads that layer's output through the final norm;
    the last layer gives exactly the default, a lower one a different loss; a layer the
    model does not have is refused when the trainer is built."""
    from alignment.errors import TrainingError

    losses = {}
    for layer in (None, 2, 1):
        (tmp_path / str(layer)).mkdir()
        trainer, pairs = _rm_trainer(tmp_path / str(layer), tiny_model_dir, lm_weight=1.0,
                                     lm_layer=layer)
        trainer.model.double()
        with torch.no_grad():
            losses[layer] = trainer.compute_loss(trainer.collate(pairs))[1]["lm_loss"].item()
    assert losses[2] == pytest.approx(losses[None], abs=1e-9)    # the tiny model has 2 layers
    assert abs(losses[1] - losses[None]) > 1e-3
    with pytest.raises(TrainingError, match="lm_layer: 3"):
        _rm_trainer(tmp_path, tiny_model_dir, lm_weight=1.0, lm_layer=3)
