"""Reward models and verifiers; importable without the trainers (no dependency on
`alignment`)."""

from reward_models.exact_answer import extract_answer, is_correct, parse_number

__all__ = ["extract_answer", "is_correct", "parse_number"]
