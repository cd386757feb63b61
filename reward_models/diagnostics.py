"""Is a reward model judging content, or length? (`alignment score`, `alignment eval
--reward-model`)

A scorer whose rewards rise or fall with the completion's length will teach a policy to be
long or short instead of right: a likelihood reward (a sum of log-probs) favours short
completions, a classifier trained on long "chosen" answers favours long ones. The
diagnostic is Spearman's rank correlation between score and completion length (in
characters: the same for every scorer, no tokenizer needed) over the scored rows; |ρ| of
0.3 or more is reported as a warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

WARN_AT = 0.3


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ (Pearson's r of the ranks, ties at their mean rank); None with fewer
    than 3 points or when either side is constant."""
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} vs {len(y)} values")
    if len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    n = len(rx)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / math.sqrt(vx * vy)


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):   # ties share the mean of their ranks
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def length_bias(rewards: Sequence[float], completions: Sequence[str]) -> dict:
    """{"n", "spearman"} of score vs completion length, over the finite scores."""
    pairs = [(r, len(c)) for r, c in zip(rewards, completions, strict=True)
             if r is not None and math.isfinite(r)]
    rho = spearman([p[0] for p in pairs], [p[1] for p in pairs])
    return {"n": len(pairs), "spearman": rho}


def describe(bias: dict) -> str:
    """One line for a report; a warning when |ρ| >= 0.3."""
    rho = bias["spearman"]
    if rho is None:
        return f"length bias: not measurable on {bias['n']} rows (too few, or constant)"
    line = (f"length bias: Spearman ρ(score, completion length) = {rho:+.2f} over "
            f"{bias['n']} rows")
    if abs(rho) >= WARN_AT:
        side = "longer" if rho > 0 else "shorter"
        line += (f" — warning: the scores favour {side} completions; a policy trained on "
                 "them can learn length instead of correctness")
    return line
