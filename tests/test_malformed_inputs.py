"""Malformed inputs get one clear message and exit status 2, never a traceback.

One table of cases — recipes, data files, command-line arguments, reward options, and
errors raised mid-training — each with the message it must produce: the file, the row
(line) and the key where they apply, and what is allowed. The CLI runs in this process
(`alignment.cli.main`), so the whole table takes seconds; a few cases at the end go
through the real entry point (`python -m alignment`) to show that it prints no traceback
either.

Placeholders in argv, file contents and expected messages: @TMP@ (this case's folder),
@TINY@ (a tiny random causal LM), @RM@ (a tiny reward model), @ROOT@ (the repository).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from alignment.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "data/arithmetic/preference/train.jsonl"
PROMPTS = ROOT / "data/arithmetic/add2/train.jsonl"


@dataclass
class Case:
    id: str
    argv: list[str]
    expect: tuple[str, ...]                   # substrings of stderr, placeholders filled
    files: dict[str, str | bytes] = field(default_factory=dict)   # written under @TMP@
    setup: Callable | None = None             # (tmp_path, ctx, monkeypatch) -> None


CASES: list[Case] = []


def recipe(id_: str, text: str | bytes, *expect: str, overrides=(), files=None,
           setup=None) -> None:
    """`alignment check` on a recipe file; every message names the file."""
    CASES.append(Case(f"recipe-{id_}", ["check", "@TMP@/recipe.yaml", *overrides],
                      ("@TMP@/recipe.yaml", *expect), {"recipe.yaml": text, **(files or {})},
                      setup))


def data(id_: str, name: str, content: str | bytes, *expect: str) -> None:
    """`alignment eval` reads prompt/answer rows before it loads the model."""
    CASES.append(Case(f"data-{id_}", ["eval", "--model", "@TINY@", "--data", f"@TMP@/{name}"],
                      (f"@TMP@/{name}", *expect), {name: content}))


def cli(id_: str, argv: list[str], *expect: str, files=None, setup=None) -> None:
    CASES.append(Case(f"cli-{id_}", argv, expect, files or {}, setup))


def train(id_: str, text: str, *expect: str, files=None, setup=None) -> None:
    """`alignment train` on a tiny model: errors found while loading data or training."""
    CASES.append(Case(f"train-{id_}", ["train", "@TMP@/recipe.yaml"], expect,
                      {"recipe.yaml": text, **(files or {})}, setup))


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


GOOD_ROW = {"prompt": "What is 2 + 3?", "answer": 5}
GOOD_PAIR = {"prompt": "What is 2 + 3?", "chosen": "#### 5", "rejected": "#### 6"}
DPO = "algorithm: dpo\n"
GRPO = "algorithm: grpo\n"

# ====================================================================== recipes
# -- the file itself
recipe("not-utf8", b"algorithm: dpo\n# caf\xe9 au lait\n",
       "not valid UTF-8", "byte 0xe9", "line 2")
recipe("binary-png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10",
       "not valid UTF-8", "byte 0x89", "line 1")
recipe("utf16", "algorithm: dpo\n".encode("utf-16"), "not valid UTF-8", "byte 0xff")
recipe("nul-bytes", b"algorithm: dpo\x00\x00\n", "not valid YAML")
recipe("empty-file", "", "the file is empty")
recipe("only-comments", "# nothing here\n", "the file is empty")
recipe("top-level-list", "- just\n- a list\n", "the top level must be a mapping")
recipe("top-level-scalar", "dpo\n", "the top level must be a mapping", "got str")
recipe("yaml-syntax", "algorithm: dpo\ntrainer: {lr: [1, 2\n", "not valid YAML", "line 3")
recipe("yaml-tab-indent", "algorithm: dpo\ntrainer:\n\tlr: 1\n", "not valid YAML", "line 3")
recipe("duplicate-key", "algorithm: dpo\ntrainer:\n  lr: 1.0e-5\n  lr: 2.0e-5\n",
       "duplicate key 'trainer.lr'", "line 4", "first at line 3")
recipe("duplicate-section", "algorithm: dpo\ntrainer: {lr: 1.0e-5}\ntrainer: {epochs: 2}\n",
       "duplicate key 'trainer'", "line 3")
recipe("recursive-alias", DPO + "model:\n  lora:\n    target_modules: &x [q_proj, *x]\n",
       "model.lora.target_modules: a YAML alias refers to a list or mapping that contains it")
CASES.append(Case("recipe-missing-file", ["check", "@TMP@/nope.yaml"],
                  ("recipe file '@TMP@/nope.yaml' does not exist",)))
CASES.append(Case("recipe-is-a-folder", ["check", "@TMP@/folder"],
                  ("recipe file '@TMP@/folder' is a folder",), {"folder/x.txt": "x"}))
# -- keys
recipe("unknown-key-typo", DPO + "trainer:\n  lrr: 1\n",
       "unknown key 'trainer.lrr' — did you mean 'trainer.lr'?")
recipe("unknown-section-typo", DPO + "trainr:\n  lr: 1\n",
       "unknown key 'trainr' — did you mean 'trainer'?")
recipe("key-in-wrong-section", DPO + "trainer:\n  beta: 0.2\n",
       "unknown key 'trainer.beta' — did you mean 'dpo.beta'?")
recipe("unknown-top-key", DPO + "zzz: 1\n", "unknown key 'zzz' (allowed in 'the top level':")
recipe("non-string-key", DPO + "1: x\n", "unknown key '1'")
recipe("dotted-key-in-file", DPO + "trainer.lr: 1.0e-5\n",
       "key 'trainer.lr' is written with dots: in a recipe file nest it (trainer: {lr: ...})")
recipe("dotted-key-in-section", DPO + "model:\n  lora.r: 8\n",
       "key 'model.lora.r' is written with dots: in a recipe file nest it (lora: {r: ...})")
recipe("unknown-lora-key", DPO + "model:\n  lora:\n    rank: 8\n",
       "unknown key 'model.lora.rank' (allowed in 'model.lora': r, alpha, dropout")
recipe("missing-algorithm", "model:\n  name: x\n",
       "missing required key 'algorithm' (one of 'dpo'")
recipe("algorithm-unknown", "algorithm: dpx\n", "algorithm: must be one of 'dpo'", "'dpx'")
recipe("algorithm-null", "algorithm:\n", "algorithm: must be one of", "(got None)")
recipe("algorithm-list", "algorithm: [dpo]\n", "algorithm: must be one of", "['dpo']")
# -- values
recipe("lr-not-a-number", DPO + "trainer:\n  lr: fast\n",
       "trainer.lr: expected a number (got 'fast')")
recipe("lr-negative", DPO + "trainer:\n  lr: -1.0e-5\n", "trainer.lr: must be > 0.0")
recipe("lr-nan", DPO + "trainer:\n  lr: .nan\n", "trainer.lr: expected a finite number")
recipe("lr-inf", DPO + "trainer:\n  lr: .inf\n", "trainer.lr: expected a finite number")
recipe("lr-inf-string", DPO + "trainer:\n  lr: inf\n", "trainer.lr: expected a finite number")
recipe("batch-size-float", DPO + "trainer:\n  batch_size: 2.5\n",
       "trainer.batch_size: expected an integer (got 2.5)")
recipe("batch-size-zero", DPO + "trainer:\n  batch_size: 0\n",
       "trainer.batch_size: must be > 0 (got 0)")
recipe("epochs-bool", DPO + "trainer:\n  epochs: true\n", "trainer.epochs: expected an integer")
recipe("max-steps-negative", DPO + "trainer:\n  max_steps: -3\n", "trainer.max_steps: must be > 0")
recipe("bool-as-string", DPO + "model:\n  gradient_checkpointing: 'yes'\n",
       "model.gradient_checkpointing: expected true or false (got 'yes')")
recipe("dtype-choice", DPO + "model:\n  dtype: fp8\n",
       "model.dtype: must be one of 'auto', 'bfloat16'", "'fp8'")
recipe("optimizer-choice", DPO + "trainer:\n  optimizer: adam\n",
       "trainer.optimizer: must be one of 'adamw', 'adamw_kahan', 'rmsprop', 'sgd' (got 'adam')")
recipe("section-is-scalar", DPO + "trainer: 5\n", "trainer: expected a section (mapping), got 5")
recipe("section-is-list", DPO + "trainer: [1, 2]\n", "trainer: expected a section (mapping)")
recipe("list-is-string", DPO + "model:\n  lora:\n    target_modules: q_proj\n",
       "model.lora.target_modules: expected a list of str (got 'q_proj')")
recipe("list-item-type", DPO + "model:\n  lora:\n    target_modules: [q_proj, 7]\n",
       "model.lora.target_modules: item 1: expected a string")
recipe("lora-dropout-over-1", DPO + "model:\n  lora:\n    r: 8\n    dropout: 1.5\n",
       "model.lora.dropout: must be <= 1.0 (got 1.5)")
recipe("lora-dropout-without-lora", DPO + "model:\n  lora:\n    dropout: 0.1\n",
       "model.lora.dropout is set but LoRA is off (model.lora.r = 0)")
recipe("port-out-of-range", DPO + "launch:\n  main_process_port: 70000\n",
       "launch.main_process_port: must be <= 65535")
recipe("lam-not-a-list", "algorithm: spin\nspin:\n  lam: 0.1\n",
       "spin.lam: expected a list of float (got 0.1)")
# -- paths
recipe("train-file-missing", DPO + "data:\n  train: no/such/file.jsonl\n",
       "data.train: 'no/such/file.jsonl' does not exist")
recipe("eval-file-missing", DPO + "data:\n  eval: nope.jsonl\n", "data.eval: 'nope.jsonl' does not")
recipe("eval-data-missing", DPO + "eval:\n  data: nope.jsonl\n", "eval.data: 'nope.jsonl' does not")
recipe("launch-config-missing", DPO + "launch:\n  config_file: launch/nope.yaml\n",
       "launch.config_file: 'launch/nope.yaml' does not exist")
recipe("critic-path-missing", "algorithm: ppo\ncritic:\n  init: reward_model\n  path: no/rm\n",
       "critic.path: 'no/rm' does not exist")
# -- output_dir
recipe("output-dir-unknown-field", DPO + "output_dir: runs/{algo}\n",
       "output_dir: unknown field '{algo}' in 'runs/{algo}' (allowed: {algorithm})")
recipe("output-dir-positional-field", DPO + "output_dir: 'runs/{}'\n",
       "output_dir: unknown field '{}'", "(allowed: {algorithm})")
recipe("output-dir-attribute", DPO + "output_dir: runs/{algorithm.upper}\n",
       "output_dir: unknown field '{algorithm.upper}'")
recipe("output-dir-unbalanced-brace", DPO + "output_dir: runs/{algorithm\n",
       "output_dir: 'runs/{algorithm' is not a valid template", "{{ and }}")
recipe("output-dir-lone-closing-brace", DPO + "output_dir: runs/x}\n",
       "output_dir: 'runs/x}' is not a valid template")
recipe("output-dir-not-a-string", DPO + "output_dir: 5\n", "output_dir: expected a string (got 5)")
recipe("output-dir-empty", DPO + "output_dir: ''\n", "output_dir: must not be empty")
# -- rules between keys
recipe("prompt-length-ge-max-length", DPO + "data:\n  max_length: 64\n  max_prompt_length: 64\n",
       "data.max_prompt_length (64) must be smaller than data.max_length (64)")
recipe("other-algorithm-section", DPO + "ipo:\n  tau: 0.1\n",
       "section 'ipo' does not apply to algorithm 'dpo'")
recipe("critic-for-dpo", DPO + "critic:\n  lr: 1.0e-5\n", "section 'critic' applies to")
recipe("rollout-for-offline-dpo", DPO + "rollout:\n  max_new_tokens: 8\n",
       "section 'rollout' applies to runs that generate")
recipe("rewards-for-offline-dpo", DPO + "rewards: [{name: exact_answer}]\n",
       "section 'rewards' applies to runs that score samples")
recipe("online-without-rewards", DPO + "dpo:\n  online: true\n",
       "dpo.online is true but the recipe has no 'rewards:' section")
recipe("offline-key-when-online", DPO + "dpo:\n  online: true\n  reference: model\n"
       "rewards: [{name: exact_answer}]\n", "dpo.reference applies to offline dpo only")
recipe("online-key-when-offline", DPO + "dpo:\n  num_generations: 4\n",
       "dpo.num_generations applies only with dpo.online: true")
recipe("copg-three-reward-columns", "algorithm: copg\ncopg:\n  reward_columns: [a, b, c]\n",
       "copg.reward_columns must name 2 columns")
recipe("copg-odd-generations", "algorithm: copg\ncopg:\n  online: true\n  num_generations: 3\n"
       "rewards: [{name: exact_answer}]\n", "copg.num_generations must be even")
recipe("spin-trainer-epochs", "algorithm: spin\ntrainer:\n  epochs: 2\n",
       "trainer.epochs (2) does not apply to spin")
recipe("spin-lam-empty", "algorithm: spin\nspin:\n  lam: []\n",
       "spin.lam must be a non-empty list of values > 0")
recipe("spin-lam-too-long", "algorithm: spin\nspin:\n  iterations: 1\n  lam: [0.1, 0.2]\n",
       "spin.lam has 2 values for spin.iterations=1")
recipe("critic-init-without-path", "algorithm: ppo\ncritic:\n  init: reward_model\n",
       "critic.init is 'reward_model' but critic.path is not set")
recipe("ppo-lora-dropout", "algorithm: ppo\nmodel:\n  lora:\n    r: 8\n    dropout: 0.1\n",
       "model.lora.dropout must be 0 for ppo")
recipe("overlong-cache-over-budget", GRPO + "grpo:\n  overlong_cache: 80\n"
       "rollout:\n  max_new_tokens: 64\n",
       "grpo.overlong_cache (80) must be at most rollout.max_new_tokens (64)")
recipe("overlong-cache-over-budget-ppo", "algorithm: ppo\nppo:\n  overlong_cache: 100\n",
       "ppo.overlong_cache (100) must be at most rollout.max_new_tokens (64)")
# -- overrides
recipe("override-not-key-value", DPO, "override 'trainer.lr' is not of the form key=value",
       overrides=["trainer.lr"])
recipe("override-empty-key", DPO, "override '=1' is not of the form key=value", overrides=["=1"])
recipe("override-into-a-value", DPO + "trainer:\n  lr: 0.1\n", "'trainer.lr' is not a section",
       overrides=["trainer.lr.x=1"])
recipe("override-unknown-key", DPO, "did you mean 'trainer.lr'?", overrides=["trainer.lrr=1"])
recipe("override-bad-value", DPO, "trainer.batch_size: expected an integer (got 'many')",
       overrides=["trainer.batch_size=many"])
recipe("override-section-scalar", DPO, "trainer: expected a section (mapping), got 5",
       overrides=["trainer=5"])
# -- reward options (`rewards:`)
recipe("rewards-not-a-list", GRPO + "rewards: exact_answer\n",
       "rewards: expected a list of dict (got 'exact_answer')")
recipe("rewards-empty", GRPO + "rewards: []\n", "rewards: expected a non-empty list")
recipe("rewards-item-not-mapping", GRPO + "rewards: [exact_answer]\n",
       "rewards: item 0: expected a mapping")
recipe("rewards-missing-name", GRPO + "rewards: [{weight: 1.0}]\n", "rewards[0]: missing 'name'")
recipe("rewards-name-not-string", GRPO + "rewards: [{name: 5}]\n",
       "rewards[0].name: expected a string", "got 5")
recipe("rewards-unknown-scorer", GRPO + "rewards: [{name: exact_answr}]\n",
       "rewards[0]: unknown scorer 'exact_answr' — did you mean 'exact_answer'?")
recipe("rewards-unknown-option", GRPO + "rewards: [{name: exact_answer, answer_col: x}]\n",
       "rewards[0]: unknown option 'answer_col' for scorer 'exact_answer' — did you mean "
       "'answer_column'?")
recipe("rewards-weight-not-number", GRPO + "rewards: [{name: exact_answer, weight: heavy}]\n",
       "rewards[0].weight: expected a number (got 'heavy')")
recipe("rewards-constraint-not-bool", GRPO + "rewards: [{name: exact_answer, constraint: 'yes'}]\n",
       "rewards[0].constraint: expected true or false (got 'yes')")
recipe("rewards-on-error-choice", GRPO + "rewards: [{name: exact_answer, on_error: ignore}]\n",
       "rewards[0].on_error: must be 'zero' or 'raise' (got 'ignore')")
recipe("rewards-duplicate-parts", GRPO + "rewards: [{name: exact_answer}, {name: exact_answer}]\n",
       "rewards[1]: a second part named 'exact_answer'", "'label'")
recipe("regex-invalid-pattern", GRPO + "rewards: [{name: regex, pattern: '(unclosed'}]\n",
       "rewards[0].pattern: invalid regular expression '(unclosed'", "missing )")
recipe("regex-bad-flags", GRPO + "rewards: [{name: regex, pattern: 'x', flags: 'iz'}]\n",
       "rewards[0].flags: unknown flags 'z' (use i, m, s)")
recipe("regex-pattern-not-string", GRPO + "rewards: [{name: regex, pattern: 5}]\n",
       "rewards[0].pattern: expected str (got 5)")
recipe("regex-missing-pattern", GRPO + "rewards: [{name: regex}]\n",
       "rewards[0]: scorer 'regex' needs option 'pattern'")
recipe("python-tests-workers-zero", GRPO + "rewards: [{name: python_tests, workers: 0}]\n",
       "rewards[0]", "workers must be an integer >= 1, got 0")
recipe("python-tests-workers-string", GRPO + "rewards: [{name: python_tests, workers: two}]\n",
       "rewards[0].workers: expected int (got 'two')")
recipe("python-tests-timeout-string", GRPO + "rewards: [{name: python_tests, timeout_s: soon}]\n",
       "rewards[0].timeout_s: expected float (got 'soon')")
recipe("reward-model-no-path", GRPO + "rewards: [{name: reward_model}]\n",
       "rewards[0]: scorer 'reward_model' needs option 'path'")
recipe("reward-model-path-missing", GRPO + "rewards: [{name: reward_model, path: no/such/rm}]\n",
       "rewards[0].path: reward model 'no/such/rm': no such folder")
recipe("reward-model-path-empty-folder",
       GRPO + "rewards: [{name: reward_model, path: '@TMP@/e'}]\n",
       "rewards[0].path: @TMP@/e: no config.json", files={"e/notes.txt": "x"})
recipe("reward-model-path-is-causal-lm",
       GRPO + "rewards: [{name: reward_model, path: '@TINY@'}]\n",
       "rewards[0].path: @TINY@: not a reward model")
recipe("reward-model-batch-size-zero",
       GRPO + "rewards: [{name: reward_model, path: '@RM@', batch_size: 0}]\n",
       "rewards[0].batch_size: must be positive (got 0)")
recipe("reward-model-dtype", GRPO + "rewards: [{name: reward_model, path: '@RM@', dtype: fp8}]\n",
       "rewards[0].dtype: must be one of float32, bfloat16, float16 (got 'fp8')")
recipe("dotted-scorer-no-module", GRPO + "rewards: [{name: 'no_such_pkg.rewards:fn'}]\n",
       "rewards[0]: scorer 'no_such_pkg.rewards:fn': cannot import module 'no_such_pkg.rewards'")
recipe("dotted-scorer-no-attribute", GRPO + "rewards: [{name: 'reward_models.verifiers:Nope'}]\n",
       "rewards[0]: scorer 'reward_models.verifiers:Nope': module 'reward_models.verifiers' "
       "has no 'Nope'")
recipe("scorer-module-does-not-compile",
       GRPO + "rewards: [{name: 'malformed_case_broken:fn'}]\n",
       "rewards[0]: scorer 'malformed_case_broken:fn': importing module 'malformed_case_broken' "
       "failed: SyntaxError", "malformed_case_broken.py, line 1",
       setup=lambda tmp, ctx, mp: (
           (tmp / "malformed_case_broken.py").write_text("def fn(:\n    pass\n"),
           mp.syspath_prepend(str(tmp))))
recipe("function-scorer-with-options",
       GRPO + "rewards: [{name: 'reward_models.exact_answer:is_correct', cutoff: 1}]\n",
       "rewards[0]: scorer 'reward_models.exact_answer:is_correct' is a function and takes no "
       "options, got ['cutoff']")

# ====================================================================== data files
# -- encodings and binary files
data("jsonl-not-utf8", "rows.jsonl",
     jsonl(GOOD_ROW).encode() + b'{"prompt": "caf\xe9", "answer": 1}\n',
     "line 2: not valid UTF-8 text (byte 0xe9 at column 16)")
data("jsonl-binary", "rows.jsonl", bytes(range(256)) * 4,
     "a binary file, not .jsonl text (it holds NUL bytes)")
data("jsonl-utf16", "rows.jsonl", jsonl(GOOD_ROW).encode("utf-16"),
     "UTF-16 text (it starts with a UTF-16 byte-order mark); save the file as UTF-8")
data("jsonl-nul-bytes", "rows.jsonl", b'{"prompt": "a", "answer": 1}\x00\x00\n',
     "a binary file, not .jsonl text")
data("jsonl-high-bytes-binary", "rows.jsonl", bytes(range(128, 256)),
     "line 1: not valid UTF-8 text (byte 0x80 at column 1)")
data("json-not-utf8", "rows.json", b'[{"prompt": "ol\xe9", "answer": 1}]',
     "not valid UTF-8 text (byte 0xe9 at line 1, column 16)")
data("csv-not-utf8", "rows.csv", b"prompt,answer\nWhat is 2+3?,5\ncaf\xe9,1\n",
     "not valid UTF-8 text (byte 0xe9 at line 3, column 4)")
data("csv-binary", "rows.csv", b"prompt,answer\nWhat\x00 is 2+3?,5\n",
     "a binary file, not .csv text")
data("csv-unterminated-quote", "rows.csv", 'prompt,answer\nWhat is 1+1?,2\n"What is 2+2?,4\n',
     "line 3: not readable as CSV (unexpected end of data)")
data("parquet-garbage", "rows.parquet", b"PAR1 this is not really parquet",
     "cannot read as parquet")
# -- structure
data("jsonl-bad-json", "rows.jsonl", jsonl(GOOD_ROW, GOOD_ROW, '{"prompt": "x", answer: 1}'),
     "line 3: not valid JSON")
data("jsonl-trailing-comma", "rows.jsonl", jsonl('{"prompt": "x", "answer": 1,}'),
     "line 1: not valid JSON")
data("jsonl-array-line", "rows.jsonl", jsonl(GOOD_ROW, "[1, 2]"),
     "line 2: expected a JSON object per line, got list")
data("jsonl-string-line", "rows.jsonl", jsonl('"hello"'),
     "line 1: expected a JSON object per line, got str")
data("jsonl-empty", "rows.jsonl", "", "the file has no rows")
data("jsonl-blank-lines-only", "rows.jsonl", "\n\n  \n", "the file has no rows")
data("json-invalid", "rows.json", '[{"prompt": "x"', "not valid JSON")
data("json-not-a-list", "rows.json", '{"prompt": "x", "answer": 1}',
     "expected a list of row objects")
data("json-list-of-numbers", "rows.json", "[1, 2]", "row 0: expected an object, got int")
data("csv-header-only", "rows.csv", "prompt,answer\n", "the file has no rows")
data("unknown-suffix", "rows.txt", "prompt answer\n", "unknown data format '.txt'")
data("no-suffix", "rows", "prompt answer\n", "unknown data format ''")
CASES.append(Case("data-folder-not-a-dataset", ["eval", "--model", "@TINY@", "--data", "@TMP@/d"],
                  ("@TMP@/d: no data files in the folder",),
                  {"d/readme.txt": "x"}))
# -- columns and values (prompt/answer rows)
data("missing-prompt-column", "rows.jsonl", jsonl({"question": "x", "answer": 1}),
     "missing column 'prompt' (found: answer, question)")
data("missing-answer-column", "rows.jsonl", jsonl({"prompt": "x"}), "missing column 'answer'")
data("prompt-null", "rows.jsonl", jsonl(GOOD_ROW, {"prompt": None, "answer": 1}),
     "line 2: column 'prompt' is missing or null")
data("prompt-empty", "rows.jsonl", jsonl(GOOD_ROW, GOOD_ROW, {"prompt": "  ", "answer": 1}),
     "line 3: column 'prompt' is empty")
data("prompt-number", "rows.jsonl", jsonl({"prompt": 7, "answer": 1}),
     "line 1: column 'prompt' must be a string or a list of messages, got int")
data("answer-empty", "rows.jsonl", jsonl(GOOD_ROW, {"prompt": "x", "answer": ""}),
     "line 2: column 'answer' is missing or empty")
data("answer-list", "rows.jsonl", jsonl({"prompt": "x", "answer": [1, 2]}),
     "line 1: column 'answer' must be a number or a string, got list")
data("answer-bool", "rows.jsonl", jsonl({"prompt": "x", "answer": True}),
     "line 1: column 'answer' must be a number or a string, got bool")
data("message-bad-role", "rows.jsonl",
     jsonl({"prompt": [{"role": "human", "content": "hi"}], "answer": 1}),
     "line 1: column 'prompt' message 0 has role 'human' (allowed: system, user, assistant")
data("message-not-object", "rows.jsonl", jsonl({"prompt": ["hi"], "answer": 1}),
     "line 1: column 'prompt' message 0 must be an object with 'role' and 'content'")
data("message-content-not-string", "rows.jsonl",
     jsonl({"prompt": [{"role": "user", "content": 3}], "answer": 1}),
     "line 1: column 'prompt' message 0 content must be a string, got int")
data("empty-conversation", "rows.jsonl", jsonl({"prompt": [], "answer": 1}),
     "line 1: column 'prompt' is an empty conversation")
data("json-row-empty-prompt", "rows.json", json.dumps({"data": [GOOD_ROW, {"prompt": "",
                                                                           "answer": 1}]}),
     "row 1: column 'prompt' is empty")
data("csv-empty-prompt-cell", "rows.csv", "prompt,answer\nWhat is 1+1?,2\n,3\n",
     "line 3: column 'prompt' is empty")

# -- preference pairs, read by a DPO run on the tiny model
TRAIN_DPO = ("algorithm: dpo\noutput_dir: '@TMP@/out'\nmodel: {name: '@TINY@'}\n"
             "data: {train: pairs.jsonl, eval: null, max_length: 128, max_prompt_length: 96}\n"
             "trainer: {batch_size: 2, max_steps: 2, save_every: null}\n"
             "eval: {before_after: false}\nlogging: {report_to: [], progress_bar: false}\n")


def pairs_case(id_: str, rows: str | bytes, *expect: str, recipe_text: str = TRAIN_DPO) -> None:
    train(id_, recipe_text, "@TMP@/pairs.jsonl", *expect, files={"pairs.jsonl": rows})


pairs_case("pairs-missing-rejected", jsonl({"prompt": "p", "chosen": "a"}),
           "missing column 'rejected'")
pairs_case("pairs-chosen-empty", jsonl(GOOD_PAIR, {**GOOD_PAIR, "chosen": ""}),
           "line 2: column 'chosen' is empty")
pairs_case("pairs-chosen-ends-with-user", jsonl({
    "prompt": "p", "chosen": [{"role": "assistant", "content": "a"},
                              {"role": "user", "content": "b"}], "rejected": "c"}),
    "line 1: column 'chosen' must end with an assistant turn, ends with 'user'")
pairs_case("pairs-implicit-prompt-shares-nothing", jsonl({
    "chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
    "rejected": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}),
    "line 1: no 'prompt' column and 'chosen'/'rejected' share no leading turns")
pairs_case("pairs-not-utf8", jsonl(GOOD_PAIR).encode() + b'{"prompt": "\xff"}\n',
           "line 2: not valid UTF-8 text (byte 0xff at column 13)")
pairs_case("pairs-too-long-error", jsonl(GOOD_PAIR, {**GOOD_PAIR, "chosen": "long " * 200}),
           "line 2:", "tokens exceed data.max_prompt_length=96 / data.max_length=128",
           recipe_text=TRAIN_DPO.replace("max_prompt_length: 96}",
                                         "max_prompt_length: 96, too_long: error}"))
pairs_case("pairs-fewer-than-one-step", jsonl(GOOD_PAIR),
           "1 usable examples, fewer than one optimiser step needs (4 = batch_size x "
           "grad_accum x processes)",
           recipe_text=TRAIN_DPO.replace("batch_size: 2", "batch_size: 2, grad_accum: 2"))
train("copg-reward-column-missing",
      TRAIN_DPO.replace("algorithm: dpo", "algorithm: copg"),
      "@TMP@/pairs.jsonl line 1: column 'chosen_reward' (copg.reward_columns) is missing",
      files={"pairs.jsonl": jsonl(GOOD_PAIR, GOOD_PAIR)})
train("copg-reward-not-finite",
      TRAIN_DPO.replace("algorithm: dpo", "algorithm: copg"),
      "@TMP@/pairs.jsonl line 2: column 'rejected_reward' must be a finite number, got nan",
      files={"pairs.jsonl": jsonl({**GOOD_PAIR, "chosen_reward": 1, "rejected_reward": 0},
                                  {**GOOD_PAIR, "chosen_reward": 1,
                                   "rejected_reward": float("nan")})})

# ====================================================================== command line
cli("no-command", [], "error: no command given (one of: check, train, eval")
cli("unknown-command", ["frobnicate"], "invalid choice: 'frobnicate'")
cli("check-without-recipe", ["check"], "alignment check needs a RECIPE (or --keys)")
cli("train-without-recipe", ["train"], "the following arguments are required: recipe")
cli("train-missing-recipe", ["train", "@TMP@/nope.yaml"],
    "recipe file '@TMP@/nope.yaml' does not exist")
cli("train-bad-override", ["train", "recipes/dpo.yaml", "trainer.lrr=1"],
    "invalid recipe recipes/dpo.yaml", "did you mean 'trainer.lr'?")
cli("eval-neither-model", ["eval", "--data", "x.jsonl"],
    "one of the arguments --model --reward-model is required")
cli("eval-model-and-reward-model", ["eval", "--model", "a", "--reward-model", "b", "--data", "x"],
    "argument --reward-model: not allowed with argument --model")
cli("eval-without-data", ["eval", "--model", "@TINY@"],
    "the following arguments are required: --data")
cli("eval-n-zero", ["eval", "--model", "@TINY@", "--data", str(PROMPTS), "--n", "0"],
    "--n must be positive, got 0")
cli("eval-n-not-int", ["eval", "--model", "@TINY@", "--data", str(PROMPTS), "--n", "ten"],
    "argument --n: invalid int value: 'ten'")
cli("eval-batch-size-zero", ["eval", "--model", "@TINY@", "--data", str(PROMPTS),
                             "--batch-size", "0"], "--batch-size must be positive, got 0")
cli("eval-max-new-tokens-zero", ["eval", "--model", "@TINY@", "--data", str(PROMPTS),
                                 "--max-new-tokens", "0"],
    "--max-new-tokens must be positive, got 0")
cli("eval-max-new-tokens-negative", ["eval", "--model", "@TINY@", "--data", str(PROMPTS),
                                     "--max-new-tokens", "-4"],
    "--max-new-tokens must be positive, got -4")
cli("eval-dtype-choice", ["eval", "--model", "@TINY@", "--data", str(PROMPTS), "--dtype", "fp8"],
    "argument --dtype: invalid choice: 'fp8'")
cli("eval-data-missing", ["eval", "--model", "@TINY@", "--data", "@TMP@/none.jsonl"],
    "@TMP@/none.jsonl: no such file or folder")
cli("eval-model-missing", ["eval", "--model", "@TMP@/no/model", "--data", str(PROMPTS),
                           "--n", "2"], "model '@TMP@/no/model' not found")
cli("eval-model-folder-without-config", ["eval", "--model", "@TMP@/m", "--data", str(PROMPTS),
                                         "--n", "2"],
    "'@TMP@/m' is a folder but has no config.json", files={"m/readme.txt": "x"})
cli("eval-model-config-not-json", ["eval", "--model", "@TMP@/m", "--data", str(PROMPTS),
                                   "--n", "2"], "@TMP@/m/config.json: not a valid JSON config",
    files={"m/config.json": "{not json", "m/model.safetensors": "x"})
cli("eval-model-config-not-utf8", ["eval", "--model", "@TMP@/m", "--data", str(PROMPTS),
                                   "--n", "2"], "@TMP@/m/config.json: not a valid JSON config",
    files={"m/config.json": b'{"a": "\xff"}', "m/model.safetensors": "x"})
cli("eval-model-without-weights", ["eval", "--model", "@TMP@/m", "--data", str(PROMPTS),
                                   "--n", "2"],
    "@TMP@/m: no weights (*.safetensors or *.bin) next to its config.json",
    files={"m/config.json": "{}"})
cli("eval-model-without-tokenizer", ["eval", "--model", "@TMP@/m", "--data", str(PROMPTS),
                                     "--n", "2"], "@TMP@/m: cannot load its tokenizer",
    setup=lambda tmp, ctx, mp: [
        (tmp / "m").mkdir(),
        *[(tmp / "m" / f).write_bytes((Path(ctx["@TINY@"]) / f).read_bytes())
          for f in ("config.json", "model.safetensors")]])
cli("eval-output-is-a-folder", ["eval", "--model", "@TINY@", "--data", str(PROMPTS),
                                "--output", "@TMP@/o"],
    "--output '@TMP@/o' is a folder; give a file name", files={"o/keep.txt": "x"})
cli("eval-reward-model-missing", ["eval", "--reward-model", "@TMP@/no/rm", "--data", str(PAIRS)],
    "model '@TMP@/no/rm' not found")
cli("eval-reward-model-is-causal-lm", ["eval", "--reward-model", "@TINY@", "--data", str(PAIRS)],
    "@TINY@: not a reward model")
cli("eval-reward-model-prompt-data", ["eval", "--reward-model", "@RM@", "--data", str(PROMPTS)],
    f"{PROMPTS}: missing columns 'chosen', 'rejected'")
cli("score-batch-size-zero", ["score", "--scorer", "exact_answer", "--input", "@TMP@/in.jsonl",
                              "--output", "@TMP@/out.jsonl", "--batch-size", "0"],
    "--batch-size must be positive, got 0")
cli("score-no-scorer", ["score", "--input", "a", "--output", "b"],
    "one of the arguments --scorer --reward-model is required")
cli("score-set-not-key-value", ["score", "--scorer", "regex", "--set", "pattern",
                                "--input", "@TMP@/in.jsonl", "--output", "@TMP@/out.jsonl"],
    "--set 'pattern' is not KEY=VALUE", files={"in.jsonl": jsonl(GOOD_ROW)})
cli("score-unknown-scorer", ["score", "--scorer", "exact_answr", "--input", "@TMP@/in.jsonl",
                             "--output", "@TMP@/out.jsonl"],
    "unknown scorer 'exact_answr' — did you mean 'exact_answer'?",
    files={"in.jsonl": jsonl(GOOD_ROW)})
cli("score-unknown-option", ["score", "--scorer", "exact_answer", "--set", "answer_col=x",
                             "--input", "@TMP@/in.jsonl", "--output", "@TMP@/out.jsonl"],
    "unknown option 'answer_col' for scorer 'exact_answer' — did you mean 'answer_column'?",
    files={"in.jsonl": jsonl(GOOD_ROW)})
cli("score-regex-missing-pattern", ["score", "--scorer", "regex", "--input", "@TMP@/in.jsonl",
                                    "--output", "@TMP@/out.jsonl"],
    "scorer 'regex' needs option 'pattern'", files={"in.jsonl": jsonl(GOOD_ROW)})
cli("score-regex-invalid", ["score", "--scorer", "regex", "--set", "pattern=([a-z]",
                            "--input", "@TMP@/in.jsonl", "--output", "@TMP@/out.jsonl"],
    "invalid regular expression '([a-z]'", files={"in.jsonl": jsonl(GOOD_ROW)})
cli("score-regex-bad-flags", ["score", "--scorer", "regex", "--set", "pattern=x",
                              "--set", "flags=q", "--input", "@TMP@/in.jsonl",
                              "--output", "@TMP@/out.jsonl"],
    "unknown flags 'q' (use i, m, s)", files={"in.jsonl": jsonl(GOOD_ROW)})
cli("score-python-tests-workers-zero", ["score", "--scorer", "python_tests", "--set", "workers=0",
                                        "--input", "@TMP@/in.jsonl",
                                        "--output", "@TMP@/out.jsonl"],
    "workers must be an integer >= 1, got 0", files={"in.jsonl": jsonl(GOOD_ROW)})
cli("score-dotted-scorer-missing", ["score", "--scorer", "no_such_pkg.x:fn", "--input",
                                    "@TMP@/in.jsonl", "--output", "@TMP@/out.jsonl"],
    "cannot import module 'no_such_pkg.x'", files={"in.jsonl": jsonl(GOOD_ROW)})
cli("score-input-missing", ["score", "--scorer", "exact_answer", "--input", "@TMP@/none.jsonl",
                            "--output", "@TMP@/out.jsonl"], "@TMP@/none.jsonl: no such file")
cli("score-input-not-utf8", ["score", "--scorer", "exact_answer", "--input", "@TMP@/in.jsonl",
                             "--output", "@TMP@/out.jsonl"],
    "@TMP@/in.jsonl line 2: not valid UTF-8 text (byte 0xe9 at column 13)",
    files={"in.jsonl": jsonl(GOOD_ROW).encode() + b'{"prompt": "\xe9", "completion": "1"}\n'})
cli("score-input-binary", ["score", "--scorer", "exact_answer", "--input", "@TMP@/in.parquet",
                           "--output", "@TMP@/out.jsonl"],
    "@TMP@/in.parquet line 1: not valid UTF-8 text", files={"in.parquet": bytes(range(128, 256))})
cli("score-output-is-a-folder", ["score", "--scorer", "exact_answer", "--input", "@TMP@/in.jsonl",
                                 "--output", "@TMP@/outdir"],
    "--output '@TMP@/outdir' is a folder", files={"in.jsonl": jsonl(GOOD_ROW),
                                                  "outdir/keep.txt": "x"})
cli("score-output-under-a-file", ["score", "--scorer", "exact_answer", "--input", "@TMP@/in.jsonl",
                                  "--output", "@TMP@/in.jsonl/out.jsonl"],
    "--output '@TMP@/in.jsonl/out.jsonl' cannot be created: '@TMP@/in.jsonl' is a file, not a "
    "folder",
    files={"in.jsonl": jsonl(GOOD_ROW)})
cli("score-input-is-a-folder", ["score", "--scorer", "exact_answer", "--input", "@TMP@/in",
                               "--output", "@TMP@/out.jsonl"],
    "@TMP@/in: a folder, not a jsonl file", files={"in/rows.jsonl": jsonl(GOOD_ROW)})
cli("score-reward-model-missing", ["score", "--reward-model", "@TMP@/no/rm", "--input",
                                   "@TMP@/in.jsonl", "--output", "@TMP@/out.jsonl"],
    "model '@TMP@/no/rm' not found", files={"in.jsonl": jsonl(GOOD_ROW)})
cli("score-reward-model-is-causal-lm", ["score", "--reward-model", "@TINY@", "--input",
                                        "@TMP@/in.jsonl", "--output", "@TMP@/out.jsonl"],
    "@TINY@: not a reward model", files={"in.jsonl": jsonl(GOOD_ROW)})
cli("score-reward-model-batch-size", ["score", "--reward-model", "@RM@", "--set", "batch_size=0",
                                      "--input", "@TMP@/in.jsonl", "--output", "@TMP@/out.jsonl"],
    "scorer 'reward_model', option batch_size: must be positive (got 0)",
    files={"in.jsonl": jsonl(GOOD_ROW)})
GEN = ["generate", "--model", "@TINY@", "--data", str(PROMPTS), "--output", "@TMP@/bo.jsonl"]
cli("generate-n-zero", [*GEN, "--scorer", "exact_answer", "--n", "0"],
    "--n must be positive, got 0")
cli("generate-limit-zero", [*GEN, "--scorer", "exact_answer", "--limit", "0"],
    "--limit must be positive, got 0")
cli("generate-temperature-negative", [*GEN, "--scorer", "exact_answer", "--temperature", "-1"],
    "temperature must be >= 0 (0 = greedy), got -1.0")
cli("generate-top-p-over-1", [*GEN, "--scorer", "exact_answer", "--top-p", "2"],
    "top_p must be in (0, 1], got 2.0")
cli("generate-unknown-scorer", [*GEN, "--scorer", "exact"], "unknown scorer 'exact'")
cli("generate-no-judge", GEN, "one of the arguments --reward-model --scorer is required")
cli("generate-backend-choice", [*GEN, "--scorer", "exact_answer", "--backend", "tgi"],
    "argument --backend: invalid choice: 'tgi'")
cli("generate-model-missing", ["generate", "--model", "@TMP@/nope", "--data", str(PROMPTS),
                               "--output", "@TMP@/bo.jsonl", "--scorer", "exact_answer"],
    "model '@TMP@/nope' not found")
cli("generate-data-missing", ["generate", "--model", "@TINY@", "--data", "@TMP@/none.jsonl",
                              "--output", "@TMP@/bo.jsonl", "--scorer", "exact_answer"],
    "@TMP@/none.jsonl: no such file or folder")
cli("generate-output-is-a-folder", ["generate", "--model", "@TINY@", "--data", str(PROMPTS),
                                    "--output", "@TMP@/o", "--scorer", "exact_answer"],
    "--output '@TMP@/o' is a folder; give a file name", files={"o/keep.txt": "x"})
cli("generate-output-under-a-file", ["generate", "--model", "@TINY@", "--data", str(PROMPTS),
                                     "--output", "@TMP@/f/out.jsonl", "--scorer",
                                     "exact_answer"],
    "--output '@TMP@/f/out.jsonl' cannot be created: '@TMP@/f' is a file", files={"f": "x"})
cli("model-unknown-name", ["model", "smollm9-1b"], "model 'smollm9-1b' not found")

# ====================================================================== mid-training errors
TRAIN_GRPO = ("algorithm: grpo\noutput_dir: '@TMP@/out'\nmodel: {name: '@TINY@', dtype: float32}\n"
              "data: {train: prompts.jsonl, eval: null, max_length: 64, max_prompt_length: 48}\n"
              "trainer: {batch_size: 4, max_steps: 2, save_every: null}\n"
              "grpo: {prompts_per_step: 2, num_generations: 2}\n"
              "rollout: {backend: hf, max_new_tokens: 4}\n"
              "eval: {before_after: false}\nlogging: {report_to: [], progress_bar: false}\n")
PROMPT_ROWS = {"prompts.jsonl": jsonl(*[{"prompt": f"What is {i} + 1?", "answer": i + 1}
                                        for i in range(4)])}


def _stale_engine(tmp_path, ctx, monkeypatch):
    """An engine that never receives the trainer's updates: its probe log-probs come from a
    copy of the weights it started with, so the real sync check sees the trainer move and
    the engine stay where it was."""
    import copy

    from alignment.rollout.hf import HFEngine

    start = HFEngine.__init__

    def init(self, model, *args, **kwargs):
        start(self, model, *args, **kwargs)
        self.kept = copy.deepcopy(model).eval()

    monkeypatch.setattr(HFEngine, "__init__", init)
    monkeypatch.setattr(HFEngine, "probe_logps",
                        lambda self: self.sync_check.trainer_logps(self.kept))
    (tmp_path / "malformed_case_length.py").write_text(
        "def length(prompts, completions, rows):\n"
        "    return [len(c) / 10 for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def _failing_scorer(tmp_path, ctx, monkeypatch):
    (tmp_path / "malformed_case_scorer.py").write_text(
        "def explode(prompts, completions, rows):\n"
        "    raise ValueError('this reward function is broken')\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def _nan_model(tmp_path, ctx, monkeypatch):
    """A model folder whose weights are NaN: every loss is non-finite."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(ctx["@TINY@"], dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    model.save_pretrained(tmp_path / "nan_model")
    AutoTokenizer.from_pretrained(ctx["@TINY@"]).save_pretrained(tmp_path / "nan_model")


