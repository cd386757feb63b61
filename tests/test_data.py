"""The data layer: reading every file format, validating each kind of row (with errors that
name the file, the row and the column), tokenisation with the length policy, and the
shipped arithmetic datasets.  The ``tokenizer`` fixture comes from ``conftest.py``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from alignment.data import DataError, load_examples, read_rows, tokenize_examples
from reward_models import extract_answer, is_correct, parse_number

ROOT = Path(__file__).resolve().parents[1]
ARITH = ROOT / "data" / "arithmetic"


def msg(role, content):
    return {"role": role, "content": content}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def data_error(path, kind: str) -> str:
    with pytest.raises(DataError) as info:
        load_examples(path, kind)
    return str(info.value)


# ---------------------------------------------------------------- 1. reading files

ROWS = [{"prompt": "What is 1 + 1?", "answer": "2"}, {"prompt": "What is 2 + 3?", "answer": "5"}]


def _write(fmt: str, path: Path, rows) -> Path:
    if fmt == "jsonl":
        return write_jsonl(path.with_suffix(".jsonl"), rows)
    if fmt in ("json", "json_data"):
        out = path.with_suffix(".json")
        out.write_text(json.dumps(rows if fmt == "json" else {"data": rows}), encoding="utf-8")
        return out
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = path.with_suffix(".parquet")
        pq.write_table(pa.Table.from_pylist(rows), out)
        return out
    if fmt == "csv":
        out = path.with_suffix(".csv")
        with out.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return out
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


# format -> where the first and the second row are reported
FORMATS = {"jsonl": ("line 1", "line 2"), "json": ("row 0", "row 1"),
           "json_data": ("row 0", "row 1"), "parquet": ("row 0", "row 1"),
           "csv": ("line 2", "line 3"), "dataset": ("row 0", "row 1")}


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_each_format(tmp_path, fmt):
    path = _write(fmt, tmp_path / "data", ROWS)
    rows = read_rows(path)
    assert [r.values for r in rows] == ROWS
    assert [r.where for r in rows] == [f"{path} {w}" for w in FORMATS[fmt]]
    examples = load_examples(path, "prompt")
    assert [e.prompt for e in examples] == [[msg("user", r["prompt"])] for r in ROWS]
    assert [e.extra["answer"] for e in examples] == ["2", "5"]
    assert all(e.plain for e in examples)
    assert len(load_examples(path, "prompt", limit=1)) == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_error_location_in_each_format(tmp_path, fmt):
    path = _write(fmt, tmp_path / "bad", [ROWS[0], {"prompt": "", "answer": "1"}])
    err = data_error(path, "prompt")
    assert f"{path} {FORMATS[fmt][1]}: column 'prompt' is empty" in err


def test_dataset_dict_folder_names_its_splits(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(ROWS)
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError) as info:
        read_rows(tmp_path / "dd")
    err = str(info.value)
    assert err.startswith(f"{tmp_path / 'dd'}: holds several splits (train, test)")
    assert str(tmp_path / "dd" / "train") in err


@pytest.mark.parametrize("name,text,where,fragment", [
    ("x.txt", "prompt\n", "", "unknown data format '.txt' (use one of .jsonl, .json"),
    ("nope.jsonl", None, "", "no such file or folder"),
    ("folder", "<dir>", "", "not a folder written by datasets' save_to_disk"),
    ("bad.parquet", "not parquet", "", "cannot read as parquet"),
    *[(f"e{i}.{ext}", text, "", "the file has no rows") for i, (ext, text) in enumerate(
        [("jsonl", ""), ("jsonl", "\n  \n\t\n"), ("csv", ""), ("csv", "prompt,answer\n"),
         ("json", "[]"), ("json", '{"data": []}')])],
    ("b.jsonl", '{"prompt": "q"}\n\n{"prompt": ', " line 3", "not valid JSON"),
    ("b.jsonl", '{"prompt": "q"}\n\n[1, 2]', " line 3", "expected a JSON object per line"),
    ("b.jsonl", '\n"text"', " line 2", "expected a JSON object per line, got str"),
    ("b.json", "[{", "", "not valid JSON"),
    ("b.json", '{"x": 1}', "", "expected a list of row objects"),
    ("b.json", '[{"a": 1}, 5]', " row 1", "expected an object, got int"),
])
def test_unreadable(tmp_path, name, text, where, fragment):
    path = tmp_path / name
    if text == "<dir>":
        path.mkdir()
    elif text is not None:
        path.write_text(text)
    with pytest.raises(DataError) as info:
        read_rows(path)
    assert str(info.value).startswith(f"{path}{where}: {fragment}"), str(info.value)


def test_jsonl_blank_lines_ignored_and_counted(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(f"\n{json.dumps(ROWS[0])}\n   \n{json.dumps(ROWS[1])}\n\n")
    rows = read_rows(path)
    assert [r.values for r in rows] == ROWS
    assert [r.where for r in rows] == [f"{path} line 2", f"{path} line 4"]


def test_csv_line_numbers_with_multiline_fields(tmp_path):
    path = tmp_path / "m.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerows([["prompt", "answer"], ["two\nlines", "1"], ["", "2"]])
    assert f"{path} line 4: column 'prompt'" in data_error(path, "prompt")


# ---------------------------------------------------------------- 2. kinds

SYS, USER = msg("system", "Be brief."), msg("user", "What is 2 + 2?")
GOOD, BAD = msg("assistant", "4"), msg("assistant", "5")


TURNS = [SYS, USER, GOOD, msg("user", "And 3 + 3?"), msg("assistant", "6")]
PAIR = {"chosen": [GOOD], "rejected": [BAD]}
PARSED = [  # (kind, row, prompt, completions, plain) -- extra columns always land in `extra`
    ("preference", {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"}, [USER], PAIR,
     True),
    ("preference", {"prompt": [SYS, USER], "chosen": [GOOD], "rejected": [BAD]}, [SYS, USER],
     PAIR, False),
    ("preference", {"chosen": [SYS, USER, GOOD], "rejected": [SYS, USER, BAD]}, [SYS, USER],
     PAIR, False),  # TRL's implicit prompt
    ("prompt", {"prompt": "What is 2 + 2?", "answer": 0}, [USER], {}, True),
    ("prompt", {"prompt": [USER], "answer": "4"}, [USER], {}, False),
    ("sft", {"messages": TURNS}, TURNS[:-1], {"completion": TURNS[-1:]}, False),
    ("sft", {"prompt": "What is 2 + 2?", "completion": "4"}, [USER], {"completion": [GOOD]},
     True),
    ("sft", {"prompt": [USER], "completion": [GOOD]}, [USER], {"completion": [GOOD]}, False),
]


@pytest.mark.parametrize("kind,row,prompt,completions,plain", PARSED)
def test_parse_kinds(tmp_path, kind, row, prompt, completions, plain):
    path = write_jsonl(tmp_path / "one.jsonl", [{**row, "task": "add2"}])
    [ex] = load_examples(path, kind)
    assert (ex.prompt, ex.completions, ex.plain) == (prompt, completions, plain)
    answer = {"answer": row["answer"]} if "answer" in row else {}
    assert ex.extra == {**answer, "task": "add2"} and ex.where == f"{path} line 1"


# ---------------------------------------------------------------- 3. malformed rows

VALID = {"preference": {"prompt": "q", "chosen": "a", "rejected": "b"},
         "prompt": {"prompt": "q", "answer": 1},
         "sft": {"messages": [msg("user", "q"), msg("assistant", "a")]},
         "sft_pc": {"prompt": "q", "completion": "a"}}
Q, A = msg("user", "q"), msg("assistant", "a")
MALFORMED = [  # (kind, bad row, column, fragment)
    ("preference", {"prompt": "q", "chosen": None, "rejected": "b"}, "chosen", "missing or null"),
    ("preference", {"prompt": "q", "rejected": "b"}, "chosen", "missing or null"),
    ("preference", {"chosen": "a", "rejected": "b"}, "prompt", "missing or null"),
    ("preference", {"prompt": "", "chosen": "a", "rejected": "b"}, "prompt", "is empty"),
    ("preference", {"prompt": "q", "chosen": "a", "rejected": " \n\t"}, "rejected", "is empty"),
    ("preference", {"prompt": "q", "chosen": 5, "rejected": "b"}, "chosen", "got int"),
    ("preference", {"prompt": {"text": "q"}, "chosen": "a", "rejected": "b"}, "prompt",
     "got dict"),
    ("preference", {"prompt": "q", "chosen": [], "rejected": "b"}, "chosen",
     "empty conversation"),
    ("preference", {"prompt": [{"content": "q"}], "chosen": "a", "rejected": "b"}, "prompt",
     "message 0 must be an object with 'role' and 'content'"),
    ("preference", {"prompt": "q", "chosen": [{"role": "assistant"}], "rejected": "b"},
     "chosen", "message 0 must be an object with 'role' and 'content'"),
    ("preference", {"prompt": "q", "chosen": ["a"], "rejected": "b"}, "chosen", "message 0"),
    ("preference", {"prompt": [Q, msg("bot", "x")], "chosen": "a", "rejected": "b"}, "prompt",
     "message 1 has role 'bot'"),
    ("preference", {"prompt": [msg("user", 3)], "chosen": "a", "rejected": "b"}, "prompt",
     "message 0 content must be a string, got int"),
    ("preference", {"prompt": [Q], "chosen": [msg("assistant", " ")], "rejected": [A]},
     "chosen", "is empty"),
    ("preference", {"prompt": "q", "chosen": [A, Q], "rejected": "b"}, "chosen",
     "must end with an assistant turn, ends with 'user'"),
    ("preference", {"prompt": "q", "chosen": "a", "rejected": [Q]}, "rejected",
     "must end with an assistant turn"),
    ("preference", {"chosen": [msg("user", "q1"), A], "rejected": [msg("user", "q2"), A]},
     "chosen", "share no leading turns"),
    ("preference", {"chosen": [A], "rejected": [msg("assistant", "b")]}, "rejected",
     "share no leading turns"),
    ("prompt", {"prompt": "q"}, "answer", "missing or empty"),
    ("prompt", {"prompt": "q", "answer": None}, "answer", "missing or empty"),
    ("prompt", {"prompt": "q", "answer": "  "}, "answer", "missing or empty"),
    ("prompt", {"prompt": "q", "answer": [1]}, "answer", "must be a number or a string, got list"),
    ("prompt", {"prompt": "q", "answer": {"v": 1}}, "answer", "got dict"),
    ("prompt", {"prompt": None, "answer": 1}, "prompt", "missing or null"),
    ("prompt", {"prompt": 12, "answer": 1}, "prompt", "got int"),
    ("sft", {"messages": [Q]}, "messages", "ends with an assistant turn"),
    ("sft", {"messages": [A, Q]}, "messages", "ends with an assistant turn"),
    ("sft", {"messages": "q a"}, "messages", "must be a conversation"),
    ("sft", {"messages": []}, "messages", "empty conversation"),
    ("sft", {"messages": None}, "messages", "missing or null"),
    ("sft", {"messages": [Q, msg("robot", "a")]}, "messages", "has role 'robot'"),
    ("sft_pc", {"prompt": "q", "completion": [A, Q]}, "completion",
     "must end with an assistant turn, ends with 'user'"),
    ("sft_pc", {"prompt": "q", "completion": None}, "completion", "missing or null"),
    ("sft_pc", {"prompt": "q", "completion": ""}, "completion", "is empty"),
    ("sft_pc", {"prompt": [], "completion": "a"}, "prompt", "empty conversation"),
    ("preference", {"chosen": [Q, A, Q], "rejected": [Q, msg("assistant", "b")]},
     "chosen", "must end with an assistant turn"),
    ("sft", {"messages": [Q, msg("assistant", "")]}, "messages", "is empty"),
    ("sft_pc", {"prompt": "q", "completion": [Q, msg("assistant", " ")]}, "completion",
     "is empty"),
]


@pytest.mark.parametrize("kind,row,column,fragment", MALFORMED)
def test_malformed_row(tmp_path, kind, row, column, fragment):
    path = write_jsonl(tmp_path / "bad.jsonl", [VALID[kind], VALID[kind], row])
    err = data_error(path, kind.removesuffix("_pc"))
    assert err.startswith(f"{path} line 3: "), err
    assert f"'{column}'" in err and fragment in err, err


@pytest.mark.parametrize("kind,rows,missing,found", [
    ("preference", [{"prompt": "q", "chosen": "a"}], "column 'rejected'", "chosen, prompt"),
    ("preference", [{"prompt": "q", "x": 1}], "columns 'chosen', 'rejected'", "prompt, x"),
    ("prompt", [{"prompt": "q", "task": "t"}], "column 'answer'", "prompt, task"),
    ("prompt", [{"question": "q", "answer": 1}], "column 'prompt'", "answer, question"),
    ("sft", [{"prompt": "q", "response": "a"}], "'messages' column", "prompt, response"),
])
def test_missing_column_in_whole_file(tmp_path, kind, rows, missing, found):
    path = write_jsonl(tmp_path / "cols.jsonl", rows * 3)
    err = data_error(path, kind)
    assert err.startswith(f"{path}: ") and missing in err and f"(found: {found})" in err, err


# ---------------------------------------------------------------- 4. tokenisation

LIMITS = {"max_length": 4096, "max_prompt_length": 2048}


def tok(tokenizer, tmp_path, kind, rows, **kw):
    examples = load_examples(write_jsonl(tmp_path / "t.jsonl", rows), kind)
    return tokenize_examples(tokenizer, examples, **{**LIMITS, **kw})


@pytest.mark.parametrize("row", [{"prompt": "What is 2 + 2?", "completion": "4"},
                                 {"messages": [USER, GOOD]}])
def test_sft_tokens(tokenizer, tmp_path, row):
    [te], report = tok(tokenizer, tmp_path, "sft", [row])
    prompt = tokenizer.decode(te.prompt_ids)
    completion = tokenizer.decode(te.completion_ids["completion"])
    assert prompt.endswith("<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n")
    assert completion.startswith("4<|im_end|>") and not completion[len("4<|im_end|>"):].strip()
    full = tokenizer.apply_chat_template([USER, GOOD], tokenize=False)
    assert tokenizer.decode(te.prompt_ids + te.completion_ids["completion"]) == full
    assert te.where.endswith("t.jsonl line 1") and report.summary() == ""


def test_preference_tokens_and_system_prompt(tokenizer, tmp_path):
    rows = [{"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"},
            {"prompt": [SYS, USER], "chosen": [GOOD], "rejected": [BAD]}]
    out, _ = tok(tokenizer, tmp_path, "preference", rows, system_prompt="You add numbers.")
    first, second = (tokenizer.decode(te.prompt_ids) for te in out)
    assert first.startswith("<|im_start|>system\nYou add numbers.<|im_end|>\n")
    assert "SmolLM" not in first and "Be brief." in second and "You add numbers." not in second
    for te in out:
        for name, text in (("chosen", "4"), ("rejected", "5")):
            assert tokenizer.decode(te.completion_ids[name]).startswith(text + "<|im_end|>")


def test_no_chat_template_plain(tokenizer, tmp_path):
    [te], _ = tok(tokenizer, tmp_path, "sft", [{"prompt": "Q: 2 + 2 =", "completion": " 4"}],
                  chat_template=False)
    assert tokenizer.decode(te.prompt_ids) == "Q: 2 + 2 ="
    assert tokenizer.decode(te.completion_ids["completion"]) == " 4" + tokenizer.eos_token
    assert te.completion_ids["completion"][-1] == tokenizer.eos_token_id


def test_no_chat_template_conversational_raises(tokenizer, tmp_path):
    with pytest.raises(DataError, match="chat_template is false but the data is conversational"):
        tok(tokenizer, tmp_path, "sft", [{"messages": [USER, GOOD]}], chat_template=False)


def test_no_chat_template_error_names_row(tokenizer, tmp_path):
    with pytest.raises(DataError, match=r"t\.jsonl line 1"):
        tok(tokenizer, tmp_path, "sft", [{"messages": [USER, GOOD]}], chat_template=False)


LONG = " ".join(f"word{i}" for i in range(150))
SHORT = {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"}
LONG_ROWS = {"prompt": {"prompt": LONG + " What is 2 + 2?", "chosen": "4", "rejected": "5"},
             "completion": {"prompt": "Count.", "chosen": LONG, "rejected": "No. " + LONG}}


@pytest.mark.parametrize("where", LONG_ROWS)
def test_too_long_skip(tokenizer, tmp_path, where):
    out, report = tok(tokenizer, tmp_path, "preference", [SHORT, LONG_ROWS[where], SHORT],
                      max_length=120, max_prompt_length=100, too_long="skip")
    assert [te.where.rsplit(" ", 1)[1] for te in out] == ["1", "3"]
    assert report.too_long == [f"{tmp_path / 't.jsonl'} line 2"] and report.truncated == 0
    assert "skipped 1 over-long rows" in report.summary()
    assert "t.jsonl line 2" in report.summary()


@pytest.mark.parametrize("where", LONG_ROWS)
def test_too_long_truncate(tokenizer, tmp_path, where):
    [full], _ = tok(tokenizer, tmp_path, "preference", [LONG_ROWS[where]])
    out, report = tok(tokenizer, tmp_path, "preference", [SHORT, LONG_ROWS[where]],
                      max_length=120, max_prompt_length=100, too_long="truncate")
    assert len(out) == 2 and report.truncated == 1 and report.too_long == []
    assert "truncated 1 over-long rows" in report.summary()
    te = out[1]
    assert len(te.prompt_ids) <= 100 and te.prompt_ids == full.prompt_ids[-len(te.prompt_ids):]
    assert tokenizer.decode(te.prompt_ids).endswith("<|im_start|>assistant\n")
    for name in ("chosen", "rejected"):
        ids = te.completion_ids[name]
        assert 0 < len(ids) and len(te.prompt_ids) + len(ids) <= 120
        assert ids == full.completion_ids[name][:len(ids)]


def test_too_long_error(tokenizer, tmp_path):
    with pytest.raises(DataError) as info:
        tok(tokenizer, tmp_path, "preference", [SHORT, LONG_ROWS["prompt"]],
            max_length=120, max_prompt_length=100, too_long="error")
    err = str(info.value)
    assert err.startswith(f"{tmp_path / 't.jsonl'} line 2: ")
    assert "max_prompt_length=100" in err and "max_length=120" in err


def test_identical_pairs_skipped(tokenizer, tmp_path):
    rows = [SHORT, {"prompt": "q", "chosen": "same", "rejected": "same"},
            {"chosen": [Q, A], "rejected": [Q, A]}]
    out, report = tok(tokenizer, tmp_path, "preference", rows)
    assert len(out) == 1 and out[0].where.endswith("line 1")
    assert [w.rsplit(" ", 1)[1] for w in report.identical] == ["2", "3"]
    assert "skipped 2 rows whose chosen and rejected are identical" in report.summary()
    # pairs that differ only after the truncation point become identical: skipped too
    row = {"prompt": "q", "chosen": LONG, "rejected": LONG + " more"}
    out, report = tok(tokenizer, tmp_path, "preference", [row], max_length=120,
                      max_prompt_length=100, too_long="truncate")
    assert out == [] and report.truncated == 1 and len(report.identical) == 1


# ---------------------------------------------------------------- 5. the shipped data

SHIPPED = {"rl": "prompt", "preference": "preference", "preference_chat": "preference",
           "sft": "sft", "sft_plain": "sft", "sft_columns": "sft"}


@pytest.fixture(scope="module")
def shipped():
    return {(fmt, split): load_examples(ARITH / fmt / f"{split}.jsonl", kind)
            for fmt, kind in SHIPPED.items() for split in ("train", "test")}


def test_make_data_check():
    proc = subprocess.run([sys.executable, "data/make_data.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("fmt", SHIPPED)
def test_shipped_files_load_and_splits_are_disjoint(shipped, fmt):
    train, test = shipped[fmt, "train"], shipped[fmt, "test"]
    assert (len(train), len(test)) == (2400, 600)
    assert all(ex.plain == (fmt in ("rl", "preference", "sft_plain", "sft_columns"))
               for ex in train + test)
    assert all(isinstance(ex.extra["answer"], int) and ex.extra["task"] for ex in train + test)
    prompts = {split: {json.dumps(ex.prompt) for ex in shipped[fmt, split]}
               for split in ("train", "test")}
    assert len(prompts["train"]) == 2400 and len(prompts["test"]) == 600
    assert not prompts["train"] & prompts["test"]


# the completions each shipped format carries (so the checks below cannot all be skipped)
SHIPPED_COMPLETIONS = {"rl": set(), "preference": {"chosen", "rejected"},
                       "preference_chat": {"chosen", "rejected"}, "sft": {"completion"},
                       "sft_plain": {"completion"}, "sft_columns": {"completion"}}


@pytest.mark.parametrize("fmt", SHIPPED)
def test_shipped_answers(shipped, fmt):
    for split in ("train", "test"):
        for ex in shipped[fmt, split]:
            answer = ex.extra["answer"]
            texts = {k: v[-1]["content"] for k, v in ex.completions.items()}
            assert set(texts) == SHIPPED_COMPLETIONS[fmt], ex.where
            for name in ("chosen", "completion"):
                if name in texts:
                    assert parse_number(extract_answer(texts[name])) == answer, ex.where
                    assert is_correct(texts[name], answer), ex.where
            if "rejected" in texts:
                assert extract_answer(texts["rejected"]) is not None, ex.where
                assert not is_correct(texts["rejected"], answer), ex.where


def test_worked_columns_examples_and_check():
    """The column format of data/arithmetic/sft_columns, and its checker catching a wrong
    column (the generator re-derives every shipped line with it)."""
    sys.path.insert(0, str(ROOT / "data"))
    try:
        import worked_columns as wc
    finally:
        sys.path.remove(str(ROOT / "data"))
    examples = {
        (809, "+", 852): "809 + 852: 9+2=11, 0+5+1=6, 8+8=16, so 1661.",
        (503, "-", 414): "503 - 414: 13-4=9, 10-1-1=8, 5-4-1=0, so 89.",
        (61, "-", 93): "61 - 93: 93 - 61 first: 3-1=2, 9-6=3, so -32.",
        (7, "*", 48): "7 * 48: 7*8=56, 7*4+5=33, so 336.",
        (48, "*", 7): "48 * 7: 7*8=56, 7*4+5=33, so 336.",
        (9, "+", 36): "9 + 36: 9+6=15, 0+3+1=4, so 45.",
    }
    for (x, op, y), line in examples.items():
        assert wc.column_line(x, op, y) == line
        assert wc.check_line(line) == (x, op, y, wc.OPS[op](x, y))
    assert wc.column_work(("*", "+"), (8, 8, 38)) == "8 * 8: 8*8=64, so 64.\n" \
                                                     "64 + 38: 4+8=12, 6+3+1=10, so 102."
    for wrong in ("809 + 852: 9+2=11, 0+5=5, 8+8=16, so 1661.",     # a carry dropped
                  "809 + 852: 9+2=11, 0+5+1=6, 8+8=16, so 1761.",   # the result off
                  "61 - 93: 93 - 61 first: 3-1=2, 9-6=3, so 32."):  # the sign lost
        with pytest.raises(AssertionError):
            wc.check_line(wrong)
    with pytest.raises(ValueError, match="one-digit factor"):
        wc.column_line(12, "*", 34)


def test_policy_reward_model_pairs_hold_add2_rm_and_verifier_labelled_samples():
    """add2_rm/train_policy.jsonl = add2_rm/train.jsonl + pairs from the policy's samples,
    rejected always wrong by the verifier, chosen always right (data/policy_rm_pairs.py)."""
    base = (ARITH / "add2_rm/train.jsonl").read_text().splitlines()
    rows = (ARITH / "add2_rm/train_policy.jsonl").read_text().splitlines()
    assert sorted(set(rows) & set(base)) == sorted(base)
    policy = [json.loads(r) for r in rows if r not in set(base)]
    assert len(policy) == len(rows) - len(base) > 500
    for row in policy:
        assert row["phrasing"] == "policy" and row["task"] == "add2"
        assert is_correct(row["chosen"], row["answer"]), row
        assert not is_correct(row["rejected"], row["answer"]), row
