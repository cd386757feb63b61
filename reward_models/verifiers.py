"""Rule-based verifiers: exact answers, math equivalence, regular expressions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from reward_models.base import Scorer
from reward_models.exact_answer import is_correct


def _reference(row: Mapping[str, Any], column: str, scorer: str) -> Any:
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"the row has no '{column}' column to compare with ({scorer} needs "
                         "the reference answer)")
    return value


class ExactAnswerScorer(Scorer):
    """1 if the completion's final number (`#### N`, "the answer is N", else the last
    number) equals the row's answer, else 0."""

    name = "exact_answer"

    def __init__(self, answer_column: str = "answer"):
        self.answer_column = answer_column

    def score_one(self, prompt, completion, row):
        return float(is_correct(completion, _reference(row, self.answer_column, self.name)))


class MathEquivScorer(Scorer):
    """1 if the completion's final answer is mathematically equal to the row's answer:
    fractions, decimals, LaTeX (`\\boxed{}`, `\\frac`), sets, intervals — via the maintained
    `math-verify` library (Hugging Face), with a plain numeric comparison as fallback."""

    name = "math_equiv"

    def __init__(self, answer_column: str = "answer"):
        self.answer_column = answer_column

    def score_one(self, prompt, completion, row):
        reference = str(_reference(row, self.answer_column, self.name))
        from math_verify import parse, verify

        gold = parse(reference if "$" in reference or "\\" in reference else f"${reference}$")
        predicted = parse(completion)
        if gold and predicted and verify(gold, predicted):
            return 1.0
        return float(is_correct(completion, reference))


class RegexScorer(Scorer):
    """1 if the completion matches `pattern` (re.search, or re.fullmatch with
    `full=True`), else 0: format checks such as "ends with #### <integer>"."""

    name = "regex"

    def __init__(self, pattern: str, full: bool = False, flags: str = ""):
        try:
            self.pattern = re.compile(pattern, _flags(flags))
        except re.error as exc:
            raise ValueError(f"regex: invalid pattern {pattern!r}: {exc}") from None
        self.full = full

    def score_one(self, prompt, completion, row):
        match = self.pattern.fullmatch if self.full else self.pattern.search
        return float(match(completion.strip() if self.full else completion) is not None)


def _flags(text: str) -> int:
    table = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}
    unknown = set(text) - set(table)
    if unknown:
        raise ValueError(f"regex: unknown flags {''.join(sorted(unknown))!r} (use i, m, s)")
    value = 0
    for ch in text:
        value |= table[ch]
    return value
