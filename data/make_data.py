#!/usr/bin/env python3
"""Deterministic generator for the shipped arithmetic datasets (dataset version 3).

Usage (from the repository root)::

    python3 data/make_data.py           # (re)write data/arithmetic/**
    python3 data/make_data.py --check   # regenerate in memory, exit 1 if any shipped file differs

Standard library only.  All randomness comes from ``random.Random`` instances seeded
from ``SEED`` (never the global random state, never the clock), so the output is
byte-identical on every run.  See ``data/README.md`` for the formats.

Layout written under ``data/arithmetic/``::

    VERSION
    rl/{train,test}.jsonl               {"prompt", "answer", "task"}
    sft/{train,test}.jsonl              {"messages", "answer", "task"}
    sft_plain/{train,test}.jsonl        {"prompt", "completion", "answer", "task"}
    preference/{train,test}.jsonl       {"prompt", "chosen", "rejected", "answer", "task", "error"}
    preference_chat/{train,test}.jsonl  same, TRL conversational preference format
    add2/{train,test}.jsonl             the add2 rows of rl/ (the GRPO showcase task)
    add2_sub2/{train,test}.jsonl        the add2 and sub2 rows of rl/ (self-correction)
    add2_sft_plain/, add2_preference/   the same add2 rows in those formats (SPIN, DPO, CoPG)
    add2_rm/{train,test,train_styles,train_answers}.jsonl  reward-model pairs for add2
                                        (make_rm_pairs.py)
    sft_columns/{train,test}.jsonl      sft_plain's rows worked one digit column at a time
                                        (worked_columns.py)
    mul_tool/{train,test,sft}.jsonl     3-digit x 2-digit products for the Python-tool
                                        showcase, and tool-use demonstrations (make_tool_data.py)

All five formats of one split hold the same problems with the same prompts, in the same order.
"""

import argparse
import json
import os
import random
import re
import sys
from collections import Counter, namedtuple

DATASET_VERSION = 7
SEED = 20240601
N_TRAIN = 400  # problems per task in the train split
N_TEST = 100  # problems per task in the test split
SUB2_NEG_FRACTION = 0.2  # exact share of sub2 problems (per split) with a negative result
P_WORD = {"twostep": 0.75}  # chance of a word-problem template; 0.5 for tasks not listed

TASKS = ("add2", "sub2", "add3", "sub3", "mul1x2", "twostep")
TWOSTEP_FORMS = ("add_sub", "sub_add", "mul_add")
FORMATS = ("rl", "sft", "sft_plain", "preference", "preference_chat")
SPLITS = ("train", "test")
ERROR_KINDS = ("off_by_one", "carry", "digit_swap", "wrong_op")

DATA_DIR = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(DATA_DIR, "arithmetic")

# Operators of each "form" (the shape of the computation); a twostep form is
# (a op0 b) op1 c, a single-step form is a op0 b.
FORM_OPS = {
    "add": ("+",),
    "sub": ("-",),
    "mul": ("*",),
    "add_sub": ("+", "-"),
    "sub_add": ("-", "+"),
    "mul_add": ("*", "+"),
}
_APPLY = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}

NAMES = (
    "Maya", "Liam", "Sofia", "Noah", "Aisha", "Mateo", "Emma", "Kenji", "Priya", "Omar",
    "Chloe", "Lucas", "Zara", "Ethan", "Mei", "Diego", "Hana", "Samuel", "Nora", "Ravi",
)
OBJECTS = (
    "stickers", "marbles", "apples", "books", "coins", "pencils", "cards", "shells",
    "stamps", "beads", "cookies", "balloons", "crayons", "buttons",
)

# kind: "number" or "word"; prompt/worked are str.format templates over
# a, b, c (operands), x (first-step result), r (final result), name, name2, obj.
# neg_ok: the template reads sensibly when the result is negative.
Template = namedtuple("Template", "kind prompt worked neg_ok")


def _num(prompts, worked):
    return [Template("number", p, worked, True) for p in prompts]


def _word(items):
    return [Template("word", p, w, neg) for p, w, neg in items]


