"""Exact integer/number answers: find the final answer in a completion, compare it.

The final answer is, in order of preference:
  1. the number after the last `####` (GSM8K convention, what our worked answers end with);
  2. the number after the last "answer is" / "answer:" phrase;
  3. the last number in the text.
Numbers may carry a sign (ASCII or Unicode minus), thousands separators ("1,234") and a
decimal part ("42.0" equals 42); a sentence-final period is not a decimal point. A minus
sign glued to a preceding word or digit ("45-3") is read as subtraction, not a sign.
"""

from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = r"(?:(?<![\w)\]])[-−]\s?)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_HASHES_RE = re.compile(r"####\s*(" + _NUMBER.replace("(?<![\\w)\\]])", "") + ")")
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is|:|=)\s*:?\s*\**\s*\$?(" +
                           _NUMBER.replace("(?<![\\w)\\]])", "") + ")", re.IGNORECASE)


def extract_answer(text: str) -> str | None:
    """The final numeric answer in `text`, as written (normalised), or None."""
    for pattern in (_HASHES_RE, _ANSWER_IS_RE):
        found = pattern.findall(text)
        if found:
            return _normalise(found[-1])
    found = _NUMBER_RE.findall(text)
    return _normalise(found[-1]) if found else None


def parse_number(text: str | int | float) -> Fraction | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return Fraction(text)
    try:
        return Fraction(_normalise(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        return None


def is_correct(completion: str, answer: str | int | float) -> bool:
    """True when the completion's final answer equals `answer` numerically."""
    predicted = extract_answer(completion)
    if predicted is None:
        return False
    expected = parse_number(answer)
    return expected is not None and parse_number(predicted) == expected


def _normalise(number: str) -> str:
    return number.replace("−", "-").replace(",", "").replace(" ", "")
