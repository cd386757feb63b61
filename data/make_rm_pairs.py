"""Reward-model pairs for 2-digit addition: `data/arithmetic/add2_rm/{train,test,
train_styles}.jsonl`.

Written by `make_data.py` (train/test since dataset version 3, train_styles since 5);
standard library only, deterministic.

A reward model that ranks these pairs has to do the addition: chosen and rejected are the
same text apart from the result. To make it learn that and not the wording:

- **train** draws ~3000 add2 problems from the whole 10..99 range (never a test problem,
  commutative pairs counted as one), worded with the 12 shipped templates plus train-only
  ones, and makes the wrong result five ways: the shipped kinds (`off_by_one`, `carry`,
  `digit_swap`), `tens` (±10) and `final_only` (the equation is right, only the `#### N`
  line is wrong), off by one and carry (the hard kinds, and most test pairs) drawn 3x and 2x
  as often as the others (carry only where a column carries). One pair in five has bare completions, the number alone (`82` vs `83`),
  as a policy prompted to "give only the final number" writes them (GRPO with this
  reward model).
- **train_styles** is train with two pairs in five rewritten so that chosen and rejected
  differ in length and style too: each side drawn on its own from `STYLES` (the bare
  number, an equation, a sentence, a worked explanation, a chatty paragraph, ...), so that
  neither length nor wording tells which side is right, only the result does; one rejected
  side in four of these is prose that gives no answer (a cut-off start of an explanation, as
  a policy writes when it runs out of tokens). A reward model trained on pairs that differ
  only in the result has never had to compare a long answer with a short one; used to pick
  the best of a policy's free-form samples it then prefers whatever is short (measured:
  bench/rm_best_of_n.py).
- **train_answers** pairs the final answers alone, for a reward model that judges a
  completion by its answer (`reward_model.judge: answer`): each train prompt with the
  right number against a wrong one of the shipped kinds or of those a free-form policy
  writes (read off the bundled model's samples): `operand`, one of the two numbers
  restated; `difference`, the two numbers subtracted; `random`, any number below 200.
  Three pairs per prompt, each of a different kind.
- **test** holds the 100 add2 test problems of every other folder three times: `phrasing: seen`
  (exactly the rows of `add2_preference/test.jsonl`) and `phrasing: unseen` (templates
  that occur in no train file), plus `phrasing: bare` (the number alone, same errors).
"""

from make_data import (
    TEMPLATES,
    Template,
    _rng,
    answer_of,
    digit_swaps,
    make_problem,
    problem_key,
    render,
    step_errors,
)

N_RM_TRAIN = 3000
P_BARE = 0.2     # share of train pairs whose completions are the number alone
RM_KINDS = ("off_by_one", "carry", "digit_swap", "tens", "final_only")
# off by one (the units digit) and a dropped carry are the hard kinds and most of the test
# pairs: drawn 3x and 2x as often as the others
KIND_WEIGHTS = (3, 2, 1, 1, 1)

# extra wordings used only in train, and wordings used only in test (phrasing "unseen")
TRAIN_ONLY = [
    Template("number", "{a} plus {b} equals what?", "{a} plus {b} equals {r}.", True),
    Template("number", "Sum {a} and {b}.", "The sum is {r}.", True),
    Template("number", "What do you get when you add {b} to {a}?", "{a} + {b} = {r}", True),
    Template("word", "{name} walked {a} steps, rested, then walked {b} steps. How many steps in all?",
             "{name} walked {a} + {b} = {r} steps.", False),
    Template("word", "A jar holds {a} {obj}. {name} puts in {b} more. How many {obj} are in the jar?",
             "The jar holds {a} + {b} = {r} {obj}.", False),
    Template("number", "Evaluate: {a} + {b}", "{r}", True),
]
TEST_ONLY = [
    Template("number", "How much is {a} added to {b}?", "{a} added to {b} makes {r}.", True),
    Template("number", "Find the total of {a} and {b}.", "Total: {a} + {b} = {r}", True),
    Template("word", "{name} scored {a} points in the first game and {b} points in the second. "
             "What is {name}'s total score?", "{name}'s total score is {a} + {b} = {r} points.", False),
    Template("number", "Work out {a}+{b}.", "{a}+{b}={r}", True),
]