TEMPLATES = {
    "add": _num(
        [
            "What is {a} + {b}?",
            "Compute {a} + {b}.",
            "Calculate the sum of {a} and {b}.",
            "{a} + {b} = ?",
            "Add {a} and {b}.",
            "What is {a} plus {b}?",
        ],
        "{a} + {b} = {r}",
    )
    + _word(
        [
            ("{name} has {a} {obj} and gets {b} more. How many {obj} does {name} have now?",
             "{name} has {a} + {b} = {r} {obj}.", False),
            ("There are {a} {obj} in one box and {b} {obj} in another box. How many {obj} are there altogether?",
             "There are {a} + {b} = {r} {obj}.", False),
            ("{name} collected {a} {obj} on Monday and {b} {obj} on Tuesday. How many {obj} did {name} collect in total?",
             "{name} collected {a} + {b} = {r} {obj}.", False),
            ("A store had {a} {obj} and received a delivery of {b} more. How many {obj} does the store have now?",
             "The store has {a} + {b} = {r} {obj}.", False),
            ("{name} read {a} pages yesterday and {b} pages today. How many pages did {name} read in the two days?",
             "{name} read {a} + {b} = {r} pages.", False),
            ("{name} has {a} {obj} and {name2} has {b} {obj}. How many {obj} do they have together?",
             "They have {a} + {b} = {r} {obj}.", False),
        ]
    ),
    "sub": _num(
        [
            "What is {a} - {b}?",
            "Compute {a} - {b}.",
            "Subtract {b} from {a}.",
            "{a} - {b} = ?",
            "What is {a} minus {b}?",
            "Calculate {a} minus {b}.",
        ],
        "{a} - {b} = {r}",
    )
    + _word(
        [
            ("{name} had {a} {obj} and gave {b} of them to {name2}. How many {obj} does {name} have left?",
             "{name} has {a} - {b} = {r} {obj} left.", False),
            ("A store had {a} {obj} and sold {b} of them. How many {obj} are left?",
             "There are {a} - {b} = {r} {obj} left.", False),
            ("{name} has {a} {obj} and {name2} has {b} {obj}. How many more {obj} does {name} have than {name2}?",
             "{name} has {a} - {b} = {r} more {obj}.", False),
            ("The temperature was {a} degrees in the afternoon and dropped by {b} degrees overnight. What was the temperature in the morning?",
             "The temperature was {a} - {b} = {r} degrees.", True),
            ("{name} had {a} dollars in a bank account and spent {b} dollars. What is the balance of the account now?",
             "The balance is {a} - {b} = {r} dollars.", True),
            ("{name} had {a} points in a game and lost {b} points. How many points does {name} have now?",
             "{name} has {a} - {b} = {r} points.", True),
        ]
    ),
    "mul": _num(
        [
            "What is {a} * {b}?",
            "Compute {a} * {b}.",
            "Calculate the product of {a} and {b}.",
            "{a} * {b} = ?",
            "What is {a} times {b}?",
            "Multiply {a} by {b}.",
        ],
        "{a} * {b} = {r}",
    )
    + _word(
        [
            ("There are {a} boxes with {b} {obj} in each box. How many {obj} are there in total?",
             "There are {a} * {b} = {r} {obj}.", False),
            ("{name} buys {a} packs of {obj}. Each pack has {b} {obj}. How many {obj} does {name} buy?",
             "{name} buys {a} * {b} = {r} {obj}.", False),
            ("A hall has {a} rows of chairs with {b} chairs in each row. How many chairs are in the hall?",
             "There are {a} * {b} = {r} chairs.", False),
            ("{name} saves {b} dollars every week. How many dollars does {name} save in {a} weeks?",
             "{name} saves {a} * {b} = {r} dollars.", False),
            ("A bus ticket costs {b} dollars. How many dollars do {a} tickets cost?",
             "{a} tickets cost {a} * {b} = {r} dollars.", False),
        ]
    ),
    "add_sub": _num(
        [
            "What is {a} + {b} - {c}?",
            "Compute ({a} + {b}) - {c}.",
            "Calculate {a} plus {b} minus {c}.",
            "{a} + {b} - {c} = ?",
        ],
        "{a} + {b} = {x}, {x} - {c} = {r}",
    )
    + _word(
        [
            ("{name} has {a} {obj}, buys {b} more, and then gives {c} to {name2}. How many {obj} does {name} have now?",
             "{name} has {a} + {b} = {x} {obj}, then {x} - {c} = {r} {obj}.", False),
            ("A bus has {a} passengers. At the next stop, {b} people get on and {c} people get off. How many passengers are on the bus now?",
             "There are {a} + {b} = {x} passengers, then {x} - {c} = {r} passengers.", False),
            ("{name} picked {a} apples in the morning and {b} apples in the afternoon, then used {c} apples to bake a pie. How many apples does {name} have left?",
             "{name} picked {a} + {b} = {x} apples, then has {x} - {c} = {r} apples left.", False),
            ("A store had {a} {obj}, received {b} more, and then sold {c}. How many {obj} does the store have now?",
             "The store had {a} + {b} = {x} {obj}, then {x} - {c} = {r} {obj}.", False),
        ]
    ),
    "sub_add": _num(
        [
            "What is {a} - {b} + {c}?",
            "Compute ({a} - {b}) + {c}.",
            "Calculate {a} minus {b} plus {c}.",
            "{a} - {b} + {c} = ?",
        ],
        "{a} - {b} = {x}, {x} + {c} = {r}",
    )
    + _word(
        [
            ("{name} had {a} {obj} and gave {b} to {name2}. Then {name} found {c} more. How many {obj} does {name} have now?",
             "{name} had {a} - {b} = {x} {obj}, then {x} + {c} = {r} {obj}.", False),
            ("A parking lot had {a} cars. Then {b} cars left and {c} cars arrived. How many cars are in the parking lot now?",
             "There were {a} - {b} = {x} cars, then {x} + {c} = {r} cars.", False),
            ("{name} had {a} dollars, spent {b} dollars on lunch, and then earned {c} dollars. How many dollars does {name} have now?",
             "{name} had {a} - {b} = {x} dollars, then {x} + {c} = {r} dollars.", False),
            ("A tree had {a} birds. Then {b} birds flew away and {c} more birds landed. How many birds are in the tree now?",
             "There were {a} - {b} = {x} birds, then {x} + {c} = {r} birds.", False),
        ]
    ),
    "mul_add": _num(
        [
            "What is {a} * {b} + {c}?",
            "Compute {a} * {b} + {c}.",
            "Calculate {a} times {b} plus {c}.",
            "{a} * {b} + {c} = ?",
        ],
        "{a} * {b} = {x}, {x} + {c} = {r}",
    )
    + _word(
        [
            ("{name} buys {a} packs of {obj} with {b} {obj} in each pack and already had {c} {obj}. How many {obj} does {name} have now?",
             "{name} bought {a} * {b} = {x} {obj}, then has {x} + {c} = {r} {obj}.", False),
            ("There are {a} shelves with {b} books on each shelf and {c} more books on a table. How many books are there in total?",
             "The shelves hold {a} * {b} = {x} books, then {x} + {c} = {r} books.", False),
            ("A class has {a} tables with {b} students at each table, plus {c} students standing. How many students are in the class?",
             "{a} * {b} = {x} students sit, then {x} + {c} = {r} students.", False),
            ("{name} earns {b} dollars a day for {a} days and also gets a bonus of {c} dollars. How many dollars does {name} earn in total?",
             "{name} earns {a} * {b} = {x} dollars, then {x} + {c} = {r} dollars.", False),
        ]
    ),
}


