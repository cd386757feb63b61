"""Does a reward model pick the right answer among a policy's free-form samples?

    python bench/rm_best_of_n.py sample --set dev --policy smollm2-135m        # candidates
    python bench/rm_best_of_n.py judge --set dev --policy smollm2-135m \\
        --rm runs/reward_model                                                  # every score
    python bench/rm_best_of_n.py judge --set final ... --json bench/rm_best_of_n.json
    python bench/rm_best_of_n.py judge ... --rules answer     # only the judged answers (fast)

Prompts: the 100 held-out add2 problems (`data/arithmetic/add2/test.jsonl`, never in a
reward-model train file), each written in phrasings no train file uses:
  dev    the four `TEST_ONLY` wordings of data/make_rm_pairs.py (400 prompts; the reward
         model's own test pairs use them, so choices made on dev are not held out)
  final  four wordings written for this bench and used nowhere else (400 prompts), read
         only to report the choice made on dev.
`sample` draws 16 free-form completions per prompt (`alignment generate` code path, vLLM,
temperature 1, 64 new tokens, no system prompt: what a new user gets) and keeps all of them.
`judge` scores every candidate with the reward model under each scoring rule and reports,
for N = 4, 8, 16 (the first N candidates), the accuracy of one sample, of the best-of-N
pick and of any-of-N (the oracle), the pick's share of the oracle (the capture), and the
mean length of the picks vs the correct candidates. A candidate is correct when its final
number is the answer (`reward_models.is_correct`).

Scoring rules (all from one pass of the model and of the reference):
  sum        β·Σ log p            (the likelihood reward model as trained)
  ratio      β·Σ (log p − log p_ref)   (DPO's implicit reward: untouched text scores ~0)
  mean       the ratio / number of completion tokens
  answer     β·log p(final answer written alone)   (`reward_model.judge: answer`)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "data"))

OUT = ROOT / "runs/rm_bon"
PROBLEMS = ROOT / "data/arithmetic/add2/test.jsonl"
FINAL_WORDINGS = [
    "Tell me what {a} and {b} add up to.",
    "If I put {a} and {b} together, what number do I get?",
    "{name} baked {a} muffins in the morning and {b} in the afternoon. How many muffins "
    "did {name} bake that day?",
    "Quick question: {a} + {b}?",
]
NAMES = ("Ana", "Ben", "Carla", "Dev", "Elif", "Femi", "Gus", "Hiro")
NS = (4, 8, 16)
RULES = ("sum", "ratio", "mean", "answer")


def prompts(which: str) -> list[dict]:
    from make_rm_pairs import TEST_ONLY

    wordings = [t.prompt for t in TEST_ONLY] if which == "dev" else FINAL_WORDINGS
    rows = []
    for i, line in enumerate(PROBLEMS.read_text().splitlines()):
        row = json.loads(line)
        a, b = (int(x) for x in re.findall(r"\d+", row["prompt"])[:2])
        assert a + b == row["answer"], row
        for k, wording in enumerate(wordings):
            rows.append({"prompt": wording.format(a=a, b=b, name=NAMES[(i + k) % len(NAMES)]),
                         "answer": a + b, "task": "add2", "wording": k})
    return rows


def candidates_file(which: str, policy: str) -> Path:
    return OUT / f"{which}_{Path(policy).name}.jsonl"


def sample(args) -> None:
    from alignment.best_of_n import best_of_n
    from alignment.models import resolve_model
    from alignment.rollout import SamplingParams
    from reward_models import build_scorer

    OUT.mkdir(parents=True, exist_ok=True)
    data = OUT / f"{args.set}_prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in prompts(args.set)))
    summary = best_of_n(resolve_model(args.policy), str(data),
                        str(candidates_file(args.set, args.policy)),
                        build_scorer("exact_answer"), n=max(NS), keep_all=True, seed=args.seed,
                        sampling=SamplingParams(temperature=1.0, max_new_tokens=64),
                        prompts_per_batch=32, limit=args.limit)
    print(json.dumps(summary, indent=1))


def raw_scores(rm: str, rows: list[dict], rules: list[str], batch: int = 64) -> list[list[dict]]:
    """Per candidate, what `rules` need: Σ log p under the reward model and under its
    reference and the number of completion tokens (sum, ratio, mean), tokenised as the
    scorer does; the `judge: answer` score (answer)."""
    from alignment.models import resolve_model
    from reward_models.reward_model import RewardModelScorer

    flat = [(r["prompt"], c["completion"]) for r in rows for c in r["candidates"]]
    out: list[dict] = [{} for _ in flat]
    if set(rules) - {"answer"}:
        scorer = RewardModelScorer(resolve_model(rm), reference=True, dtype="bfloat16",
                                   judge="completion")
        tokens = [scorer._tokenize(p, c) for p, c in flat]
        order = sorted(range(len(flat)), key=lambda i: len(tokens[i][0]))
        for s in range(0, len(order), batch):
            chunk = order[s:s + batch]
            ids, starts = [tokens[i][0] for i in chunk], [tokens[i][1] for i in chunk]
            model = scorer._sum_logps(scorer.model, ids, starts).tolist()
            ref = scorer._sum_logps(scorer.reference, ids, starts).tolist()
            for i, lp, lr in zip(chunk, model, ref, strict=True):
                out[i].update(logp=lp, ref=lr, tokens=len(tokens[i][0]) - tokens[i][1])
            print(f"\r{s + len(chunk)}/{len(flat)}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        del scorer
    if "answer" in rules:
        answer = RewardModelScorer(resolve_model(rm), dtype="bfloat16", judge="answer",
                                   reference=False, batch_size=batch)
        judged = answer.score([p for p, _ in flat], [c for _, c in flat]).rewards
        for s, value in zip(out, judged, strict=True):
            s["answer"] = value
    k, nested = 0, []
    for r in rows:
        nested.append(out[k:k + len(r["candidates"])])
        k += len(r["candidates"])
    return nested


def rule_score(rule: str, s: dict, beta: float) -> float:
    if rule == "answer":
        return s["answer"]
    if rule == "sum":
        return beta * s["logp"]
    ratio = beta * (s["logp"] - s["ref"])
    return ratio if rule == "ratio" else ratio / max(s["tokens"], 1)


def report(rows: list[dict], scores: list[list[dict]], beta: float, rules) -> dict:
    from reward_models import is_correct

    result = {}
    for rule in rules:
        for n in NS:
            one = best = any_ = 0
            pick_len, right_len = [], []
            for row, cand_scores in zip(rows, scores, strict=True):
                cands = row["candidates"][:n]
                ok = [is_correct(c["completion"], row["answer"]) for c in cands]
                values = [rule_score(rule, s, beta) for s in cand_scores[:n]]
                pick = max(range(n), key=lambda k: values[k])
                one += ok[0]
                best += ok[pick]
                any_ += any(ok)
                pick_len.append(len(cands[pick]["completion"]))
                right_len += [len(c["completion"]) for c, o in zip(cands, ok, strict=True) if o]
            m = len(rows)
            result[f"{rule}@{n}"] = {
                "one_sample": one / m, "best_of_n": best / m, "any_of_n": any_ / m,
                "capture": best / any_ if any_ else None,
                "pick_chars": sum(pick_len) / m,
                "correct_chars": sum(right_len) / len(right_len) if right_len else None}
    return result


def judge(args) -> None:
    from reward_models.reward_model import likelihood_beta, locate_reward_model

    path = candidates_file(args.set, args.policy)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    if args.limit:
        rows = rows[:args.limit]
    rules = args.rules.split(",")
    if set(rules) - set(RULES):
        sys.exit(f"--rules: {args.rules}: each of {', '.join(RULES)}")
    needs = {"answer"} if rules == ["answer"] else {"logp", "ref", "tokens"} | (
        {"answer"} if "answer" in rules else set())
    cache = path.with_suffix(f".{Path(args.rm).name}.scores.json")
    if cache.is_file() and not args.fresh and \
            len(scores := json.loads(cache.read_text())) >= len(rows) and \
            all(needs <= set(s) for row in scores[:len(rows)] for s in row):
        scores = scores[:len(rows)]
    else:
        scores = raw_scores(args.rm, rows, rules)
        cache.write_text(json.dumps(scores))
    beta = likelihood_beta(locate_reward_model(args.rm))
    result = report(rows, scores, beta, rules)
    print(f"{args.set} prompts, policy {args.policy}, reward model {args.rm}")
    print(f"{'rule@N':<10}{'one':>7}{'best':>7}{'any':>7}{'capture':>9}{'pick ch':>9}"
          f"{'right ch':>9}")
    for key, r in result.items():
        cap = f"{r['capture']:.1%}" if r["capture"] is not None else "-"
        right = f"{r['correct_chars']:.0f}" if r["correct_chars"] is not None else "-"
        print(f"{key:<10}{r['one_sample']:>7.1%}{r['best_of_n']:>7.1%}{r['any_of_n']:>7.1%}"
              f"{cap:>9}{r['pick_chars']:>9.0f}{right:>9}")
    if args.json:
        saved = json.loads(Path(args.json).read_text()) if Path(args.json).is_file() else {}
        saved[f"{args.set}|{args.policy}|{args.rm}"] = result
        Path(args.json).write_text(json.dumps(saved, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, run in (("sample", sample), ("judge", judge)):
        s = sub.add_parser(name)
        s.add_argument("--set", choices=["dev", "final"], default="dev")
        s.add_argument("--policy", default="smollm2-135m")
        s.set_defaults(run=run)
    sub.choices["sample"].add_argument("--seed", type=int, default=0)
    sub.choices["sample"].add_argument("--limit", type=int, default=None,
                                       help="only the first N prompts (4 per problem)")
    j = sub.choices["judge"]
    j.add_argument("--rm", default="runs/reward_model")
    j.add_argument("--limit", type=int, default=None)
    j.add_argument("--fresh", action="store_true", help="rescore, ignore the cached scores")
    j.add_argument("--rules", default=",".join(RULES),
                   help=f"comma-separated, of {', '.join(RULES)}")
    j.add_argument("--json", default=None)
    args = p.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
