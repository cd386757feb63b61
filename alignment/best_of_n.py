"""Best-of-N sampling (`alignment generate`): N completions per prompt through the rollout
engine, scored by a reward model (or any scorer), the highest-scored one kept.

Each output row is the input row (its other columns kept, e.g. `answer`) plus
`completion` (the best), `reward` (its score) and, with `keep_all`, every candidate and its
score. The output file is written whole, then renamed (never half-written). When the rows
carry an `answer`, the summary also gives the exact-answer accuracy of the kept completion,
of one sample (the first) and of any of the N (the ceiling a perfect scorer would reach).
"""

from __future__ import annotations

import json
import sys
import time

import torch

from alignment import atomic
from alignment.data import load_examples, render_prompt, scorer_prompt
from alignment.models import load_tokenizer, resolve_dtype, resolve_model
from alignment.rollout import SamplingParams, make_engine, vllm_available
from alignment.rollout.kv_cache import model_kv_cache
from alignment.rollout.types import sample_seed
from reward_models import is_correct


def best_of_n(model: str, data: str, output: str, scorer, *, n: int = 8,
              backend: str = "auto", sampling: SamplingParams | None = None,
              prompts_per_batch: int = 16, limit: int | None = None, seed: int = 0,
              dtype: str = "auto", keep_all: bool = False, system_prompt: str | None = None,
              progress: bool = False) -> dict:
    from transformers import AutoModelForCausalLM

    if n < 1 or prompts_per_batch < 1:
        raise ValueError(f"--n and the prompt batch must be >= 1, got {n} and "
                         f"{prompts_per_batch}")
    sampling = sampling or SamplingParams(temperature=1.0)
    path = resolve_model(model)
    tokenizer = load_tokenizer(path)
    examples = load_examples(data, "prompt", limit=limit)
    prompt_ids = [tokenizer(render_prompt(tokenizer, ex.prompt, plain=ex.plain,
                                          system_prompt=system_prompt),
                            add_special_tokens=False)["input_ids"] for ex in examples]
    torch_dtype = resolve_dtype(dtype)
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).eval()
    if backend == "auto":
        backend = "vllm" if vllm_available() else "hf"
    options, kv_cache = {}, None
    if backend == "vllm":   # the KV cache for one batch: prompts_per_batch x n sequences
        dtype_name = str(torch_dtype).removeprefix("torch.")
        longest = max(len(p) for p in prompt_ids) + sampling.max_new_tokens
        batch = min(prompts_per_batch, len(prompt_ids)) * n
        kv_cache = model_kv_cache(path, dtype_name, [(batch, longest)], longest + 8)
        options = {"dtype": dtype_name, "seed": seed, "max_model_len": longest + 8,
                   "kv_cache_gb": kv_cache.gib}
    engine = make_engine(backend, model=policy, tokenizer=tokenizer, model_path=path, **options)
    if kv_cache is not None and not torch.cuda.is_available():
        print(f"KV cache: {kv_cache}", file=sys.stderr)

    rows, stats = [], {"best": 0, "first": 0, "any": 0, "with_answer": 0, "errors": 0}
    starts = range(0, len(examples), prompts_per_batch)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"best-of-{n}", unit="batch")
    t0 = time.perf_counter()
    for start in starts:
        chunk = list(range(start, min(start + prompts_per_batch, len(examples))))
        rollouts = engine.generate([prompt_ids[i] for i in chunk], n=n, sampling=sampling,
                                   seeds=[sample_seed(seed, i) for i in chunk])
        raw = [scorer_prompt(examples[chunk[j]]) for j in rollouts.prompt_index]
        scored = scorer.score(raw, rollouts.texts,
                              [examples[chunk[j]].extra for j in rollouts.prompt_index])
        stats["errors"] += scored.n_errors
        for j, i in enumerate(chunk):
            ex = examples[i]
            cands = [(rollouts.texts[k], scored.rewards[k]) for k in range(j * n, (j + 1) * n)]
            best = max(range(n), key=lambda k: cands[k][1])    # first of equal scores
            row = {"prompt": scorer_prompt(ex), **ex.extra, "completion": cands[best][0],
                   "reward": cands[best][1], "n": n}
            if keep_all:
                row["candidates"] = [{"completion": c, "reward": r} for c, r in cands]
            rows.append(row)
            if "answer" in ex.extra:
                ok = [is_correct(c, ex.extra["answer"]) for c, _ in cands]
                stats["with_answer"] += 1
                stats["best"] += ok[best]
                stats["first"] += ok[0]
                stats["any"] += any(ok)
    atomic.write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    summary = {"model": model, "data": str(data), "output": str(output), "n": n,
               "prompts": len(rows), "backend": engine.backend,
               "seconds": round(time.perf_counter() - t0, 1), "scorer_errors": stats["errors"]}
    if kv_cache is not None and not torch.cuda.is_available():
        summary["kv_cache"] = str(kv_cache)
    m = stats["with_answer"]
    if m:
        summary.update({"accuracy_best_of_n": stats["best"] / m,
                        "accuracy_one_sample": stats["first"] / m,
                        "accuracy_any_of_n": stats["any"] / m})
    return summary