# --------------------------------------------------------------------------- problems


def _rng(*parts):
    """A fresh, independent random.Random for one purpose (string seeds are stable)."""
    return random.Random("/".join([str(SEED)] + [str(p) for p in parts]))


def make_problem(task, rng, variant=None):
    """Sample one problem of ``task``: {"task", "form", "operands"} (no dedup here).

    ``variant`` pins a sub-kind: for sub2 "neg"/"pos" (negative result or not;
    default: negative with probability SUB2_NEG_FRACTION), for twostep one of
    TWOSTEP_FORMS (default: uniform).
    """
    ri = rng.randint
    if task == "add2":
        return {"task": task, "form": "add", "operands": (ri(10, 99), ri(10, 99))}
    if task == "add3":
        return {"task": task, "form": "add", "operands": (ri(100, 999), ri(100, 999))}
    if task == "sub2":
        if variant is None:
            variant = "neg" if rng.random() < SUB2_NEG_FRACTION else "pos"
        if variant == "neg":
            a = ri(10, 98)
            b = ri(a + 1, 99)
        else:
            a = ri(10, 99)
            b = ri(10, a)
        return {"task": task, "form": "sub", "operands": (a, b)}
    if task == "sub3":
        a = ri(100, 999)
        return {"task": task, "form": "sub", "operands": (a, ri(100, a))}
    if task == "mul1x2":
        return {"task": task, "form": "mul", "operands": (ri(2, 9), ri(10, 99))}
    if task == "twostep":
        form = variant if variant is not None else rng.choice(TWOSTEP_FORMS)
        if form == "add_sub":
            a, b = ri(10, 60), ri(5, 40)
            c = ri(2, min(a + b - 1, 50))
        elif form == "sub_add":
            a = ri(20, 80)
            b = ri(2, min(a - 1, 60))
            c = ri(2, 40)
        elif form == "mul_add":
            a, b, c = ri(2, 9), ri(2, 12), ri(2, 40)
        else:
            raise ValueError("unknown twostep form %r" % (form,))
        return {"task": task, "form": form, "operands": (a, b, c)}
    raise ValueError("unknown task %r" % (task,))