train("stale-engine-weights",
      TRAIN_GRPO.replace("max_steps: 2", "max_steps: 2, lr: 1.0e-2").replace(
          "num_generations: 2", "num_generations: 4")
      + "rewards: [{name: 'malformed_case_length:length'}]\n",
      "error: the engine's log-probs on the probe", "not sampling from the weights being "
      "trained", files=PROMPT_ROWS, setup=_stale_engine)
train("scorer-raises-with-on-error-raise",
      TRAIN_GRPO + "rewards: [{name: 'malformed_case_scorer:explode', on_error: raise}]\n",
      "explode: sample 0: ValueError: this reward function is broken", files=PROMPT_ROWS,
      setup=_failing_scorer)
train("python-tests-row-without-tests",   # named by file and line, not a traceback
      TRAIN_GRPO + "rewards: [{name: python_tests}]\n",
      "error: rewards: @TMP@/prompts.jsonl line ", "python_tests: the row has no tests: "
      "column 'tests' is missing or empty",
      files={"prompts.jsonl": jsonl(*[{"prompt": f"Write f{i}.", "tests": ""}
                                      for i in range(4)])})
train("non-finite-losses",
      TRAIN_DPO.replace("'@TINY@'", "'@TMP@/nan_model'").replace("max_steps: 2",
                                                               "max_steps: 2, max_nan_steps: 1"),
      "error: 1 non-finite losses in a row (trainer.max_nan_steps=1)",
      files={"pairs.jsonl": jsonl(GOOD_PAIR, GOOD_PAIR, GOOD_PAIR, GOOD_PAIR)},
      setup=_nan_model)
