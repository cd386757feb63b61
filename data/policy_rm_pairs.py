"""Reward-model pairs from a policy's own samples, labelled by the verifier.

    alignment generate --model smollm2-135m --data data/arithmetic/add2/train.jsonl --n 8 \\
        --scorer exact_answer --system-prompt "You are a calculator. Give only the final number." \\
        --temperature 0.7 --max-new-tokens 16 --keep-all --seed 1 --output samples.jsonl
    python data/policy_rm_pairs.py samples.jsonl          # -> add2_rm/train_policy.jsonl

A reward model trained only on pairs that both hold an answer has never seen what a policy
writes when it does not answer ("To add 33 and 67, you simply add them together."); under
optimisation the policy finds such text, and the reward model may rank it above a right
answer (measured: it did). This adds, for every prompt, up to `--per-prompt` pairs whose
rejected side is one of the policy's own samples that the verifier marks wrong (a wrong
number or no number), and whose chosen side is one of its samples marked right, or else the
answer alone (`134`, as the add2_rm "bare" pairs write it). The output is
`add2_rm/train.jsonl` followed by these pairs, shuffled with a fixed seed (`phrasing:
policy`). Standard library only; deterministic for a given samples file.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE = HERE / "arithmetic/add2_rm/train.jsonl"
OUT = HERE / "arithmetic/add2_rm/train_policy.jsonl"


def policy_pairs(samples: list[dict], per_prompt: int, rng: random.Random) -> list[dict]:
    pairs = []
    for row in samples:
        candidates = row["candidates"]
        right = sorted({c["completion"] for c in candidates if c["reward"] > 0})
        wrong = sorted({c["completion"] for c in candidates if c["reward"] <= 0
                        and c["completion"].strip()})
        rng.shuffle(wrong)
        for rejected in wrong[:per_prompt]:
            chosen = rng.choice(right) if right else str(row["answer"])
            pairs.append({"prompt": row["prompt"], "chosen": chosen, "rejected": rejected,
                          "answer": row["answer"], "task": row.get("task", "add2"),
                          "error": "policy_sample", "phrasing": "policy"})
    return pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("samples", help="`alignment generate --keep-all --scorer exact_answer` output")
    p.add_argument("--per-prompt", type=int, default=2)
    p.add_argument("--output", default=str(OUT))
    args = p.parse_args()
    rng = random.Random(20261201)
    samples = [json.loads(line) for line in Path(args.samples).read_text().splitlines()]
    for i, row in enumerate(samples, 1):
        if not isinstance(row, dict) or not {"prompt", "answer", "candidates"} <= set(row):
            raise SystemExit(f"{args.samples}:{i}: a row needs prompt, answer and candidates "
                             "(make the file with `alignment generate --keep-all --scorer "
                             "exact_answer` on a file with an answer column)")
    added = policy_pairs(samples, args.per_prompt, rng)
    rows = [json.loads(line) for line in BASE.read_text().splitlines()] + added
    rng.shuffle(rows)
    Path(args.output).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(added)} policy pairs from {len(samples)} prompts + {len(rows) - len(added)} "
          f"add2_rm pairs -> {args.output}")


if __name__ == "__main__":
    main()
