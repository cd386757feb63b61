"""Shared fixtures: the bundled model's folder, its tokenizer, and tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Tests never reach a model hub; they use the bundled model and local files only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def bundled_model_dir() -> str:
    from alignment.models import ensure_bundled

    return str(ensure_bundled("smollm2-135m"))


@pytest.fixture(scope="session")
def tokenizer(bundled_model_dir):
    from alignment.models import load_tokenizer

    return load_tokenizer(bundled_model_dir)


@pytest.fixture(scope="session")
def prompts_file(tmp_path_factory, repo_root) -> str:
    """The first 16 add2 training prompts (prompt, answer, task) as a jsonl file."""
    rows = (repo_root / "data/arithmetic/add2/train.jsonl").read_text().splitlines()[:16]
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bundled_model_dir) -> str:
    """A 2-layer, 32-wide random Llama with the bundled tokenizer (loads in < 1 s)."""
    from alignment.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0,
                           tokenizer_from=bundled_model_dir)