def problem_key(p):
    """Identity of the underlying problem; commutative operand pairs count as one problem."""
    ops = p["operands"]
    first = FORM_OPS[p["form"]][0]
    head = tuple(sorted(ops[:2])) if first in "+*" else tuple(ops[:2])
    return (p["task"], p["form"]) + head + tuple(ops[2:])


def compute_steps(form, operands, override=None):
    """Values of each step: [a op0 b] or [a op0 b, (a op0 b) op1 c].

    ``override`` = (step index, value) replaces that step's value (an error) and
    the later steps are computed from it, i.e. the error propagates.
    """
    ops = FORM_OPS[form]
    vals = []
    cur = operands[0]
    for i, op in enumerate(ops):
        cur = _APPLY[op](cur, operands[i + 1])
        if override is not None and override[0] == i:
            cur = override[1]
        vals.append(cur)
    return vals


def answer_of(p):
    return compute_steps(p["form"], p["operands"])[-1]


def sample_task_problems(task):
    """N_TRAIN + N_TEST distinct problems of one task, split into (train, test)."""
    rng = _rng("problems", task)
    n = N_TRAIN + N_TEST
    if task == "sub2":
        n_neg_train = round(N_TRAIN * SUB2_NEG_FRACTION)
        n_neg_test = round(N_TEST * SUB2_NEG_FRACTION)
        variants = (["neg"] * n_neg_train + ["pos"] * (N_TRAIN - n_neg_train)
                    + ["neg"] * n_neg_test + ["pos"] * (N_TEST - n_neg_test))
    else:
        variants = [None] * n
    seen = set()
    out = []
    for v in variants:
        for _ in range(10000):
            p = make_problem(task, rng, v)
            k = problem_key(p)
            if k not in seen:
                seen.add(k)
                out.append(p)
                break
        else:  # pragma: no cover - ranges are far larger than needed
            raise RuntimeError("could not sample enough distinct %s problems" % task)
    train, test = out[:N_TRAIN], out[N_TRAIN:]
    # sub2: variants were laid out in blocks; mix them within each split
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


# --------------------------------------------------------------------------- text


