"""Prompt + completion batches and their completion log-probabilities in ONE forward pass.

Padded layouts: every row is `[pad.. prompt | completion ..pad]`: prompts LEFT-padded to
the longest prompt P, completions RIGHT-padded to the longest completion C, so all
completions start at column P. Position ids count real tokens only, so left padding does
not shift positions. For preference pairs (`collate_pairs`) one row holds the prompt once
and both completions, kept apart by a 4-D attention mask; online samples (G per prompt)
come as `collate_groups` (a prompt once, its G completions after it under a 4-D mask) or
`collate_separate` (a row per sample).

Packed layouts: prefix trees (`prefix_tree.collate_tree`) hold several sequences per row,
every token that any of them share (the prompt of a pair or group, a system prompt common
to the batch) once, positions restarting, no padding at all. `collate_preference`,
`collate_demonstrations` and `collate_online` pick a layout per batch by the cost rule
(rows x width x (1 + width / `attention_width`)): the same log-probs either way.

Every reader runs the model with the LM head on one position per row and reads the
log-probs of the scored tokens from the final hidden states (`model_logps`): the head
(vocabulary 49k-152k wide) never runs on prompt or padding positions, and the (tokens, V)
logits are never held in memory.
"""

from __future__ import annotations

import torch

from alignment.model_logps import forward_hidden, labels_entropy, labels_logps
from alignment.trainers.prefix_tree import (
    collate_pair_tree,
    collate_tree,
    pair_tree_logps,
    per_sequence,
    tree_token_logps,
)

# Attention under a dense mask gets about half the work per second of the big matmuls:
# the crossover width measured on the bundled model on CPU (1,526, bench/group_layout.py)
# over the one its FLOPs give (3,072, `attention_width`).
ATTENTION_EFFICIENCY = 0.5
BUNDLED_ATTENTION_WIDTH = 1536.0   # attention_width() of SmolLM2-135M


def collate_sequences(prompts: list[list[int]], completions: list[list[int]],
                      pad_id: int) -> dict[str, torch.Tensor]:
    """Batch (prompt, completion) token lists in the layout described above."""
    n = len(prompts)
    width_p = max(len(p) for p in prompts)
    width_c = max(len(c) for c in completions)
    input_ids = torch.full((n, width_p + width_c), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width_p + width_c), dtype=torch.long)
    completion_mask = torch.zeros((n, width_c), dtype=torch.bool)
    for row, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        input_ids[row, width_p - len(p):width_p] = torch.tensor(p)
        input_ids[row, width_p:width_p + len(c)] = torch.tensor(c)
        attention_mask[row, width_p - len(p):width_p + len(c)] = 1
        completion_mask[row, :len(c)] = True
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "position_ids": position_ids, "completion_mask": completion_mask,
            "prompt_width": width_p, "n_tokens": int(attention_mask.sum())}


def collate_demonstrations(prompts: list[list[int]], completions: list[list[int]], pad_id: int,
                           *, layout: str = "auto",
                           width0: float = BUNDLED_ATTENTION_WIDTH) -> dict:
    """(prompt, completion) rows as `collate_sequences` ("rows") or packed as prefix trees
    ("tree": several sequences per row, positions restarting, a shared system prompt or
    prompt computed once, no padding); "auto": the cheaper by the cost rule. Same
    log-probs either way (`completion_token_logps`)."""
    if layout in ("auto", "tree") and all(prompts):
        tree = collate_tree(prompts, [[c] for c in completions], pad_id, width0=width0)
        width = max(map(len, prompts)) + max(map(len, completions))
        if layout == "tree" or tree["cost"] <= len(prompts) * width * (1 + width / width0):
            tree["n_tokens"] = sum(len(p) + len(c) for p, c in zip(prompts, completions,
                                                                   strict=True))
            return tree
    return collate_sequences(prompts, completions, pad_id)


