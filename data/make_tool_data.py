"""3-digit x 2-digit multiplication with a Python tool (the multi-turn showcase, #36).

Part of `make_data.py` (dataset version 6); standard library only, seeded, byte-stable.

    mul_tool/train.jsonl   {"prompt", "answer", "task": "mul3x2"}          2000 problems
    mul_tool/test.jsonl    the same, 200 held-out problems (no (a, b) pair in train)
    mul_tool/sft.jsonl     tool-use demonstrations of 400 train problems, each as two rows
                           of TRL's conversational prompt/completion format: the user's
                           question -> the assistant's ```python call; then the question,
                           that call and the tool's output -> the assistant's answer. Only
                           the assistant's turns are completions, so SFT never trains on
                           the tool's output.

The bundled 135M model cannot multiply 347 x 58 in its head; with the tool it only has to
copy the operands into code and the output into its answer. The prompt says nothing about
the tool: the recipes' system prompt (`TOOL_SYSTEM_PROMPT` below, repeated in
`recipes/grpo_tool.yaml` and `recipes/sft_tool.yaml`) does.
"""

import random

TOOL_SYSTEM_PROMPT = ("You can run Python: write a ```python block that prints the result "
                      "and you will see its output. Then give the final number.")
N_TRAIN, N_TEST, N_SFT = 2000, 200, 400
TEMPLATES = (
    "What is {a} * {b}?",
    "Compute {a} x {b}.",
    "Calculate the product of {a} and {b}.",
    "A box holds {b} rows of {a} beads. How many beads are in the box?",
    "{a} * {b} = ?",
)
ANSWERS = ("The answer is {c}.", "{a} * {b} = {c}", "{c}")


def _rng(*parts):
    return random.Random("20240601/tool/" + "/".join(parts))


def _problems(n, rng, banned):
    out, seen = [], set(banned)
    while len(out) < n:
        a, b = rng.randint(100, 999), rng.randint(10, 99)
        if (a, b) not in seen:
            seen.add((a, b))
            out.append((a, b))
    return out


def build():
    """{relative path: rows} for mul_tool/."""
    test = _problems(N_TEST, _rng("test"), ())
    train = _problems(N_TRAIN, _rng("train"), test)
    text = _rng("text")

    def row(a, b):
        return {"prompt": text.choice(TEMPLATES).format(a=a, b=b), "answer": a * b,
                "task": "mul3x2"}

    test_rows = [row(a, b) for a, b in test]
    train_rows = [row(a, b) for a, b in train]
    style = _rng("sft")
    sft = []
    for r, (a, b) in zip(train_rows[:N_SFT], train[:N_SFT], strict=True):
        user = {"role": "user", "content": r["prompt"]}
        call = {"role": "assistant", "content": f"```python\nprint({a} * {b})\n```"}
        output = {"role": "tool", "content": str(a * b)}
        answer = style.choice(ANSWERS).format(a=a, b=b, c=a * b)
        extra = {"answer": a * b, "task": "mul3x2"}
        sft.append({"prompt": [user], "completion": [call], **extra})
        sft.append({"prompt": [user, call, output],
                    "completion": [{"role": "assistant", "content": answer}], **extra})
    return {"mul_tool/train.jsonl": train_rows, "mul_tool/test.jsonl": test_rows,
            "mul_tool/sft.jsonl": sft}


def verify(rows_by_path):
    """Assert: answers are the products, train and test share no problem, the demonstrations
    call the tool on their own problem's operands and answer with its output."""
    import re

    def operands(prompt):
        a, b = (int(x) for x in re.findall(r"\d+", prompt))
        return (b, a) if "rows of" in prompt else (a, b)

    pairs = {}
    for split in ("train", "test"):
        rows = rows_by_path[f"mul_tool/{split}.jsonl"]
        for r in rows:
            a, b = operands(r["prompt"])
            assert 100 <= a <= 999 and 10 <= b <= 99 and r["answer"] == a * b, r
        pairs[split] = {operands(r["prompt"]) for r in rows}
        assert len(pairs[split]) == len(rows), f"mul_tool/{split}: a repeated problem"
    assert not pairs["train"] & pairs["test"], "mul_tool: a test problem is in train"
    sft = rows_by_path["mul_tool/sft.jsonl"]
    for call, answer in zip(sft[0::2], sft[1::2], strict=True):
        a, b = operands(call["prompt"][0]["content"])
        assert call["completion"][0]["content"] == f"```python\nprint({a} * {b})\n```"
        assert answer["prompt"][2] == {"role": "tool", "content": str(a * b)}
        assert answer["completion"][0]["content"].rstrip(".").endswith(str(a * b)), answer
    return [f"mul_tool: {len(pairs['train'])} train, {len(pairs['test'])} test problems "
            f"(disjoint), {len(sft)} demonstration rows checked"]
