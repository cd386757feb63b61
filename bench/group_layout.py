"""Grouped vs separate layout of online samples: forward+backward time of each, same run.

    python bench/group_layout.py --json bench/group_layout.json     # bundled model, bf16
    python bench/group_layout.py --groups 8 --lengths short --repeats 1   # one quick shape

The online trainers lay out a micro-batch of G samples per prompt in one of two ways
(`alignment/trainers/sequences.py`): grouped (`collate_groups`: one row per prompt
`[prompt | c_1 | ... | c_G]`, every completion padded to the longest, a dense 4-D mask) or
separate (`collate_separate`: one right-padded row `[prompt | c]` per sample, 2-D mask).
Each shape is one prompt of `--prompt` tokens and its G completions (both layouts scale
linearly with the number of prompts, so one group says which is cheaper); lengths:

    short    every completion 16 tokens (the shipped arithmetic recipes)
    uniform  every completion 64 tokens
    long     every completion 128 tokens
    uneven   seeded uniform on 16..256, the longest exactly 256

Timed: `group_token_logps` + a sum over the completion tokens + `backward()`, as an update
does, after one untimed warm-up per shape and layout (oneDNN builds kernels per shape);
the layouts alternate within each repeat and the fastest repeat is kept (the machine is
shared: other work only ever slows a repeat down). Then t_grouped − t_separate =
a·Δpositions + b·Δ(Σ width²) is fitted over the shapes (positions = rows × width; see
`fit`); a / b is the width at which a position's attention work equals the rest of its
work, W0 of the cost rule that picks the layout (`layout_costs` in sequences.py). The code
takes W0 from the model's FLOPs (`attention_width`) times ATTENTION_EFFICIENCY, which is
this fit over the FLOP value for the bundled model; the rule is then judged against every
measured shape.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time

LENGTHS = ("short", "uniform", "long", "uneven")


def completion_lengths(kind: str, g: int, rng: random.Random) -> list[int]:
    if kind == "short":
        return [16] * g
    if kind in ("uniform", "long"):
        return [64 if kind == "uniform" else 128] * g
    lengths = [rng.randint(16, 256) for _ in range(g)]
    lengths[rng.randrange(g)] = 256
    return lengths


def shape(kind: str, g: int, prompt: int, vocab: int, seed: int):
    rng = random.Random(f"{kind}-{g}-{seed}")
    prompt_ids = [[rng.randrange(3, vocab) for _ in range(prompt)]]
    group = [[rng.randrange(3, vocab) for _ in range(n)] for n in completion_lengths(kind, g, rng)]
    return prompt_ids, [group]


def time_layout(model, batch: dict) -> float:
    from alignment.trainers.sequences import group_token_logps

    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    logps = group_token_logps(model, batch)
    (logps.float() * batch["completion_mask"]).sum().backward()
    return time.perf_counter() - t0


def geometry(batch: dict) -> dict:
    rows, width = batch["input_ids"].shape
    return {"rows": rows, "width": width, "positions": rows * width,
            "width_sq": rows * width * width}


def fit(results: list[dict]) -> tuple[float, float]:
    """Least squares over the shapes of t_g − t_s = a·Δpositions + b·Δwidth², each shape
    divided by t_g + t_s. The two layouts of a shape are timed in turn, so a busier machine
    during one shape slows both alike: the ratio takes that out, and what a call costs
    whatever its layout (the tied 49k-row embedding's gradient, the LM head on the same
    completion tokens) cancels in the difference."""
    import torch

    rows, rhs = [], []
    for r in results:
        g, s = r["grouped"], r["separate"]
        total = g["seconds"] + s["seconds"]
        rows.append([(g["positions"] - s["positions"]) / total,
                     (g["width_sq"] - s["width_sq"]) / total])
        rhs.append([(g["seconds"] - s["seconds"]) / total])
    x = torch.tensor(rows, dtype=torch.float64)
    scale = x.abs().max(dim=0).values   # (columns of very different size)
    solution = torch.linalg.lstsq(x / scale, torch.tensor(rhs, dtype=torch.float64)).solution
    a, b = (solution.flatten() / scale).tolist()
    return a, b


def measure(args) -> list[dict]:
    import torch

    from alignment.models import load_causal_lm, resolve_model
    from alignment.trainers.sequences import collate_groups, collate_separate

    torch.set_num_threads(args.threads)
    model = load_causal_lm(resolve_model("smollm2-135m"), getattr(torch, args.dtype)).train()
    model.config.use_cache = False
    results = []
    for kind in args.lengths.split(","):
        for g in (int(x) for x in args.groups.split(",")):
            prompts, groups = shape(kind, g, args.prompt, model.config.vocab_size, args.seed)
            batches = {"grouped": collate_groups(prompts, groups, 0),
                       "separate": collate_separate(prompts, groups, 0)}
            times = {name: [] for name in batches}
            for batch in batches.values():   # warm-up
                time_layout(model, batch)
            for _ in range(args.repeats):
                for name, batch in batches.items():
                    times[name].append(time_layout(model, batch))
            row = {"lengths": kind, "G": g, "prompt": args.prompt,
                   "completion_tokens": sum(len(c) for c in groups[0]),
                   "longest": max(len(c) for c in groups[0])}
            for name, batch in batches.items():
                row[name] = {**geometry(batch), "seconds": min(times[name]),
                             "median_seconds": statistics.median(times[name]),
                             "all_seconds": [round(t, 3) for t in times[name]]}
            results.append(row)
            print(f"{kind:8s} G={g:<3d} grouped {row['grouped']['seconds']:7.2f} s "
                  f"(width {row['grouped']['width']:5d})  separate "
                  f"{row['separate']['seconds']:7.2f} s ({row['separate']['rows']} x "
                  f"{row['separate']['width']})", flush=True)
    return results


def judge(results: list[dict], seed: int) -> dict:
    """The cost rule of the code (`layout_costs`) against the measurements."""
    from transformers import AutoConfig

    from alignment.models import resolve_model
    from alignment.trainers.sequences import attention_width, layout_costs

    width0 = attention_width(AutoConfig.from_pretrained(resolve_model("smollm2-135m")))
    for r in results:
        prompts, groups = shape(r["lengths"], r["G"], r["prompt"], 49152, seed)
        costs = layout_costs(prompts, groups, width0)
        r["predicted"] = min(costs, key=costs.get)
        r["faster"] = min(("grouped", "separate"), key=lambda n: r[n]["seconds"])
        r["grouped_over_separate"] = r["grouped"]["seconds"] / r["separate"]["seconds"]
        # time of the layout the rule picks over the faster one's (1.0 = no loss)
        r["picked_over_best"] = r[r["predicted"]]["seconds"] / r[r["faster"]]["seconds"]
    a, b = fit(results)
    return {"fit": {"seconds_per_position": a, "seconds_per_width_sq": b,
                    "attention_width": a / b if b > 0 else None},
            "attention_width_in_code": width0,
            "rule_agrees": sum(r["faster"] == r["predicted"] for r in results),
            "worst_picked_over_best": max(r["picked_over_best"] for r in results)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", default="4,8,16", help="G values")
    p.add_argument("--lengths", default=",".join(LENGTHS))
    p.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--from-json", help="judge the rule on an earlier run's measurements "
                   "instead of measuring again")
    p.add_argument("--json")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    import transformers

    if args.from_json:
        with open(args.from_json) as f:
            out = json.load(f)
        results = out["shapes"]
    else:
        results = measure(args)
        out = {"machine": {"cpu": platform.processor() or platform.machine(),
                           "threads": args.threads, "torch": torch.__version__,
                           "transformers": transformers.__version__},
               "model": "smollm2-135m", "dtype": args.dtype, "repeats": args.repeats,
               "seed": args.seed}
    out.update(judge(results, out["seed"]))
    out["shapes"] = results
    for r in results:
        print(f"{r['lengths']:8s} G={r['G']:<3d} grouped/separate "
              f"{r['grouped_over_separate']:5.2f}  faster {r['faster']:8s} "
              f"rule {r['predicted']:8s} picked/best {r['picked_over_best']:.2f}")
    print(f"fit: t_g − t_s = {out['fit']['seconds_per_position']:.3e}·Δpositions + "
          f"{out['fit']['seconds_per_width_sq']:.3e}·Δwidth²  ->  attention width "
          f"{out['fit']['attention_width']:.0f} (code: {out['attention_width_in_code']:.0f}); "
          f"the rule picks the faster layout in {out['rule_agrees']}/{len(results)} shapes")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