def collate_pairs(prompt_ids: list[list[int]], chosen_ids: list[list[int]],
                  rejected_ids: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Preference pairs with the prompt computed ONCE per pair.

    Each row is `[pad.. prompt | chosen ..pad | rejected ..pad]` (widths P, C1, C2). A 4-D
    attention mask lets chosen tokens see the prompt and earlier chosen tokens, rejected
    tokens see the prompt and earlier rejected tokens, and nobody see padding; both
    completions continue the prompt's positions. This is exactly two independent
    sequences prompt+chosen and prompt+rejected, minus the second copy of the prompt
    (about a third of the tokens on the shipped data).
    """
    n = len(prompt_ids)
    width_p = max(len(p) for p in prompt_ids)
    width_c = max(len(c) for c in chosen_ids)
    width_r = max(len(r) for r in rejected_ids)
    width = width_p + width_c + width_r
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    segment = torch.zeros((n, width), dtype=torch.long)   # 0 pad, 1 prompt, 2 chosen, 3 rejected
    position_ids = torch.zeros((n, width), dtype=torch.long)
    chosen_mask = torch.zeros((n, width_c), dtype=torch.bool)
    rejected_mask = torch.zeros((n, width_r), dtype=torch.bool)
    for row, (p, c, r) in enumerate(zip(prompt_ids, chosen_ids, rejected_ids, strict=True)):
        spans = [(width_p - len(p), p, 1, 0), (width_p, c, 2, len(p)),
                 (width_p + width_c, r, 3, len(p))]
        for start, tokens, seg, first_pos in spans:
            input_ids[row, start:start + len(tokens)] = torch.tensor(tokens)
            segment[row, start:start + len(tokens)] = seg
            position_ids[row, start:start + len(tokens)] = torch.arange(len(tokens)) + first_pos
        chosen_mask[row, :len(c)] = True
        rejected_mask[row, :len(r)] = True
    query, key = segment[:, :, None], segment[:, None, :]       # (n, L, 1), (n, 1, L)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    visible = causal & (key != 0) & ((key == 1) | (key == query))
    visible |= torch.eye(width, dtype=torch.bool) & (query == 0)  # pad rows: no empty softmax
    return {"input_ids": input_ids, "attention_mask": visible[:, None],   # (n, 1, L, L)
            "position_ids": position_ids, "chosen_mask": chosen_mask,
            "rejected_mask": rejected_mask, "widths": (width_p, width_c, width_r),
            "n_pairs": n,
            # tokens of the two sequences prompt+chosen and prompt+rejected (what a
            # trainer without prompt sharing would process): comparable across trainers
            "n_tokens": sum(2 * len(p) + len(c) + len(r)
                            for p, c, r in zip(prompt_ids, chosen_ids, rejected_ids, strict=True))}


def collate_preference(prompt_ids: list[list[int]], chosen_ids: list[list[int]],
                       rejected_ids: list[list[int]], pad_id: int, *, layout: str = "auto",
                       width0: float = BUNDLED_ATTENTION_WIDTH) -> dict:
    """Preference pairs as `collate_pairs` rows ("rows") or prefix trees ("tree", every
    token any sequences share computed once, no padding); "auto": whichever the cost rule
    (`layout_costs`) predicts cheaper. Same log-probs either way (`pair_logps`)."""
    if layout in ("auto", "tree") and all(prompt_ids):
        tree = collate_pair_tree(prompt_ids, chosen_ids, rejected_ids, pad_id, width0=width0)
        rows = len(prompt_ids)
        width = (max(map(len, prompt_ids)) + max(map(len, chosen_ids))
                 + max(map(len, rejected_ids)))
        if layout == "tree" or tree["cost"] <= rows * width * (1 + width / width0):
            return tree
    return collate_pairs(prompt_ids, chosen_ids, rejected_ids, pad_id)


def pair_logps(model, batch: dict, *, average: bool = False) -> torch.Tensor:
    """(2n,) log π of [chosen_1..n, rejected_1..n] for a `collate_pairs` batch (or a
    `collate_pair_tree` one: the same numbers)."""
    if batch.get("layout") == "tree":
        return pair_tree_logps(model, batch, average=average)
    _, width_c, width_r = batch["widths"]
    _, hidden = forward_hidden(model, **_inputs(model, batch))
    kept = hidden[:, -(width_c + width_r + 1):]   # (n, C1 + C2 + 1, H): positions P-1 .. end
    device = kept.device
    # chosen token t is predicted at kept column t; rejected token 0 by the last prompt
    # token (column 0, shared with chosen token 0), rejected token t >= 1 at C1 + t.
    rejected_cols = torch.cat([torch.zeros(1, dtype=torch.long),
                               torch.arange(width_c + 1, width_c + width_r)]).to(device)
    labels = batch["input_ids"][:, -(width_c + width_r):].to(device)
    chosen = _sequence_sums(model, kept[:, :width_c], labels[:, :width_c],
                            batch["chosen_mask"].to(device), average)
    rejected = _sequence_sums(model, kept[:, rejected_cols], labels[:, width_c:],
                              batch["rejected_mask"].to(device), average)
    return torch.cat([chosen, rejected])


def _sequence_sums(model, hidden: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                   average: bool) -> torch.Tensor:
    """(rows,) Σ_t mask·log π(label_t) (ALGORITHMS.md §0), or the mean over the mask."""
    total = labels_logps(model, hidden, labels, mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total


def completion_logps(model, batch: dict, *, average: bool = False,
                     temperature: float = 1.0) -> torch.Tensor:
    """(rows,) log π(completion | prompt): summed over completion tokens (or averaged)."""
    mask = batch["completion_mask"]
    per_token = completion_token_logps(model, batch, temperature=temperature)
    total = per_token.sum(-1)
    return total / mask.to(total.device).sum(-1).clamp(min=1) if average else total


def completion_token_logps(model, batch: dict, *, temperature: float = 1.0) -> torch.Tensor:
    """(rows, C) log π of each completion token (0 off `completion_mask`); `temperature`
    as used for sampling, so ratios compare like with like."""
    if batch.get("layout") == "tree":
        return per_sequence(tree_token_logps(model, batch, temperature=temperature), batch)
    width_c = batch["completion_mask"].shape[1]
    _, hidden = forward_hidden(model, **_inputs(model, batch))
    device = hidden.device
    labels = batch["input_ids"][:, batch["prompt_width"]:].to(device)   # (rows, C)
    return labels_logps(model, hidden[:, -(width_c + 1):-1], labels,    # predict C tokens
                        batch["completion_mask"].to(device), temperature=temperature)


def _inputs(model, batch: dict) -> dict:
    device = next(model.parameters()).device
    return {key: batch[key].to(device)
            for key in ("input_ids", "attention_mask", "position_ids")}


def collate_groups(prompt_ids: list[list[int]], groups: list[list[list[int]]],
                   pad_id: int) -> dict[str, torch.Tensor]:
    """Online samples with the prompt computed ONCE per group (GRPO's G samples of one
    prompt): the `collate_pairs` layout with any number of completions per row.

    Row r is `[pad.. prompt | c_1 ..pad | ... | c_k ..pad]` (every completion padded to
    the batch's longest, width C; rows with fewer than k completions get empty slots).
    A 4-D mask lets each completion see the prompt and its own earlier tokens only; each
    continues the prompt's positions. With G = 8 samples of ~6 tokens after a 50-token
    prompt this processes ~100 tokens per group instead of ~450.
    """
    batch = _rows(prompt_ids, groups, pad_id)
    segment = batch.pop("segment")
    width = segment.shape[1]
    query, key = segment[:, :, None], segment[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    visible = causal & (key != 0) & ((key == 1) | (key == query))
    visible |= torch.eye(width, dtype=torch.bool) & (query == 0)  # pad rows: no empty softmax
    return {**batch, "attention_mask": visible[:, None], "layout": "grouped"}   # (n, 1, L, L)


def collate_separate(prompt_ids: list[list[int]], groups: list[list[list[int]]],
                     pad_id: int) -> dict[str, torch.Tensor]:
    """The samples of `collate_groups`, one row per sample: `[pad.. prompt | c ..pad]`, the
    prompt repeated, a plain 2-D padding mask. The same keys (groups of one: k = 1), so
    every `group_*` function below reads either layout, and the samples keep their order."""
    flat_prompts = [p for p, group in zip(prompt_ids, groups, strict=True) for _ in group]
    batch = _rows(flat_prompts, [[c] for group in groups for c in group], pad_id)
    segment = batch.pop("segment")
    return {**batch, "attention_mask": (segment != 0).long(), "layout": "separate"}




def attention_width(config) -> float:
    """The row width at which a position's attention work equals the rest of its work.
    Per position and layer, in multiply-adds: the projections and a gated MLP,
    2·d·d_attn + 2·d·d_kv + 3·d·d_ff, against 2·d_attn·width for scores and weighted sum
    (both x3 with the backward); then x ATTENTION_EFFICIENCY. Wider models spend more on
    the matmuls, so attention, and the grouped layout's width, costs them relatively less."""
    d, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    d_attn = heads * head_dim
    d_kv = (getattr(config, "num_key_value_heads", None) or heads) * head_dim
    d_ff = getattr(config, "intermediate_size", None) or 4 * d
    return ATTENTION_EFFICIENCY * (2 * d * d_attn + 2 * d * d_kv + 3 * d * d_ff) / (2 * d_attn)


def layout_costs(prompt_ids: list[list[int]], groups: list[list[list[int]]],
                 width0: float = BUNDLED_ATTENTION_WIDTH) -> dict:
    """Predicted forward+backward cost of the padded layouts: rows x width x (1 + width /
    W0), W0 = `attention_width`. Both pad every completion to the batch's longest (C);
    grouped saves the prompt's repeats, but its rows are k completions wide and attention
    grows with the width. (The tree layout's cost is `collate_tree`'s, in the same units.)"""
    width_p = max(len(p) for p in prompt_ids)
    width_c = max(max((len(c) for c in g), default=1) for g in groups)
    k = max(len(g) for g in groups)

    def cost(rows: int, width: int) -> float:
        return rows * width * (1.0 + width / width0)

    return {"grouped": cost(len(groups), width_p + k * width_c),
            "separate": cost(sum(len(g) for g in groups), width_p + width_c)}


def collate_online(prompt_ids: list[list[int]], groups: list[list[list[int]]], pad_id: int,
                   layout: str = "auto", width0: float = BUNDLED_ATTENTION_WIDTH
                   ) -> dict[str, torch.Tensor]:
    """`collate_groups`, `collate_separate` or `collate_online_tree`; `auto`: whichever is
    predicted cheapest for this batch (grouped on a tie with separate). Same log-probs."""
    if layout in ("auto", "tree"):
        tree = collate_online_tree(prompt_ids, groups, pad_id, width0)
        if layout == "tree" or tree["cost"] < min(layout_costs(prompt_ids, groups,
                                                               width0).values()):
            return tree
    if layout == "auto":
        costs = layout_costs(prompt_ids, groups, width0)
        layout = "separate" if costs["separate"] < costs["grouped"] else "grouped"
    collate = {"grouped": collate_groups, "separate": collate_separate}[layout]
    return collate(prompt_ids, groups, pad_id)


def collate_online_tree(prompt_ids: list[list[int]], groups: list[list[list[int]]],
                        pad_id: int, width0: float = BUNDLED_ATTENTION_WIDTH) -> dict:
    """The samples as prefix trees (`collate_tree`): several groups per row, each prompt
    once, no padding, restarting positions; the keys the `group_*` readers need."""
    batch = collate_tree(prompt_ids, groups, pad_id, width0=width0)
    batch["group_sizes"] = [len(g) for g in groups]
    batch["n_tokens"] = sum(len(p) * len(g) + sum(len(c) for c in g)
                            for p, g in zip(prompt_ids, groups, strict=True))
    return batch


def _rows(prompt_ids: list[list[int]], groups: list[list[list[int]]], pad_id: int) -> dict:
    """Token rows `[pad.. prompt | c_1 ..pad | ... | c_k ..pad]` and what every layout
    needs besides its attention mask; `segment` (0 pad, 1 prompt, 2.. completion j) is
    what the mask is made of."""
    n = len(prompt_ids)
    k = max(len(g) for g in groups)
    width_p = max(len(p) for p in prompt_ids)
    width_c = max(max((len(c) for c in g), default=1) for g in groups)
    width = width_p + k * width_c
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    segment = torch.zeros((n, width), dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    completion_mask = torch.zeros((n, k, width_c), dtype=torch.bool)
    for row, (p, group) in enumerate(zip(prompt_ids, groups, strict=True)):
        spans = [(width_p - len(p), p, 1, 0)]
        spans += [(width_p + j * width_c, c, 2 + j, len(p)) for j, c in enumerate(group)]
        for start, tokens, seg, first_pos in spans:
            input_ids[row, start:start + len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            segment[row, start:start + len(tokens)] = seg
            position_ids[row, start:start + len(tokens)] = torch.arange(len(tokens)) + first_pos
        for j, c in enumerate(group):
            completion_mask[row, j, :len(c)] = True
    sizes = [len(g) for g in groups]
    return {"input_ids": input_ids, "segment": segment, "position_ids": position_ids,
            "group_layout": (width_p, k, width_c), "group_sizes": sizes,
            # (samples, C) in sample order (group by group), as the per-sample tensors
            "completion_mask": completion_mask.view(n * k, width_c)[_filled(sizes, k)],
            # tokens of the unshared sequences prompt+completion: comparable across trainers
            "n_tokens": sum(len(p) * len(g) + sum(len(c) for c in g)
                            for p, g in zip(prompt_ids, groups, strict=True))}


def group_token_logps(model, batch: dict, *, temperature: float = 1.0) -> torch.Tensor:
    """(samples, C) log π of each completion token of a `collate_groups` batch (0 off
    `completion_mask`)."""
    _, hidden = forward_hidden(model, **_inputs(model, batch))
    return _group_logps(model, hidden, batch, temperature)


def group_token_logps_as_sampled(model, batch: dict, *, temperature: float = 1.0,
                                 top_k: int = 0, top_p: float = 1.0, entropy: bool = False
                                 ) -> tuple[torch.Tensor, ...]:
    """One forward: (log π, log π as sampled), each (samples, C); the second under the
    sampler's filtered distribution, what an engine reports for the tokens it drew (used
    detached; without filters the same tensor). `entropy`: also π's entropy (at the
    temperature, unfiltered) at each completion position, from the same forward."""
    _, hidden = forward_hidden(model, **_inputs(model, batch))
    logps = _group_logps(model, hidden, batch, temperature)
    sampled = (logps if not top_k and top_p >= 1.0
               else _group_logps(model, hidden, batch, temperature, top_k, top_p))
    if not entropy:
        return logps, sampled
    states = completion_states(hidden, batch)                     # (samples, C, H)
    mask = batch["completion_mask"].to(hidden.device)
    return logps, sampled, labels_entropy(model, states, mask, temperature=temperature)


def group_logps_and_values(model, batch: dict, *, temperature: float = 1.0
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(samples, C) log π and V(s_t) of each completion token, one forward of an
    `ActorCritic` module; V(s_t) is read where token t is predicted (the state before it)."""
    width = batch["input_ids"].shape[1]
    out, hidden = forward_hidden(model, **_inputs(model, batch), values_to_keep=width)
    return (_group_logps(model, hidden, batch, temperature),
            completion_states(out["values"], batch))


def completion_states(per_position: torch.Tensor, batch: dict) -> torch.Tensor:
    """(rows, width, ...) outputs at every position of an online batch -> (samples, C,
    ...): the output at the position that predicts each completion token (0 off the
    completion mask for trees), in any layout."""
    if batch.get("layout") == "tree":
        device = per_position.device
        picked = per_position[batch["scored_row"].to(device), batch["scored_parent"].to(device)]
        return per_sequence(picked, batch)
    _, k, width_c = batch["group_layout"]
    return select_completion_columns(per_position[:, -(k * width_c + 1):], batch)


def select_completion_columns(kept: torch.Tensor, batch: dict) -> torch.Tensor:
    """(n, k*C + 1, ...) per-position outputs of the last k*C + 1 positions (columns P-1 ..
    end) -> (samples, C, ...): the output at the position that predicts each completion
    token. Completion j's token 0 is predicted by the last prompt token (kept column 0),
    its token t >= 1 by its own token t-1 (kept column j*C + t)."""
    _, k, width_c = batch["group_layout"]
    device = kept.device
    cols = torch.cat([torch.cat([torch.zeros(1, dtype=torch.long),
                                 torch.arange(j * width_c + 1, (j + 1) * width_c)])
                      for j in range(k)]).to(device)
    n = kept.shape[0]
    filled = _filled(batch["group_sizes"], k).to(device)
    return kept[:, cols].reshape(n * k, width_c, *kept.shape[2:])[filled]


def _group_logps(model, hidden: torch.Tensor, batch: dict, temperature: float,
                 top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    if batch.get("layout") == "tree":
        return per_sequence(tree_token_logps(model, batch, hidden, temperature=temperature,
                                             top_k=top_k, top_p=top_p), batch)
    _, k, width_c = batch["group_layout"]
    device = hidden.device
    labels = batch["input_ids"][:, -k * width_c:].to(device)                 # (n, k*C)
    n = labels.shape[0]
    filled = _filled(batch["group_sizes"], k).to(device)
    labels = labels.reshape(n * k, width_c)[filled]
    kept = select_completion_columns(hidden[:, -(k * width_c + 1):], batch)  # (samples, C, H)
    return labels_logps(model, kept, labels, batch["completion_mask"].to(device),
                        temperature=temperature, top_k=top_k, top_p=top_p)


def _filled(sizes: list[int], k: int) -> torch.Tensor:
    """Which of the n x k completion slots hold a sample."""
    return torch.tensor([j < size for size in sizes for j in range(k)], dtype=torch.bool)
