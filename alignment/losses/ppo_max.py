"""PPO-max's score and advantage reparameterisation: Zheng et al. 2023, "Secrets of RLHF in
Large Language Models Part I: PPO" (arXiv:2307.04964), §5.3 "Score Reparameterization"
(reward normalisation and clipping, advantage normalisation and clipping) and §5.4
(PPO-max); the reference code is OpenLMLab/MOSS-RLHF, `ppo/ppo_trainer.py` and its
`RunningMoments` (from trlx, after stable-baselines3's `RunningMeanStd`).

    r̃(x, y) = clip((r(x, y) − μ_r) / σ_r, −δ_r, δ_r)     μ_r, σ_r over EVERY score so far
    Â       = clip(whiten(Â), −δ_A, δ_A)                   whiten: over the step (gae.py)

The running statistics are exact: `Moments` holds (count, mean, M2 = Σ (x − mean)²) and
merges two sets of values with the pairwise update of Chan, Golub & LeVeque (1979,
"Updating Formulae and a Pairwise Algorithm for Computing Sample Variances"), so the
statistics after n batches are those of the n batches concatenated, whichever way they
were split (over steps, or over processes). Departures from the reference code: the
population variance (it uses the sample variance for σ), 1e-8 added under the square
root as in `whiten`, and no epsilon count: an empty history has no statistics (the first
batch is normalised by its own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Moments:
    """Count, mean and M2 = Σ (x − mean)² of a set of values (float64 arithmetic)."""

    count: float = 0.0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of(cls, values: torch.Tensor) -> Moments:
        v = values.detach().double().flatten()
        if v.numel() == 0:
            return cls()
        mean = v.mean()
        return cls(float(v.numel()), float(mean), float(((v - mean) ** 2).sum()))

    @classmethod
    def from_sums(cls, count: float, total: float, squares: float) -> Moments:
        """From (n, Σx, Σx²), e.g. summed over processes: M2 = Σx² − n·mean²."""
        if count <= 0:
            return cls()
        mean = total / count
        return cls(float(count), mean, max(squares - count * mean * mean, 0.0))

    def merge(self, other: Moments) -> Moments:
        """The moments of both sets together (Chan et al. 1979's pairwise update):
        δ = mean_b − mean_a,  mean = mean_a + δ n_b / n,  M2 = M2_a + M2_b + δ² n_a n_b / n."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * other.count / n,
                       self.m2 + other.m2 + delta * delta * self.count * other.count / n)

    @property
    def var(self) -> float:
        """Population variance (0 for fewer than one value)."""
        return self.m2 / self.count if self.count > 0 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def as_list(self) -> list[float]:
        return [self.count, self.mean, self.m2]


def symmetric_clip(x: torch.Tensor, bound: float | None) -> torch.Tensor:
    """x clipped to [−bound, bound]; `bound=None`: x unchanged (the same tensor)."""
    if bound is None:
        return x
    if not bound > 0:
        raise ValueError(f"the clip bound must be > 0, got {bound}")
    return x.clamp(-bound, bound)


def normalize_scores(scores: torch.Tensor, moments: Moments | None, clip: float | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(s − μ) / √(σ² + 1e-8) with the running `moments` (None: not normalised), then
    clipped to ±`clip` (None: not clipped). Returns the scores, and which were clipped."""
    out = scores
    if moments is not None:
        out = (scores - moments.mean) / math.sqrt(moments.var + 1e-8)
    clipped = symmetric_clip(out, clip)
    return clipped, clipped != out