def render(p, rng):
    """Choose template and fillers for problem ``p``; returns (template, fill dict)."""
    task, form = p["task"], p["form"]
    answer = answer_of(p)
    pool = TEMPLATES[form]
    use_word = rng.random() < P_WORD.get(task, 0.5)
    cands = [t for t in pool if (t.kind == "word") == use_word and (answer >= 0 or t.neg_ok)]
    tpl = rng.choice(cands)
    name = rng.choice(NAMES)
    name2 = rng.choice([n for n in NAMES if n != name])
    fill = {"name": name, "name2": name2, "obj": rng.choice(OBJECTS)}
    for letter, v in zip("abc", p["operands"]):
        fill[letter] = v
    return tpl, fill


def prompt_text(tpl, fill):
    return tpl.prompt.format(**fill)


def worked_text(tpl, fill, steps):
    """Short worked solution: one computation line, then '#### N' with N = last step."""
    vals = dict(fill, x=steps[0], r=steps[-1])
    return "%s\n#### %d" % (tpl.worked.format(**vals), steps[-1])


# --------------------------------------------------------------------------- errors


def _digits(n):
    return [int(ch) for ch in reversed(str(n))]


def add_drop_carry(x, y):
    """x + y written column by column, forgetting every carry (37+45 -> 72, 58+67 -> 115)."""
    dx, dy = _digits(x), _digits(y)
    n = max(len(dx), len(dy))
    dx += [0] * (n - len(dx))
    dy += [0] * (n - len(dy))
    out = 0
    for i in range(n):
        s = dx[i] + dy[i]
        out += (s if i == n - 1 else s % 10) * 10 ** i
    return out


def sub_drop_borrow(x, y):
    """x - y (x >= y >= 0) column by column, borrowing but never paying the borrow back (52-27 -> 35)."""
    dx, dy = _digits(x), _digits(y)
    dy += [0] * (len(dx) - len(dy))
    return sum(((dx[i] - dy[i]) % 10) * 10 ** i for i in range(len(dx)))


def digit_swaps(v):
    """All values from swapping two adjacent, different digits of v (no leading zero, sign kept).

    Only adjacent swaps (transpositions, 1478 -> 4178 / 1748 / 1487): those are the
    plausible slips; swapping distant digits gives implausible results (266 -> 662).
    """
    s = str(abs(v))
    sign = -1 if v < 0 else 1
    out = []
    for i in range(len(s) - 1):
        if s[i] == s[i + 1] or (i == 0 and s[i + 1] == "0"):
            continue
        t = list(s)
        t[i], t[i + 1] = t[i + 1], t[i]
        w = sign * int("".join(t))
        if w != v and w not in out:
            out.append(w)
    return out


def step_errors(op, x, y):
    """{kind: [wrong values]} for the single step x op y (only values != the correct one)."""
    v = _APPLY[op](x, y)
    errs = {"off_by_one": [v - 1, v + 1]}
    if op == "+" and x >= 0 and y >= 0:
        errs["carry"] = [add_drop_carry(x, y)]
    elif op == "-" and x >= 0 and y >= 0:
        errs["carry"] = [sub_drop_borrow(x, y) if x >= y else -sub_drop_borrow(y, x)]
    elif op == "*":
        # a*b + b, a*b - b, a*(b+1), a*(b-1)
        errs["wrong_op"] = [v + y, v - y, v + x, v - x]
    errs["digit_swap"] = digit_swaps(v)
    return {k: [w for w in ws if w != v] for k, ws in errs.items()}


def make_error(p, rng):
    """Pick a plausible wrong solution: (kind, wrong step values).

    Candidates: every applicable kind at every step, later steps recomputed from
    the wrong value.  A candidate is kept only if its final result differs from the
    correct answer and, when the correct answer is >= 0, no step goes negative.
    The kind is chosen uniformly among the applicable kinds, then a candidate of
    that kind uniformly.
    """
    form, ops = p["form"], p["operands"]
    correct = compute_steps(form, ops)
    answer = correct[-1]
    by_kind = {}
    for i, op in enumerate(FORM_OPS[form]):
        left = ops[0] if i == 0 else correct[i - 1]
        for kind, wrongs in step_errors(op, left, ops[i + 1]).items():
            for w in wrongs:
                steps = compute_steps(form, ops, override=(i, w))
                if steps[-1] == answer:
                    continue
                if answer >= 0 and min(steps) < 0:
                    continue
                lst = by_kind.setdefault(kind, [])
                if steps not in lst:
                    lst.append(steps)
    kinds = [k for k in ERROR_KINDS if k in by_kind]
    kind = rng.choice(kinds)
    return kind, rng.choice(by_kind[kind])


