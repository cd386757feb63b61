"""Multi-turn episodes per second: all episodes advanced together (one engine call per turn)
vs one episode at a time, same engine, same model, same environment.

    python bench/episodes.py                                  # vllm, 32 episodes
    python bench/episodes.py --backend hf --episodes 16 --model runs/sft_tool

The environment is the shipped `python_tool` (sandboxed runs included in the time) on the
held-out mul_tool problems, greedy, 3 turns, 128 episode tokens: with a model that calls
the tool (runs/sft_tool) most episodes take 2 turns; the bundled model mostly answers in
one. Both modes play the same prompts; greedy decoding makes their episodes the same up to
numerics, so the times compare the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = ("You can run Python: write a ```python block that prints the result and you will "
          "see its output. Then give the final number.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--backend", default="vllm", choices=["vllm", "hf"])
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--json")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from transformers import AutoModelForCausalLM

    from alignment.data import load_examples, render_prompt
    from alignment.environments import environment_factory
    from alignment.models import load_tokenizer, resolve_model, stop_token_ids
    from alignment.rollout import SamplingParams, make_engine
    from alignment.rollout.episodes import EpisodeLimits, ReplyRenderer, play_episodes
    from reward_models import is_correct

    path = resolve_model(args.model)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    examples = load_examples(ROOT / "data/arithmetic/mul_tool/test.jsonl", "prompt",
                             limit=args.episodes)
    prompts = [tokenizer(render_prompt(tokenizer, ex.prompt, system_prompt=SYSTEM),
                         add_special_tokens=False).input_ids for ex in examples]
    rows = [ex.extra for ex in examples]
    options = {"dtype": "bfloat16", "kv_cache_gb": 1.0, "max_model_len": 512, "seed": 0} \
        if args.backend == "vllm" else {}
    engine = make_engine(args.backend, model=model, tokenizer=tokenizer, model_path=str(path),
                         **options)
    new_env = environment_factory("python_tool", {"timeout_s": 5})
    renderer = ReplyRenderer(tokenizer, stop_token_ids(tokenizer, model))
    sampling = SamplingParams(temperature=0.0, max_new_tokens=32)
    limits = EpisodeLimits(max_turns=3, max_episode_tokens=128)

    def play(indices):
        first = engine.generate([prompts[i] for i in indices], n=1, sampling=sampling)
        return play_episodes(engine, first, [new_env() for _ in indices],
                             rows=[rows[i] for i in indices], verify=lambda i, t: 0.0,
                             renderer=renderer, sampling=sampling, limits=limits)

    play([0])   # warm-up (first calls compile / allocate)
    result = {"backend": args.backend, "model": args.model, "episodes": len(prompts),
              "threads": torch.get_num_threads()}
    for mode in ("batched", "one_at_a_time"):
        start = time.perf_counter()
        if mode == "batched":
            played = [play(list(range(len(prompts))))]
        else:
            played = [play([i]) for i in range(len(prompts))]
        seconds = time.perf_counter() - start
        texts = [t for rollouts, _ in played for t in rollouts.texts]
        turns = [t for _, info in played for t in info.turns]
        result[mode] = {"seconds": round(seconds, 2),
                        "episodes_per_s": round(len(prompts) / seconds, 3),
                        "mean_turns": sum(turns) / len(turns),
                        "accuracy": sum(is_correct(t, r["answer"]) for t, r in
                                        zip(texts, rows, strict=True)) / len(rows)}
        print(mode, result[mode], flush=True)
    result["speedup"] = round(result["batched"]["episodes_per_s"]
                              / result["one_at_a_time"]["episodes_per_s"], 2)
    print(f"batched / one at a time: {result['speedup']}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
