"""The exact-answer checker used by `alignment eval` and the `exact_answer` reward."""

import pytest

from reward_models import extract_answer, is_correct, parse_number


@pytest.mark.parametrize("text, expected", [
    ("#### 42", "42"),
    ("####42", "42"),
    ("####   42", "42"),
    ("37 + 45 = 82\n#### 82", "82"),
    ("The answer is 42.", "42"),
    ("the answer is **56**", "56"),
    ("Answer: 17", "17"),
    ("So there are 1,234 apples.", "1234"),
    ("#### 1,234", "1234"),
    ("#### -5", "-5"),
    ("the result is −17", "-17"),          # Unicode minus
    ("it drops to - 5 degrees", "-5"),
    ("61 - 93 = -32", "-32"),
    ("45-3 = 42", "42"),
    ("The balance is 3.50 dollars", "3.50"),
    ("#### 7 (checked twice: 2 ways)", "7"),   # '####' wins over a later number
    ("The answer is 12, not 13 as I said before", "12"),
    ("I think 3, then 4, then 5", "5"),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", ["no number at all", "", "####", "the answer is unknown"])
def test_no_number(text):
    assert extract_answer(text) is None
    assert not is_correct(text, 0)


@pytest.mark.parametrize("completion, answer, ok", [
    ("#### 42", 42, True),
    ("#### 42", "42", True),
    ("42.0", 42, True),
    ("#### 1,234", 1234, True),
    ("#### 1,234", "1,234", True),
    ("The answer is -8.", -8, True),
    ("The answer is 8.", -8, False),
    ("#### 41", 42, False),
    ("82\n#### 28", 82, False),              # the marked answer counts, not the first number
    ("so 3 + 4 = 7", 7, True),
])
def test_is_correct(completion, answer, ok):
    assert is_correct(completion, answer) is ok


def test_parse_number_rejects_junk():
    assert parse_number("abc") is None
    assert parse_number(True) is None
    assert parse_number("1,000") == 1000