# --------------------------------------------------------------------------- datasets


def build_examples():
    """{split: [example]}; an example holds everything the five formats need."""
    per_split = {s: [] for s in SPLITS}
    for task in TASKS:
        train, test = sample_task_problems(task)
        text_rng = _rng("text", task)
        err_rng = _rng("errors", task)
        for split, probs in (("train", train), ("test", test)):
            for p in probs:
                tpl, fill = render(p, text_rng)
                steps = compute_steps(p["form"], p["operands"])
                kind, wrong_steps = make_error(p, err_rng)
                per_split[split].append({
                    "problem": p,
                    "template": tpl,
                    "prompt": prompt_text(tpl, fill),
                    "answer": steps[-1],
                    "task": task,
                    "chosen": worked_text(tpl, fill, steps),
                    "rejected": worked_text(tpl, fill, wrong_steps),
                    "error": kind,
                })
    order_rng = _rng("order")
    for split in SPLITS:
        order_rng.shuffle(per_split[split])  # interleave tasks
    return per_split


def format_row(fmt, ex):
    if fmt == "rl":
        return {"prompt": ex["prompt"], "answer": ex["answer"], "task": ex["task"]}
    if fmt == "sft":
        return {
            "messages": [
                {"role": "user", "content": ex["prompt"]},
                {"role": "assistant", "content": ex["chosen"]},
            ],
            "answer": ex["answer"],
            "task": ex["task"],
        }
    if fmt == "sft_plain":
        return {"prompt": ex["prompt"], "completion": ex["chosen"], "answer": ex["answer"], "task": ex["task"]}
    if fmt == "preference":
        return {"prompt": ex["prompt"], "chosen": ex["chosen"], "rejected": ex["rejected"],
                "answer": ex["answer"], "task": ex["task"], "error": ex["error"]}
    if fmt == "preference_chat":
        return {
            "prompt": [{"role": "user", "content": ex["prompt"]}],
            "chosen": [{"role": "assistant", "content": ex["chosen"]}],
            "rejected": [{"role": "assistant", "content": ex["rejected"]}],
            "answer": ex["answer"],
            "task": ex["task"],
            "error": ex["error"],
        }
    raise ValueError("unknown format %r" % (fmt,))


def to_jsonl(rows):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def build_files(examples=None):
    """{path relative to OUT_DIR (posix): file text} for every shipped file."""
    if examples is None:
        examples = build_examples()
    files = {"VERSION": "%d\n" % DATASET_VERSION}
    for fmt in FORMATS:
        for split in SPLITS:
            files["%s/%s.jsonl" % (fmt, split)] = to_jsonl(format_row(fmt, ex) for ex in examples[split])
    # the GRPO showcase's task alone: the add2 rows of rl/, same prompts, same order; and
    # the same rows as SFT demonstrations (SPIN) and preference pairs (offline DPO / CoPG)
    for split in SPLITS:
        files["add2/%s.jsonl" % split] = to_jsonl(format_row("rl", ex) for ex in examples[split]
                                                  if ex["task"] == "add2")
        for fmt in ("sft_plain", "preference"):
            files["add2_%s/%s.jsonl" % (fmt, split)] = to_jsonl(
                format_row(fmt, ex) for ex in examples[split] if ex["task"] == "add2")
        # the self-correction showcase's two tasks (version 6)
        files["add2_sub2/%s.jsonl" % split] = to_jsonl(
            format_row("rl", ex) for ex in examples[split] if ex["task"] in ("add2", "sub2"))
    for rel, rows in make_rm_pairs.build(examples).items():
        files[rel] = to_jsonl(rows)
    # the six-task mix again, each step worked one digit column at a time
    for split in SPLITS:
        files["sft_columns/%s.jsonl" % split] = to_jsonl(columns_row(ex) for ex in examples[split])
    for rel, rows in make_tool_data.build().items():   # the multi-turn tool showcase
        files[rel] = to_jsonl(rows)
    return files


