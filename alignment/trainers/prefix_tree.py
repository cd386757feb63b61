"""Preference pairs packed as prefix trees: every token that several sequences share is
computed once — the prompt a pair's two completions share, and also the chat template's
system prompt and instruction words that every pair of a batch shares.

A batch of pairs is 2n sequences prompt+chosen and prompt+rejected. Inserted into a
prefix tree (a trie of token ids), each node is one token at one position in one context;
laid out in insertion order (a parent before its children) in a row, a node attends to
itself and its ancestors only (a 4-D mask), and its position id is its depth. The model
then computes, at each node, exactly the hidden state it computes at that token of every
sequence that passes through it (tested against separate sequences): the same log-probs,
with shared tokens' gradients summed over the sequences that share them, as autograd does
for separate sequences.

On add2 reward-model pairs (16 per batch, SmolLM2's template, the prompt + the answers'
common start as the prompt; 100 batches): 128 tokens per pair as two sequences, 83 per
pair padded in the prompt-shared layout (`collate_pairs`), 50 in prefix trees (padding
included); forward + backward of 4 such batches took 0.55x the time of `collate_pairs`
rows (2-core CPU).

The attention under a dense 4-D mask costs T² per row of T tokens (measured on a 2-core
CPU: a row costs ∝ T·(1 + T/1850)), so the pairs are cut into the number of rows R, from
{1, 2, 4, ...}, that minimises R·T_max·(1 + T_max/2048): one tree for short batches,
several when one would be long. Pairs are sorted by prompt first, so pairs whose prompts
start alike share a tree.

The log-prob of a token is read at its parent node (the position that predicts it), so
the LM head runs on scored tokens only; every completion token is scored, including
those chosen and rejected share (a reward model passes prompt + common start as the
"prompt" to skip them).
"""

from __future__ import annotations

import torch

from alignment.model_logps import forward_hidden, labels_logps

ROW_COST_TOKENS = 2048   # the T at which a row's attention costs as much as the rest
                         # (1850 measured on a 2-core CPU; noise hides 1024 vs 4096)


