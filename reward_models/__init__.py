"""Reward models and verifiers behind one `Scorer` interface; importable on its own
(no dependency on the `alignment` trainers).

    from reward_models import build_scorer
    result = build_scorer("exact_answer").score(prompts, completions, rows)
    result.rewards, result.parts, result.errors
"""

from reward_models.base import Scorer, ScorerError, ScoreResult
from reward_models.composite import CompositeScorer, Part
from reward_models.exact_answer import extract_answer, is_correct, parse_number
from reward_models.python_tests import PythonTestsScorer, extract_code
from reward_models.registry import BUILTIN, build_composite, build_scorer
from reward_models.sandbox import SandboxResult, run_python

__all__ = ["BUILTIN", "CompositeScorer", "Part", "ScoreResult", "Scorer", "ScorerError",
           "build_composite", "build_scorer", "extract_answer", "is_correct", "parse_number",
           "PythonTestsScorer", "SandboxResult", "extract_code", "run_python"]
