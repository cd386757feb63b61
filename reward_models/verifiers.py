"""Rule-based verifiers: exact answers, math equivalence, regular expressions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from reward_models.base import Scorer
from reward_models.exact_answer import extract_answer, is_correct, parse_number


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


class DigitMatchScorer(Scorer):
    """Partial credit for integer answers: the share of digit positions (aligned from the
    right, the longer number's length) where the completion's final number agrees with the
    row's answer; halved on a sign mismatch. 136 vs 136 -> 1, 130 -> 2/3, 36 -> 2/3, none
    -> 0. A dense shaping term for RL on arithmetic, where an exact-match reward alone is
    too rare for a weak model to learn from; pair it with `exact_answer`."""

    name = "digit_match"

    def __init__(self, answer_column: str = "answer"):
        self.answer_column = answer_column

    def score_one(self, prompt, completion, row):
        answer = parse_number(_reference(row, self.answer_column, self.name))
        found = extract_answer(completion)
        predicted = parse_number(found) if found is not None else None
        if predicted is None or answer is None or predicted.denominator != 1 \
                or answer.denominator != 1:
            return 0.0
        want, got = str(abs(answer.numerator)), str(abs(predicted.numerator))
        width = max(len(want), len(got))
        same = sum(a == b for a, b in zip(want.rjust(width), got.rjust(width), strict=True))
        sign = 1.0 if (answer < 0) == (predicted < 0) else 0.5
        return sign * same / width


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

    @classmethod
    def check_options(cls, options: dict) -> list[str]:
        """Recipe-time check: the pattern compiles and the flags are known."""
        problems = []
        try:
            flags = _flags(options.get("flags", ""))
        except ValueError as exc:
            problems.append(f"flags: {str(exc).removeprefix('regex: ')}")
            flags = 0
        try:
            re.compile(options.get("pattern", ""), flags)
        except re.error as exc:
            problems.append(f"pattern: invalid regular expression {options['pattern']!r}: {exc}")
        return problems

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
