"""Prefix-tree packing of preference pairs: the same log-probs and gradients as separate
sequences, with every shared token computed once."""

from __future__ import annotations

import pytest
import torch

from alignment.trainers.prefix_tree import collate_pair_tree
from alignment.trainers.sequences import collate_pairs, pair_logps

SYSTEM = [1, 2, 3, 4, 5, 6]          # a prefix every prompt shares (a chat template's)
PROMPTS = [SYSTEM + [7, 8], SYSTEM + [9], SYSTEM + [7, 8], SYSTEM + [10, 11, 12], [13, 2]]
CHOSEN = [[20, 21, 22], [23, 24], [20, 21, 25], [26], [27, 28, 29, 30]]
REJECTED = [[20, 21, 31], [32], [33, 34], [26, 35], [27]]   # pair 3: rejected extends chosen


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)


def _one_by_one(model, average=False) -> torch.Tensor:
    values = []
    for p, c in zip(PROMPTS + PROMPTS, CHOSEN + REJECTED, strict=True):
        logits = model(torch.tensor([p + c])).logits[0, len(p) - 1:-1]
        token = logits.log_softmax(-1).gather(-1, torch.tensor(c)[:, None])[:, 0]
        values.append(token.mean() if average else token.sum())
    return torch.stack(values)


@pytest.mark.parametrize("rows", [None, 1, 2, 3, 5])
@pytest.mark.parametrize("average", [False, True])
def test_tree_logps_equal_separate_sequences(model, rows, average):
    batch = collate_pair_tree(PROMPTS, CHOSEN, REJECTED, pad_id=0, rows=rows)
    assert batch["input_ids"].shape[0] == (rows or batch["input_ids"].shape[0])
    with torch.no_grad():
        tree = pair_logps(model, batch, average=average)
        expected = _one_by_one(model, average)
    torch.testing.assert_close(tree, expected, rtol=0, atol=1e-10)


def test_tree_gradients_equal_separate_sequences(model):
    weights = torch.linspace(-1, 1, 2 * len(PROMPTS), dtype=torch.float64)
    grads = []
    for compute in (lambda: pair_logps(model, collate_pair_tree(PROMPTS, CHOSEN, REJECTED, 0)),
                    lambda: _one_by_one(model)):
        model.zero_grad()
        (compute() * weights).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    model.zero_grad()
    # (float64; masked and unmasked attention kernels differ by ~1e-7 on gradients of
    # size ~5, as `collate_pairs` rows do)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-6)


def test_shared_tokens_are_computed_once():
    batch = collate_pair_tree(PROMPTS, CHOSEN, REJECTED, pad_id=0, rows=1)
    pairs = collate_pairs(PROMPTS, CHOSEN, REJECTED, pad_id=0)
    # one copy of the system prompt, of the repeated prompt [.. 7, 8], of the completions'
    # common starts [20, 21], [26] and [27]; a sequence's last token is only predicted,
    # never read, so it has no node (26 has one: [26, 35] continues past it). Nodes pair
    # by pair (prompt, chosen, rejected):
    distinct = len(SYSTEM) + (2 + 2 + 0) + (1 + 1 + 0) + (0 + 0 + 1) + (3 + 0 + 1) + (2 + 3 + 0)
    assert batch["input_ids"].shape == (1, distinct)
    assert len(batch["scored_token"]) == sum(map(len, CHOSEN + REJECTED))
    assert batch["n_tokens"] == pairs["n_tokens"] == sum(
        2 * len(p) + len(c) + len(r) for p, c, r in zip(PROMPTS, CHOSEN, REJECTED, strict=True))
    # the cheapest layout is never wider in total than one row
    auto = collate_pair_tree(PROMPTS, CHOSEN, REJECTED, pad_id=0)
    assert auto["input_ids"].numel() <= distinct * 2


def test_padding_sees_only_itself_and_nodes_their_ancestors():
    batch = collate_pair_tree([[1, 2]], [[3, 4, 6]], [[3, 5, 6]], pad_id=0, rows=1)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5]]     # the last 6s: labels only
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 3]]
    mask = batch["attention_mask"][0, 0].int().tolist()
    assert mask == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0],
                    [1, 1, 1, 0, 1]]
    # two rows: the shorter one is padded with tokens that see only themselves
    two = collate_pair_tree([[1, 2], [6, 7, 8]], [[3, 9], [3, 9]], [[4, 9], [4, 9]],
                            pad_id=0, rows=2)
    assert two["input_ids"].tolist() == [[1, 2, 3, 4, 0], [6, 7, 8, 3, 4]]
    assert two["attention_mask"][0, 0, 4].int().tolist() == [0, 0, 0, 0, 1]


def test_an_empty_prompt_is_refused():
    with pytest.raises(ValueError, match="empty prompt"):
        collate_pair_tree([[]], [[1]], [[2]], pad_id=0)
