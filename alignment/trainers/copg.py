"""CoPG — Contrastive Policy Gradient (Flet-Berliac et al. 2024); ALGORITHMS.md §5.

    two completions y, y′ of one prompt, scalar rewards R(y), R(y′), π_ref frozen:
        maximise  ℓ = (R^π_{β/2}(y) − R^π_{β/2}(y′)) (h(y) − h(y′)),
        R^π_β(y) = R(y) − β h(y),  h = log π_θ − log π_ref (sequence sums)      (Eq. 7)

a policy gradient in which each sample's KL-regularised reward is baselined by the other's
(the gradient has the full β); no ranking of the pair is needed. Loss: `copg_loss`.

Offline (`CoPGTrainer`): the data's pairs, read as preference rows whose `chosen` and
`rejected` are simply the two completions; each completion's reward comes from data
columns (`copg.reward_columns`) or is scored once at load time by the recipe's
`rewards:` (`copg.rewards_from: scorer`, e.g. the verifier against `answer`). Missing or
non-finite rewards stop with the file, row and column.
Online (`copg.online: true`, `OnlineCoPGTrainer`): two samples per prompt from the current
policy, scored, trained on: RLOO with k = 2 (Property 2). Ties are kept: their reward
difference is 0 but the KL part of the gradient still acts.
"""

from __future__ import annotations

import math

from alignment.data import DataError
from alignment.losses import copg_loss
from alignment.trainers.pair_sampling import OnlinePairTrainer
from alignment.trainers.preference import Pair, PreferenceTrainer


class CoPGLoss:
    average_logps = False

    def preference_loss(self, policy_a, policy_b, ref_a, ref_b, batch):
        rewards = batch["pair_rewards"].to(policy_a.device)   # (B, 2)
        return copg_loss(policy_a, policy_b, ref_a, ref_b, rewards[:, 0], rewards[:, 1],
                         beta=self.recipe.copg.beta)


class CoPGTrainer(CoPGLoss, PreferenceTrainer):
    @property
    def reference_mode(self) -> str:
        return self.recipe.copg.reference

    def load_examples(self, path: str, limit: int | None, split: str) -> list[Pair]:
        pairs = list(super().load_examples(path, limit, split))   # rewards are set on each
        if self.recipe.copg.rewards_from == "columns":
            self._rewards_from_columns(path, pairs)
        else:
            self._rewards_from_scorer(path, pairs)
        ties = sum(p.rewards[0] == p.rewards[1] for p in pairs)
        if ties:
            self._say(f"{path}: {ties} of {len(pairs)} pairs have equal rewards (they only "
                      "regularise towards the reference)")
        return pairs

    def _rewards_from_columns(self, path: str, pairs: list[Pair]) -> None:
        columns = self.recipe.copg.reward_columns
        for pair in pairs:
            values = []
            for column in columns:
                value = pair.row.get(column)
                if value is None:
                    raise DataError(f"{pair.where}: column '{column}' (copg.reward_columns) is "
                                    "missing or null; give every completion a reward, or set "
                                    "copg.rewards_from: scorer to score them with `rewards:`")
                values.append(_finite(value, pair.where, f"column '{column}'"))
            pair.rewards = (values[0], values[1])

    def _rewards_from_scorer(self, path: str, pairs: list[Pair]) -> None:
        from reward_models.registry import build_composite

        scorer = build_composite(self.recipe.rewards)
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        prompts = [p.raw_prompt for p in pairs for _ in range(2)]   # as in the data
        texts = [decode(ids) for p in pairs for ids in (p.chosen_ids, p.rejected_ids)]
        rows = [p.row for p in pairs for _ in range(2)]
        result = scorer.score(prompts, texts, rows)
        for k, pair in enumerate(pairs):
            for side, i in (("chosen", 2 * k), ("rejected", 2 * k + 1)):
                if result.errors[i] is not None:
                    raise DataError(f"{pair.where}: scoring '{side}' with `rewards:` failed: "
                                    f"{result.errors[i]}")
            pair.rewards = (_finite(result.rewards[2 * k], pair.where, "the chosen's score"),
                            _finite(result.rewards[2 * k + 1], pair.where,
                                    "the rejected's score"))
        self._say(f"{path}: scored {len(texts)} completions with `rewards:` (mean "
                  f"{sum(result.rewards) / len(texts):.3f})")


def _finite(value, where: str, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {what} is not a number: {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise DataError(f"{where}: {what} must be a finite number, got {value!r}")
    return number


class OnlineCoPGTrainer(CoPGLoss, OnlinePairTrainer):
    pairing = "consecutive"
    keep_ties = True


__all__ = ["CoPGTrainer", "OnlineCoPGTrainer"]
