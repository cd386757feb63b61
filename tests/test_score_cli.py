"""`alignment score`: streaming, atomic output, bad rows by line number, reward models."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _score(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "alignment", "score", *args], env=ENV,
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_scores_in_order_and_keeps_bad_rows(tmp_path):
    src = tmp_path / "samples.jsonl"
    src.write_text("\n".join([
        json.dumps({"prompt": "What is 2+3?", "completion": "#### 5", "answer": 5}),
        json.dumps({"prompt": "x", "completion": 3, "answer": 1}),
        "not json",
        "",
        json.dumps({"prompt": "What is 2+2?", "completion": "it is 5", "answer": 4}),
        json.dumps({"prompt": "q", "completion": "#### 1"}),
    ]) + "\n")
    out = tmp_path / "sub" / "scored.jsonl"
    result = _score("--scorer", "exact_answer", "--input", str(src), "--output", str(out),
                    "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["reward"] for r in rows] == [1.0, None, None, 0.0, 0.0]
    assert rows[0]["reward_exact_answer"] == 1.0 and rows[0]["answer"] == 5
    assert rows[1]["error"] == "line 2: column 'completion' must be a string (int)"
    assert rows[2]["error"].startswith("line 3: not valid JSON")
    assert rows[4]["error"].startswith("line 6: exact_answer")
    assert "2 rows could not be scored" in result.stderr and "line 3" in result.stderr
    assert "scored 3 of 5 rows" in result.stdout
    # exact answer: 1.0 on "#### 5" (6 chars), 0.0 on "it is 5" (7): too few rows to rank
    assert "length bias: not measurable on 2 rows" in result.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["scored.jsonl"]   # no temp left


def test_scorer_options_and_unknown_names(tmp_path):
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps({"prompt": "p", "completion": "a\n#### 12"}) + "\n")
    out = tmp_path / "o.jsonl"
    ok = _score("--scorer", "regex", "--set", "pattern=#### \\d+$", "--input", str(src),
                "--output", str(out))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(out.read_text())["reward"] == 1.0
    bad = _score("--scorer", "exact_answr", "--input", str(src), "--output", str(out))
    assert bad.returncode == 2 and "did you mean 'exact_answer'" in bad.stderr
    missing = _score("--scorer", "exact_answer", "--input", str(tmp_path / "none.jsonl"),
                     "--output", str(out))
    assert missing.returncode == 2 and "no such file" in missing.stderr


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory, bundled_model_dir):
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from alignment.models import load_tokenizer

    tokenizer = load_tokenizer(bundled_model_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         num_labels=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("rm") / "rm"
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_reward_model_scorer_is_batch_invariant(tiny_reward_model):
    from reward_models import build_scorer

    prompts = ["What is 2 + 3?", "Compute 10 - 4.", "What is 7 * 6?"]
    completions = ["2 + 3 = 5\n#### 5", "6", "7 * 6 = 42, a longer answer here\n#### 42"]
    one = build_scorer("reward_model", path=tiny_reward_model, batch_size=1)
    three = build_scorer("reward_model", path=tiny_reward_model, batch_size=3)
    a = one.score(prompts, completions).rewards
    b = three.score(prompts, completions).rewards
    assert a == pytest.approx(b, abs=1e-5)     # right padding does not change a score
    assert len(set(round(x, 6) for x in a)) == 3


def test_score_cli_with_reward_model(tmp_path, tiny_reward_model):
    src = tmp_path / "s.jsonl"
    src.write_text("".join(json.dumps({"prompt": "p", "completion": c}) + "\n"
                           for c in ["one", "two", "three"]))
    out = tmp_path / "o.jsonl"
    result = _score("--reward-model", tiny_reward_model, "--input", str(src), "--output",
                    str(out), "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(isinstance(r["reward"], float) and "reward_reward_model" in r for r in rows)


def test_length_bias_is_spearman_of_score_and_length():
    from reward_models.diagnostics import describe, length_bias, spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties take their mean rank: ranks x = 1, 2.5, 2.5, 4; y = 1, 2, 3, 4 -> r = 0.9487
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1, 2], [1, 2]) is None
    short_wins = length_bias([3.0, 2.0, 1.0, float("nan")], ["a", "bb", "ccc", "dddd"])
    assert short_wins == {"n": 3, "spearman": pytest.approx(-1.0)}
    line = describe(short_wins)
    assert "ρ(score, completion length) = -1.00 over 3 rows" in line
    assert "favour shorter completions" in line
    assert "warning" not in describe({"n": 50, "spearman": 0.1})
