"""Pairwise accuracy of a reward model on preference pairs (`alignment eval --reward-model`).

A pair counts as right when r(prompt, chosen) > r(prompt, rejected) strictly (a tie is
wrong, and counted). The texts are rendered as the reward model was trained
(`reward_models.RewardModelScorer`), so this is the figure the reward-model trainer's
periodic eval reports as `eval/rewards/accuracy` on the same file. Pairs whose chosen and
rejected are identical, or that the scorer cannot read (over-long), are skipped and counted.
Breakdowns: one table per category column (`--by`, default `task`) the data has.
"""

from __future__ import annotations

from collections import defaultdict

from alignment.data import load_examples, scorer_prompt


def _text(messages) -> str:
    return messages[-1]["content"]


def evaluate_reward_model(path: str, data: str, *, by: tuple[str, ...] = ("task",),
                          limit: int | None = None, batch_size: int = 32,
                          dtype: str = "float32", progress: bool = False) -> dict:
    from reward_models.reward_model import RewardModelScorer

    scorer = RewardModelScorer(path, batch_size=batch_size, dtype=dtype)
    examples = load_examples(data, "preference", limit=limit)
    skipped: dict[str, list[str]] = defaultdict(list)
    kept = []
    for ex in examples:
        if _text(ex.completions["chosen"]) == _text(ex.completions["rejected"]):
            skipped["identical chosen and rejected"].append(ex.where)
        else:
            kept.append(ex)
    prompts, completions = [], []
    for ex in kept:
        prompts += [scorer_prompt(ex)] * 2
        completions += [_text(ex.completions["chosen"]), _text(ex.completions["rejected"])]
    rewards, errors = _score(scorer, prompts, completions, batch_size, progress)
    from reward_models.diagnostics import length_bias

    scored = [k for k in range(len(completions)) if errors[k] is None]
    bias = length_bias([rewards[k] for k in scored], [completions[k] for k in scored])
    margins, groups = [], {c: defaultdict(list) for c in by}
    shorter = [0, 0]   # pairs of unequal length: (the shorter one scored higher, all)
    for k, ex in enumerate(kept):
        error = errors[2 * k] or errors[2 * k + 1]
        if error is not None:     # e.g. over the scorer's max_length
            skipped["could not be scored"].append(f"{ex.where} ({error.split(': ', 2)[-1]})")
            continue
        margin = rewards[2 * k] - rewards[2 * k + 1]
        margins.append(margin)
        long_chosen = len(completions[2 * k]) - len(completions[2 * k + 1])
        if long_chosen and margin:
            shorter[0] += (long_chosen > 0) == (margin < 0)
            shorter[1] += 1
        for column in by:
            if column in ex.extra:
                groups[column][str(ex.extra[column])].append(margin)
    if not margins:
        raise ValueError(f"{data}: no pair could be scored ({_describe(skipped) or 'empty'})")
    result = {"reward_model": str(path), "data": str(data), **_summary(margins),
              "by": {c: {v: _summary(m) for v, m in sorted(g.items())}
                     for c, g in groups.items() if g},
              "skipped": {reason: {"n": len(rows), "first": rows[:3]}
                          for reason, rows in skipped.items()},
              "length_bias": {**bias, "shorter_preferred": (shorter[0] / shorter[1]
                                                            if shorter[1] else None),
                              "unequal_pairs": shorter[1]}}
    return result


def _score(scorer, prompts, completions, batch_size, progress):
    rewards, errors = [], []
    starts = range(0, len(prompts), batch_size * 8)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="scoring", unit="chunk")
    for start in starts:
        end = start + batch_size * 8
        out = scorer.score(prompts[start:end], completions[start:end])
        rewards += out.rewards
        errors += out.errors
    return rewards, errors


def _summary(margins: list[float]) -> dict:
    n = len(margins)
    return {"n": n, "accuracy": sum(m > 0 for m in margins) / n,
            "mean_margin": sum(margins) / n, "ties": sum(m == 0 for m in margins)}


def _describe(skipped: dict) -> str:
    return "; ".join(f"{len(rows)} skipped: {reason}" for reason, rows in skipped.items())


def format_table(result: dict) -> str:
    lines = []
    for column, groups in result["by"].items():
        lines.append(f"{column:<14}{'n':>6}{'accuracy':>10}{'margin':>10}")
        for value, r in groups.items():
            lines.append(f"{value[:14]:<14}{r['n']:>6}{r['accuracy']:>10.1%}"
                         f"{r['mean_margin']:>10.3f}")
    lines.append(f"{'overall':<14}{result['n']:>6}{result['accuracy']:>10.1%}"
                 f"{result['mean_margin']:>10.3f}")
    if result["ties"]:
        lines.append(f"({result['ties']} ties, counted wrong)")
    from reward_models.diagnostics import describe

    lines.append(describe(result["length_bias"]))
    if result["length_bias"]["shorter_preferred"] is not None:
        lines.append(f"the shorter completion scored higher in "
                     f"{result['length_bias']['shorter_preferred']:.1%} of the "
                     f"{result['length_bias']['unequal_pairs']} pairs of unequal length")
    for reason, s in result["skipped"].items():
        lines.append(f"skipped {s['n']} pairs: {reason} (first: {', '.join(s['first'])})")
    return "\n".join(lines)