train("grpo-too-few-prompts", TRAIN_GRPO.replace("prompts_per_step: 2", "prompts_per_step: 8"),
      "@TMP@/prompts.jsonl: 4 prompts, fewer than one step needs (8)", files=PROMPT_ROWS)
train("grpo-prompts-without-answer", TRAIN_GRPO, "@TMP@/prompts.jsonl: missing column 'answer'",
      files={"prompts.jsonl": jsonl({"prompt": "x"})})
train("drpo-no-reset-column",
      TRAIN_GRPO.replace("algorithm: grpo", "algorithm: drpo").replace(
          "grpo: {prompts_per_step: 2, num_generations: 2}",
          "drpo: {prompts_per_step: 2, samples_per_prompt: 2}"),
      "data.train: @TMP@/prompts.jsonl: missing column 'completion' (drpo.reset_column) "
      "to reset into", files=PROMPT_ROWS)   # found before any model loads
train("drpo-empty-reset",
      TRAIN_GRPO.replace("algorithm: grpo", "algorithm: drpo").replace(
          "grpo: {prompts_per_step: 2, num_generations: 2}",
          "drpo: {prompts_per_step: 2, samples_per_prompt: 2}"),
      "@TMP@/prompts.jsonl line 2: no reference response in column 'completion' "
      "(drpo.reset_column)",
      files={"prompts.jsonl": jsonl({**GOOD_ROW, "completion": "#### 5"},
                                    {**GOOD_ROW, "completion": " "})})