def columns_row(ex):
    p = ex["problem"]
    work = worked_columns.column_work(FORM_OPS[p["form"]], p["operands"])
    return {"prompt": ex["prompt"], "completion": work + "\n" + ex["chosen"],
            "answer": ex["answer"], "task": ex["task"]}


# --------------------------------------------------------------------------- verification

_EQ = re.compile(r"(-?\d+) ([+\-*]) (\d+) = (-?\d+)")
_FINAL = re.compile(r"\n#### (-?\d+)$")


def _equations(text):
    return [(int(l), op, int(r), int(v)) for l, op, r, v in _EQ.findall(text)]


def _final(text):
    m = _FINAL.search(text)
    return int(m.group(1)) if m else None


def verify(examples, files):
    """Assert the dataset invariants; returns a list of summary lines."""
    n_tasks = len(TASKS)
    assert len(examples["train"]) == N_TRAIN * n_tasks, len(examples["train"])
    assert len(examples["test"]) == N_TEST * n_tasks, len(examples["test"])
    keys = {s: set() for s in SPLITS}
    prompts = {s: set() for s in SPLITS}
    for split in SPLITS:
        counts = Counter(ex["task"] for ex in examples[split])
        want = N_TRAIN if split == "train" else N_TEST
        assert all(counts[t] == want for t in TASKS), (split, counts)
        for ex in examples[split]:
            p = ex["problem"]
            k = problem_key(p)
            assert k not in keys[split], ("duplicate problem", k)
            keys[split].add(k)
            prompts[split].add(ex["prompt"])
            # answer from the operands, independently of compute_steps
            ops = p["operands"]
            f = p["form"]
            expect = {
                "add": lambda: ops[0] + ops[1], "sub": lambda: ops[0] - ops[1],
                "mul": lambda: ops[0] * ops[1], "add_sub": lambda: ops[0] + ops[1] - ops[2],
                "sub_add": lambda: ops[0] - ops[1] + ops[2], "mul_add": lambda: ops[0] * ops[1] + ops[2],
            }[f]()
            assert ex["answer"] == expect and isinstance(ex["answer"], int), ex
            # chosen: every equation is true, uses exactly the prompt's numbers, chains, ends in #### answer
            eqs = _equations(ex["chosen"])
            assert len(eqs) == len(FORM_OPS[f]), ex["chosen"]
            for l, op, r, v in eqs:
                assert _APPLY[op](l, r) == v, ex["chosen"]
            if len(eqs) == 2:
                assert eqs[1][0] == eqs[0][3], ex["chosen"]
            used = sorted([eqs[0][0], eqs[0][2]] + [e[2] for e in eqs[1:]])
            assert used == sorted(int(d) for d in re.findall(r"\d+", ex["prompt"])), ex
            assert eqs[-1][3] == ex["answer"] and _final(ex["chosen"]) == ex["answer"], ex["chosen"]
            # rejected: same text shape, wrong result used consistently, != answer
            rej = ex["rejected"]
            assert re.sub(r"-?\d+", "N", rej) == re.sub(r"-?\d+", "N", ex["chosen"]), (ex["chosen"], rej)
            req = _equations(rej)
            assert _final(rej) == req[-1][3] != ex["answer"], rej
            if len(req) == 2:
                assert req[1][0] == req[0][3], rej
            assert ex["error"] in ERROR_KINDS, ex["error"]
            if ex["error"] == "wrong_op":
                assert "*" in [e[1] for e in eqs]
            # prompt carries no answer-format instruction
            assert "####" not in ex["prompt"] and "answer" not in ex["prompt"].lower(), ex["prompt"]
    assert not (keys["train"] & keys["test"]), "train/test share a problem"
    assert not (prompts["train"] & prompts["test"]), "train/test share a prompt"
    assert len(prompts["train"]) == len(examples["train"]) and len(prompts["test"]) == len(examples["test"])
    # the serialized formats agree with the examples
    for split in SPLITS:
        rows = {fmt: [json.loads(line) for line in files["%s/%s.jsonl" % (fmt, split)].splitlines()] for fmt in FORMATS}
        for i, ex in enumerate(examples[split]):
            assert rows["rl"][i]["prompt"] == rows["sft_plain"][i]["prompt"] == rows["preference"][i]["prompt"] \
                == rows["sft"][i]["messages"][0]["content"] == rows["preference_chat"][i]["prompt"][0]["content"]
            assert rows["sft_plain"][i]["completion"] == rows["preference"][i]["chosen"] \
                == rows["sft"][i]["messages"][1]["content"] == rows["preference_chat"][i]["chosen"][0]["content"]
            assert rows["preference"][i]["rejected"] == rows["preference_chat"][i]["rejected"][0]["content"]
            assert all(rows[fmt][i]["answer"] == ex["answer"] and rows[fmt][i]["task"] == ex["task"] for fmt in FORMATS)
    lines = []
    for split in SPLITS:
        exs = examples[split]
        tasks = Counter(ex["task"] for ex in exs)
        errs = Counter(ex["error"] for ex in exs)
        word = sum(ex["template"].kind == "word" for ex in exs)
        neg = sum(ex["answer"] < 0 for ex in exs)
        lines.append("%-5s %4d rows  tasks=%s" % (split, len(exs), dict(sorted(tasks.items()))))
        lines.append("      word problems=%d  negative answers=%d  errors=%s" % (word, neg, dict(sorted(errs.items()))))
    lines.append("train/test disjoint: 0 shared problems, 0 shared prompts; all answers, chosen and rejected checked")
    rm_rows = {rel: [json.loads(line) for line in files[rel].splitlines()]
               for rel in files if rel.startswith("add2_rm/")}
    lines += make_rm_pairs.verify(rm_rows, examples)
    for split in SPLITS:
        rows = [json.loads(line) for line in files["sft_columns/%s.jsonl" % split].splitlines()]
        for row, ex in zip(rows, examples[split], strict=True):
            steps = row["completion"].split("\n")[:len(FORM_OPS[ex["problem"]["form"]])]
            checked = [worked_columns.check_line(line) for line in steps]
            assert [c[3] for c in checked] == _equations_values(ex["chosen"]), row
            assert row["completion"].endswith("\n" + ex["chosen"]) and row["prompt"] == ex["prompt"], row
    lines.append("sft_columns: every column of every worked step re-derived and checked")
    lines += make_tool_data.verify({rel: [json.loads(line) for line in files[rel].splitlines()]
                                    for rel in files if rel.startswith("mul_tool/")})
    return lines


def _equations_values(text):
    return [e[3] for e in _equations(text)]


# --------------------------------------------------------------------------- main

import make_rm_pairs  # noqa: E402 - it imports the helpers above from this module
import make_tool_data  # noqa: E402
import worked_columns  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="regenerate in memory and exit 1 if any shipped file differs")
    args = ap.parse_args(argv)
    examples = build_examples()
    files = build_files(examples)
    summary = verify(examples, files)
    if args.check:
        bad = []
        for rel, text in sorted(files.items()):
            path = os.path.join(OUT_DIR, *rel.split("/"))
            try:
                with open(path, "rb") as fh:
                    same = fh.read() == text.encode("utf-8")
            except OSError:
                same = False
            if not same:
                bad.append(rel)
        if bad:
            print("data/arithmetic is out of date (run python3 data/make_data.py): " + ", ".join(bad))
            return 1
        print("data/arithmetic is up to date (%d files, dataset version %d)" % (len(files), DATASET_VERSION))
        return 0
    for rel, text in sorted(files.items()):
        path = os.path.join(OUT_DIR, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(text.encode("utf-8"))
    print("wrote %d files under %s (dataset version %d, seed %d)" % (len(files), OUT_DIR, DATASET_VERSION, SEED))
    for line in summary:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
