"""Errors a run can stop with, importable without torch (the CLI prints them as messages)."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. too many non-finite losses in a row, or a set-up this
    version does not support)."""