def collate_tree(prompt_ids: list[list[int]], groups: list[list[list[int]]], pad_id: int, *,
                 rows: int | None = None, width0: float = ROW_COST_TOKENS,
                 sequence_ids: list[list[int]] | None = None) -> dict:
    """Prompts, each with its completions (`groups[i]`, any number), as prefix-tree rows.

    Completion j of prompt i is sequence `sequence_ids[i][j]` (default: numbered in group
    order). Besides the model inputs, the batch lists every scored token: its row, the node
    that predicts it (`scored_parent`), its id, its sequence and its index in that
    completion; `completion_mask` (sequences, longest completion) says which slots exist.
    `rows` fixes the number of rows; by default the cheapest count R from {1, 2, 4, ...}:
    cost R·T·(1 + T/width0) for rows of T tokens (`cost` in the batch)."""
    n = len(prompt_ids)
    if any(not p for p in prompt_ids):
        raise ValueError("collate_tree: an empty prompt (the first completion token needs a "
                         "token before it to be predicted from)")
    if sequence_ids is None:
        first = [0]
        for g in groups:
            first.append(first[-1] + len(g))
        sequence_ids = [list(range(first[i], first[i + 1])) for i in range(n)]
    order = sorted(range(n), key=lambda i: prompt_ids[i])
    best = None
    for count in [min(rows, n)] if rows else [2 ** k for k in range(n.bit_length())]:
        chunks = [order[i * n // count:(i + 1) * n // count] for i in range(count)]
        trees = [_Tree() for _ in chunks]
        for tree, chunk in zip(trees, chunks, strict=True):
            for i in chunk:
                for completion, sequence in zip(groups[i], sequence_ids[i], strict=True):
                    tree.insert(prompt_ids[i], completion, sequence)
        width = max(len(t.tokens) for t in trees)
        cost = count * width * (1 + width / width0)
        if best is None or cost < best[0]:
            best = (cost, trees, width)
    cost, trees, width = best
    batch = _layout(trees, width, pad_id)
    lengths = {s: len(c) for g, ids in zip(groups, sequence_ids, strict=True)
               for c, s in zip(g, ids, strict=True)}
    count = max(lengths, default=-1) + 1
    mask = torch.zeros((count, max(lengths.values(), default=0)), dtype=torch.bool)
    for s, length in lengths.items():
        mask[s, :length] = True
    batch.update(completion_mask=mask, n_sequences=count, cost=cost)
    return batch


def collate_pair_tree(prompt_ids: list[list[int]], chosen_ids: list[list[int]],
                      rejected_ids: list[list[int]], pad_id: int, *,
                      rows: int | None = None, width0: float = ROW_COST_TOKENS) -> dict:
    """Pairs (prompt, chosen, rejected) as prefix-tree rows; `pair_tree_logps` reads the
    (2n,) log-probs [chosen_1..n, rejected_1..n] of the completions given their prompts.
    `rows` fixes the number of rows (default: the cheapest, see `collate_tree`)."""
    n = len(prompt_ids)
    batch = collate_tree(prompt_ids, [[c, r] for c, r in zip(chosen_ids, rejected_ids,
                                                              strict=True)],
                         pad_id, rows=rows, width0=width0,
                         sequence_ids=[[i, n + i] for i in range(n)])
    batch["n_pairs"] = n
    # which completion tokens exist, as `collate_pairs` gives them (e.g. RPO's token counts)
    batch["chosen_mask"], batch["rejected_mask"] = batch["completion_mask"].split(n)
    # tokens of the two sequences prompt+chosen and prompt+rejected (what a trainer
    # without sharing processes): comparable across trainers and layouts
    batch["n_tokens"] = sum(2 * len(p) + len(c) + len(r)
                            for p, c, r in zip(prompt_ids, chosen_ids, rejected_ids, strict=True))
    return batch


def tree_token_logps(model, batch: dict, hidden: torch.Tensor | None = None, *,
                     temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
                     ) -> torch.Tensor:
    """(scored tokens,) log π of every scored token of a tree batch, each read at the node
    that predicts it; `hidden` the final hidden states if the forward already ran."""
    if hidden is None:
        _, hidden = forward_hidden(model, **tree_inputs(model, batch))
    device = hidden.device
    rows, parents = batch["scored_row"].to(device), batch["scored_parent"].to(device)
    # only the positions that are scored reach the LM head
    return labels_logps(model, hidden[rows, parents], batch["scored_token"].to(device),
                        temperature=temperature, top_k=top_k, top_p=top_p)


def tree_inputs(model, batch: dict) -> dict:
    device = next(model.parameters()).device
    return {key: batch[key].to(device) for key in ("input_ids", "attention_mask", "position_ids")}


def per_sequence(values: torch.Tensor, batch: dict) -> torch.Tensor:
    """(scored tokens, ...) -> (sequences, longest completion, ...), zeros off the mask."""
    device = values.device
    out = values.new_zeros((*batch["completion_mask"].shape, *values.shape[1:]))
    return out.index_put((batch["scored_sequence"].to(device),
                          batch["scored_index"].to(device)), values)


def pair_tree_logps(model, batch: dict, *, average: bool = False) -> torch.Tensor:
    """(2n,) log π of [chosen_1..n, rejected_1..n] for a `collate_pair_tree` batch: the
    sum (or, with `average`, the mean) over each completion's tokens."""
    per_token = tree_token_logps(model, batch)
    device = per_token.device
    sequence = batch["scored_sequence"].to(device)
    n = 2 * batch["n_pairs"]
    sums = torch.zeros(n, dtype=per_token.dtype, device=device).index_add(0, sequence, per_token)
    if not average:
        return sums
    counts = torch.zeros(n, dtype=per_token.dtype, device=device).index_add(
        0, sequence, torch.ones_like(per_token))
    return sums / counts.clamp(min=1)


class _Tree:
    """One row: token ids in insertion order, each node's parent and depth, and the
    completion tokens to score: read at their parent node."""

    def __init__(self):
        self.tokens: list[int] = []
        self.parent: list[int] = []
        self.depth: list[int] = []
        self.children: dict[tuple[int, int], int] = {}
        self.scored: list[tuple[int, int, int, int]] = []   # (parent node, token,
                                                             #  sequence, index in it)

    def insert(self, prompt: list[int], completion: list[int], sequence: int) -> None:
        """Add prompt + completion; a sequence's last token gets no node of its own (it is
        only ever predicted, never read), unless another sequence continues past it."""
        tokens = prompt + completion
        node = -1
        for depth, token in enumerate(tokens):
            if depth >= len(prompt):
                self.scored.append((node, token, sequence, depth - len(prompt)))
            if depth == len(tokens) - 1:
                break
            child = self.children.get((node, token))
            if child is None:
                child = self.children[(node, token)] = len(self.tokens)
                self.tokens.append(token)
                self.parent.append(node)
                self.depth.append(depth)
            node = child


def _layout(trees: list[_Tree], width: int, pad_id: int) -> dict:
    rows = len(trees)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((rows, width), dtype=torch.long)
    visible = torch.eye(width, dtype=torch.bool).repeat(rows, 1, 1)   # padding: itself only
    scored = []   # (row, parent, token, sequence, index)
    for r, tree in enumerate(trees):
        size = len(tree.tokens)
        input_ids[r, :size] = torch.tensor(tree.tokens)
        position_ids[r, :size] = torch.tensor(tree.depth)
        mask = visible[r]
        for node, parent in enumerate(tree.parent):   # a node sees its parent's view + itself
            if parent >= 0:
                mask[node] |= mask[parent]
        scored += [(r, *entry) for entry in tree.scored]
    return {"input_ids": input_ids, "attention_mask": visible[:, None],   # (R, 1, T, T)
            "position_ids": position_ids, "layout": "tree",
            **{f"scored_{name}": column for name, column in zip(
                ("row", "parent", "token", "sequence", "index"),
                torch.tensor(scored, dtype=torch.long).view(-1, 5).T, strict=True)}}