# free-form answers of different lengths and styles (train_styles); {r} is the stated result
STYLES = (
    "{r}",
    "{a} + {b} = {r}",
    "{a} + {b} = {r}\n#### {r}",
    "The sum of {a} and {b} is {r}.",
    "The answer is {r}.",
    "{a} plus {b} is {r}.",
    "To find the total, add the two numbers: {a} + {b} = {r}. So the answer is {r}.",
    "Add the tens first: {at} + {bt} = {tens}. Then add the ones: {ao} + {bo} = {ones}. "
    "Together that makes {tens} + {ones} = {r}.",
    "Sure! To solve this, we need to add {a} and {b}. When we add them together, we get "
    "{r}.\n\nSo, the final answer is {r}.",
    "Let's work it out step by step.\n\n1. Start with {a}.\n2. Add {b} to it.\n3. {a} + {b} = "
    "{r}.\n\nThe result is {r}.",
    "Great question! Adding {a} and {b} gives us {r}. I hope this helps!",
)
# prose that answers nothing (cut off as a policy's sample is at its token limit)
NO_ANSWER = (
    "To add {a} and {b}, we first line up the digits by place value and",
    "This is a simple addition problem. Let's break it down into smaller steps so that",
    "Sure! Adding numbers is one of the basic operations in arithmetic. When we add",
    "We need to find the sum of {a} and {b}. First, let's look at the ones digits:",
)
P_STYLED = 0.4       # share of train_styles pairs whose two sides are drawn from STYLES
P_NO_ANSWER = 0.25   # of those, the share whose rejected side is NO_ANSWER prose
STYLED_KINDS = ("off_by_one", "carry", "digit_swap", "tens")