train("model-folder-without-weights", TRAIN_DPO.replace("'@TINY@'", "'@TMP@/m'"),
      "@TMP@/m: no weights (*.safetensors or *.bin) next to its config.json",
      files={"pairs.jsonl": jsonl(GOOD_PAIR, GOOD_PAIR), "m/config.json": "{}"})
train("launch-config-not-utf8", DPO + "launch: {config_file: accelerate.yaml}\n",
      "launch.config_file: @TMP@/accelerate.yaml is not valid UTF-8 text (byte 0xe9 at line 1",
      files={"accelerate.yaml": b"# r\xe9sum\xe9\ndistributed_type: MULTI_GPU\n"})
train("launch-config-not-yaml", DPO + "launch: {config_file: accelerate.yaml}\n",
      "launch.config_file: @TMP@/accelerate.yaml is not valid YAML",
      files={"accelerate.yaml": "distributed_type: [MULTI_GPU\n"})
train("launch-config-is-a-folder", DPO + "launch: {config_file: acc_dir}\n",
      "launch.config_file: @TMP@/acc_dir is a folder, not an Accelerate config file",
      files={"acc_dir/x.yaml": "a: 1\n"})
train("launch-config-is-a-list", DPO + "launch: {config_file: accelerate.yaml}\n",
      "launch.config_file: @TMP@/accelerate.yaml is not an Accelerate config mapping",
      files={"accelerate.yaml": "- a\n- b\n"})
