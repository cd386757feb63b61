"""The scorer layer: verifiers, composites with constraints, the registry, error policy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reward_models import CompositeScorer, Part, ScorerError, build_composite, build_scorer

PROMPTS = ["What is 2 + 3?", "What is 10 - 4?", "What is 7 * 6?"]
ROWS = [{"answer": 5}, {"answer": 6}, {"answer": 42}]


def test_exact_answer():
    result = build_scorer("exact_answer").score(
        PROMPTS, ["2 + 3 = 5\n#### 5", "The answer is 7.", "7 * 6 = 42"], ROWS)
    assert result.rewards == [1.0, 0.0, 1.0]
    assert result.parts == {"exact_answer": [1.0, 0.0, 1.0]}
    assert result.errors == [None, None, None]


@pytest.mark.parametrize("completion, answer, ok", [
    ("so the result is \\boxed{\\frac{1}{2}}", "0.5", True),
    ("The answer is $0.75$", "\\frac{3}{4}", True),
    ("#### 1,234", "1234", True),
    ("The answer is \\boxed{3}", "4", False),
    ("no idea", "4", False),
])
def test_math_equiv(completion, answer, ok):
    assert build_scorer("math_equiv").score(["q"], [completion], [{"answer": answer}]
                                            ).rewards == [float(ok)]


@pytest.mark.parametrize("completion, answer, expected", [
    ("The answer is 136.", 136, 1.0), ("130", 136, 2 / 3), ("so 36", 136, 2 / 3),
    ("1136", 136, 3 / 4), ("#### -136", 136, 0.5), ("no number", 136, 0.0),
    ("2.5", 136, 0.0), ("-12", -12, 1.0),
])
def test_digit_match_partial_credit(completion, answer, expected):
    assert build_scorer("digit_match").score(["q"], [completion], [{"answer": answer}]
                                             ).rewards == [pytest.approx(expected)]


def test_function_scorer_that_raises_is_narrowed_to_its_sample(tmp_path, monkeypatch):
    (tmp_path / "buggy_rewards.py").write_text(
        "def picky(prompts, completions, rows):\n"
        "    return [1.0 / len(c) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = build_scorer("buggy_rewards:picky").score(["q"] * 3, ["ab", "", "abcd"])
    assert result.rewards == [0.5, 0.0, 0.25]
    assert result.errors[0] is None and "sample 1: ZeroDivisionError" in result.errors[1]


def test_regex_format_check():
    scorer = build_scorer("regex", pattern=r"#### -?\d+\s*$")
    assert scorer.score(["q", "q"], ["2 + 3 = 5\n#### 5", "it is five"]).rewards == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"option pattern: invalid regular expression '\('"):
        build_scorer("regex", pattern="(")


def test_missing_reference_is_reported_per_sample_and_scored_zero():
    result = build_scorer("exact_answer").score(PROMPTS[:2], ["#### 5", "#### 6"],
                                                [{"answer": 5}, {"task": "x"}])
    assert result.rewards == [1.0, 0.0]
    assert result.errors[0] is None
    assert "sample 1" in result.errors[1] and "'answer'" in result.errors[1]
    assert result.n_errors == 1


def test_on_error_raise_names_the_sample():
    scorer = build_scorer("exact_answer")
    scorer.on_error = "raise"
    with pytest.raises(ScorerError, match="exact_answer: sample 0: ValueError"):
        scorer.score(["q"], ["#### 5"], [{}])


def test_composite_weights_and_constraints():
    completions = ["2 + 3 = 5\n#### 5", "#### 6 and more text", "42"]
    composite = build_composite([
        {"name": "exact_answer", "weight": 2.0},
        {"name": "regex", "pattern": r"####", "weight": 0.5, "label": "format"},
        {"name": "regex", "pattern": r"^[^a-z]*$", "constraint": True, "label": "no_words"},
    ])
    result = composite.score(PROMPTS, completions, ROWS)
    # sample 0: 2*1 + 0.5*1 = 2.5, constraint holds; sample 1 violates it (has words);
    # sample 2: 2*1 + 0.5*0 = 2.0
    assert result.rewards == [2.5, 0.0, 2.0]
    assert result.parts["exact_answer"] == [1.0, 1.0, 1.0]
    assert result.parts["format"] == [1.0, 1.0, 0.0]
    assert result.parts["constraints/violated"] == [0.0, 1.0, 0.0]


def test_composite_penalty_mode_and_validation():
    exact = build_scorer("exact_answer")
    must_hash = build_scorer("regex", pattern="####")
    composite = CompositeScorer([Part(exact), Part(must_hash, constraint=True)],
                                on_violation="penalty", penalty=0.5)
    assert composite.score(PROMPTS[:1], ["5"], ROWS[:1]).rewards == [0.5]
    with pytest.raises(ValueError, match="distinct names"):
        CompositeScorer([Part(exact), Part(exact)])
    with pytest.raises(ValueError, match="on_violation"):
        CompositeScorer([Part(exact)], on_violation="drop")


def test_registry_names_and_user_scorers(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="did you mean 'exact_answer'"):
        build_scorer("exact_answr")
    (tmp_path / "my_rewards.py").write_text(
        "from reward_models import Scorer\n"
        "class Brevity(Scorer):\n"
        "    name = 'brevity'\n"
        "    def __init__(self, limit=10):\n"
        "        self.limit = limit\n"
        "    def score_one(self, prompt, completion, row):\n"
        "        return float(len(completion) <= self.limit)\n"
        "def shouting(prompts, completions, rows):\n"
        "    return [float(c.isupper()) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert build_scorer("my_rewards:Brevity", limit=3).score(["q", "q"], ["ab", "abcd"]
                                                             ).rewards == [1.0, 0.0]
    assert build_scorer("my_rewards.shouting").score(["q", "q"], ["HI", "hi"]).rewards == [1, 0]
    with pytest.raises(ValueError, match="unknown option 'nope' for scorer 'my_rewards:Brevity' "
                       r"\(options: limit;"):
        build_scorer("my_rewards:Brevity", nope=1)
    with pytest.raises(ValueError, match="has no 'Missing'"):
        build_scorer("my_rewards:Missing")
    with pytest.raises(ValueError, match="cannot import module"):
        build_scorer("no_such_module_xyz:Thing")


def test_batch_length_mismatch():
    with pytest.raises(ValueError, match="must match"):
        build_scorer("exact_answer").score(["a", "b"], ["c"], [{}, {}])


def test_reward_models_imports_without_the_trainers():
    code = ("import sys, reward_models; reward_models.build_scorer('exact_answer');"
            "assert 'alignment' not in sys.modules and 'torch' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