def _styled(p, rng):
    """(chosen, rejected, kind): each side in a style of its own, the result right and
    wrong; or the rejected side prose without an answer."""
    a, b = p["operands"]
    fill = {"a": a, "b": b, "at": a // 10 * 10, "bt": b // 10 * 10, "ao": a % 10, "bo": b % 10}
    fill.update(tens=fill["at"] + fill["bt"], ones=fill["ao"] + fill["bo"])
    chosen = rng.choice(STYLES).format(r=answer_of(p), **fill)
    if rng.random() < P_NO_ANSWER:
        return chosen, rng.choice(NO_ANSWER).format(**fill), "no_answer"
    while True:
        kind = rng.choices(STYLED_KINDS, weights=KIND_WEIGHTS[:4])[0]
        wrong = _wrong(p, kind, rng)
        if wrong is not None:
            return chosen, rng.choice(STYLES).format(r=wrong, **fill), kind


def _restyle(rows, problems):
    """train_styles: `rows` (train) with P_STYLED of them rewritten by `_styled`."""
    rng = _rng("rm", "styles")
    out = []
    for row, p in zip(rows, problems, strict=True):
        if rng.random() < P_STYLED:
            chosen, rejected, kind = _styled(p, rng)
            row = dict(row, chosen=chosen, rejected=rejected, error=kind, style="mixed")
        else:
            row = dict(row, style="same")
        out.append(row)
    return out


def _text(tpl, fill, result, final):
    return "%s\n#### %d" % (tpl.worked.format(**dict(fill, x=result, r=result)), final)


def _wrong(p, kind, rng):
    """A wrong result of `kind` for problem p (None if the kind does not apply)."""
    a, b = p["operands"]
    v = a + b
    if kind == "tens":
        cands = [w for w in (v - 10, v + 10) if w > 0]
    elif kind in ("off_by_one", "final_only"):
        cands = [v - 1, v + 1] if kind == "off_by_one" else [v - 1, v + 1, v - 10, v + 10]
    elif kind == "digit_swap":
        cands = digit_swaps(v)
    else:  # carry: only when a column carries
        cands = step_errors("+", a, b).get("carry", [])
    cands = [w for w in cands if w != v]
    return rng.choice(cands) if cands else None


def _pair(p, tpl, fill, kind, rng, bare=False):
    v = answer_of(p)
    w = _wrong(p, kind, rng)
    if w is None:
        return None
    if bare:
        return {"prompt": tpl.prompt.format(**fill), "chosen": str(v), "rejected": str(w),
                "answer": v, "task": "add2", "error": kind}
    rejected = _text(tpl, fill, v, w) if kind == "final_only" else _text(tpl, fill, w, w)
    return {"prompt": tpl.prompt.format(**fill), "chosen": _text(tpl, fill, v, v),
            "rejected": rejected, "answer": v, "task": "add2", "error": kind}


ANSWER_KINDS = ("off_by_one", "carry", "digit_swap", "tens", "operand", "difference",
                "random")
ANSWER_WEIGHTS = (3, 2, 1, 1, 2, 1, 2)
ANSWER_PAIRS_PER_PROMPT = 3


def _wrong_answer(p, kind, rng):
    """A wrong final answer of `kind` (None if the kind does not apply)."""
    a, b = p["operands"]
    if kind == "operand":
        return rng.choice([a, b])
    if kind == "difference":
        return abs(a - b) if abs(a - b) not in (0, a + b) else None
    if kind == "random":
        return rng.randrange(200)
    return _wrong(p, kind, rng)


def _answer_pairs(rows, problems):
    """train_answers: per train row, ANSWER_PAIRS_PER_PROMPT pairs of bare answers with
    different wrong kinds."""
    rng = _rng("rm", "answers")
    out = []
    for row, p in zip(rows, problems, strict=True):
        used = set()
        while len(used) < ANSWER_PAIRS_PER_PROMPT:
            kind = rng.choices(ANSWER_KINDS, weights=ANSWER_WEIGHTS)[0]
            wrong = _wrong_answer(p, kind, rng)
            if kind in used or wrong is None or wrong == row["answer"]:
                continue
            used.add(kind)
            out.append({"prompt": row["prompt"], "chosen": str(row["answer"]),
                        "rejected": str(wrong), "answer": row["answer"], "task": "add2",
                        "error": kind})
    return out


def build(examples):
    """{relative path: rows} for add2_rm/; `examples` is make_data.build_examples()."""
    test_probs = [ex for ex in examples["test"] if ex["task"] == "add2"]
    train_probs = [ex["problem"] for ex in examples["train"] if ex["task"] == "add2"]
    banned = {problem_key(ex["problem"]) for ex in test_probs}
    seen = {problem_key(p) for p in train_probs}
    rng = _rng("rm", "problems")
    while len(train_probs) < N_RM_TRAIN:
        p = make_problem("add2", rng)
        k = problem_key(p)
        if k not in banned and k not in seen:
            seen.add(k)
            train_probs.append(p)
    text_rng, kind_rng, bare_rng = _rng("rm", "text"), _rng("rm", "kinds"), _rng("rm", "bare")
    pool = TEMPLATES["add"] + TRAIN_ONLY
    train, kept = [], []
    for p in train_probs:
        _, fill = render(p, text_rng)          # names and objects
        tpl = text_rng.choice(pool)
        bare = bare_rng.random() < P_BARE
        kinds = [(k, w) for k, w in zip(RM_KINDS, KIND_WEIGHTS, strict=True) if not (bare and k == "final_only")]
        for _ in range(10):                     # a kind that applies to this problem
            kind = kind_rng.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
            row = _pair(p, tpl, fill, kind, kind_rng, bare)
            if row is not None:
                train.append(row)
                kept.append(p)
                break
    test = []
    unseen_rng = _rng("rm", "unseen")
    for ex in test_probs:
        test.append({"prompt": ex["prompt"], "chosen": ex["chosen"], "rejected": ex["rejected"],
                     "answer": ex["answer"], "task": "add2", "error": ex["error"],
                     "phrasing": "seen"})
        _, fill = render(ex["problem"], unseen_rng)
        tpl = unseen_rng.choice(TEST_ONLY)
        row = _pair(ex["problem"], tpl, fill, ex["error"], unseen_rng)
        test.append(dict(row, phrasing="unseen"))
        bare = _pair(ex["problem"], tpl, fill, ex["error"], unseen_rng, bare=True)
        test.append(dict(bare, prompt=ex["prompt"], phrasing="bare"))
    return {"add2_rm/train.jsonl": train, "add2_rm/test.jsonl": test,
            "add2_rm/train_styles.jsonl": _restyle(train, kept),
            "add2_rm/train_answers.jsonl": _answer_pairs(train, kept)}


def verify(rows_by_path, examples):
    """Assert: no test problem in train, unseen test wordings absent from train, every
    chosen ends in the answer and every rejected differs from its chosen only in numbers."""
    import re

    train, test = rows_by_path["add2_rm/train.jsonl"], rows_by_path["add2_rm/test.jsonl"]
    test_prompts = {r["prompt"] for r in test}
    assert not test_prompts & {r["prompt"] for r in train}, "add2_rm: a test prompt is in train"
    train_shapes = {re.sub(r"\d+", "N", r["chosen"]) for r in train}
    for r in test:
        if r.get("phrasing") == "unseen":
            assert re.sub(r"\d+", "N", r["chosen"]) not in train_shapes, r
    for r in train:
        assert "phrasing" not in r
    styles = rows_by_path["add2_rm/train_styles.jsonl"]
    assert [r["prompt"] for r in styles] == [r["prompt"] for r in train]
    mixed = [r for r in styles if r["style"] == "mixed"]

    def last_number(text):     # the verifier's final answer in these texts (None: none)
        found = re.findall(r"\d+", text)
        return int(found[-1]) if found else None

    answers = rows_by_path["add2_rm/train_answers.jsonl"]
    assert not test_prompts & {r["prompt"] for r in answers}, "add2_rm: a test prompt in answers"
    for r in answers:
        assert r["chosen"] == str(r["answer"]) != r["rejected"] and r["rejected"].isdigit(), r
    for r in mixed:       # the chosen side states the answer last, the rejected side not
        assert last_number(r["chosen"]) == r["answer"] != last_number(r["rejected"]), r
    for r in train + test:
        assert r["chosen"] != r["rejected"], r
        assert r["chosen"].endswith("#### %d" % r["answer"]) or r["chosen"] == str(r["answer"]), r
        assert re.sub(r"\d+", "N", r["chosen"]) == re.sub(r"\d+", "N", r["rejected"]), r
    return ["add2_rm train %d pairs, test %d (seen/unseen/bare phrasing); no test problem or "
            "unseen wording in train; train_styles: %d pairs in mixed styles, %d without an "
            "answer; train_answers: %d pairs of bare answers" % (
                len(train), len(test), len(mixed),
                sum(r["error"] == "no_answer" for r in mixed), len(answers))]