train("spin-data-without-completions",
      TRAIN_DPO.replace("algorithm: dpo", "algorithm: spin").replace(
          "trainer: {batch_size: 2, max_steps: 2, save_every: null}",
          "trainer: {batch_size: 2, save_every: null}\nspin: {iterations: 1}\n"
          "rollout: {backend: hf, max_new_tokens: 4}"),
      "@TMP@/pairs.jsonl: SFT data needs a 'messages' column, 'prompt' and 'completion' "
      "columns, or a 'text' column (found: answer, prompt)",
      files={"pairs.jsonl": jsonl(GOOD_ROW, GOOD_ROW)})
train("reward-model-pairs-missing-chosen",
      TRAIN_DPO.replace("algorithm: dpo", "algorithm: reward_model"),
      "@TMP@/pairs.jsonl: missing columns 'chosen', 'rejected' (found: answer, prompt)",
      files={"pairs.jsonl": jsonl(GOOD_ROW, GOOD_ROW)})
train("model-name-not-found", TRAIN_DPO.replace("'@TINY@'", "'@TMP@/no/model'"),
      "model '@TMP@/no/model' not found", files={"pairs.jsonl": jsonl(GOOD_PAIR, GOOD_PAIR)})


# ====================================================================== the runner
@pytest.fixture(scope="module")
def ctx(tiny_model_dir, tmp_path_factory) -> dict[str, str]:
    """Placeholder values shared by every case: the tiny models."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from alignment.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                         num_labels=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    rm = tmp_path_factory.mktemp("malformed") / "rm"
    LlamaForSequenceClassification(config).save_pretrained(rm)
    tokenizer.save_pretrained(rm)
    return {"@TINY@": str(tiny_model_dir), "@RM@": str(rm), "@ROOT@": str(ROOT)}


def _fill(text, values: dict[str, str]):
    if isinstance(text, bytes):
        return text
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:      # argparse's usage errors
        return exc.code


def test_the_table_is_large_and_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    assert len(CASES) >= 100, len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_gets_a_clean_error(case, ctx, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)          # default data paths in recipes are repository-relative
    values = {**ctx, "@TMP@": str(tmp_path)}
    for name, content in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        content = _fill(content, values)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    if case.setup is not None:
        case.setup(tmp_path, values, monkeypatch)
    code = run_cli([_fill(a, values) for a in case.argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    assert code == 2, f"exit {code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    for piece in case.expect:
        assert _fill(piece, values) in err, f"missing {_fill(piece, values)!r} in:\n{err}"


# ====================================================================== the real entry point
SUBPROCESS_CASES = [
    # (python argv, file name, file bytes, expected in stderr)
    (["-m", "alignment", "check", "{f}"], "recipe.yaml", b"algorithm: dpo\n# caf\xe9\n",
     "not valid UTF-8"),
    (["-m", "alignment", "score", "--scorer", "exact_answer", "--input", "{f}", "--output",
      "{d}/o.jsonl"], "in.jsonl", b"\x00\xff\xfe binary", "line 1: not valid UTF-8 text"),
    (["-m", "alignment", "check", "{f}"], "recipe.yaml",
     b"algorithm: grpo\nrewards: [{name: python_tests, workers: 0}]\n",
     "workers must be an integer >= 1, got 0"),
    # a recipe run as the program (`accelerate launch recipe.yaml`): the start-up hook
    (["{f}"], "recipe.yaml", b"algorithm: dpo\n# caf\xe9\n", "not valid UTF-8"),
]


def test_real_entry_point_prints_messages_not_tracebacks(tmp_path):
    """`python -m alignment` (what the `alignment` script runs) and `python recipe.yaml`:
    exit 2, one message."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    running = []
    for i, (argv, name, content, expected) in enumerate(SUBPROCESS_CASES):
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / name).write_bytes(content)
        args = [a.format(f=folder / name, d=folder) for a in argv]
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        running.append((proc, expected))
    for proc, expected in running:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert "Traceback" not in out + err, err
        assert expected in err and err.startswith("error: "), err
