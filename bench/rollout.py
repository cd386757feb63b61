"""Generation throughput of the rollout backends, and weight-sync time, same run.

    python bench/rollout.py                       # batch 32 and 128, 64 new tokens, bf16
    python bench/rollout.py --batches 32 --new-tokens 32

Both backends get the bundled model, the same chat-formatted prompts from
data/arithmetic/rl/test.jsonl, temperature 1.0, the same budget, the same dtype and
threads. Tokens/s counts generated tokens (until EOS or the budget). `sync_weights` is
timed on the vLLM engine after a change to the model (includes its verification probe).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="32,128")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--json")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from transformers import AutoModelForCausalLM

    from alignment.data import load_examples, render_prompt
    from alignment.models import load_tokenizer, resolve_model
    from alignment.rollout import SamplingParams, make_engine

    path = resolve_model("smollm2-135m")
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype))
    sizes = [int(b) for b in args.batches.split(",")]
    examples = load_examples(str(ROOT / "data/arithmetic/rl/test.jsonl"), "prompt",
                             limit=max(sizes))
    prompts = [tokenizer(render_prompt(tokenizer, e.prompt), add_special_tokens=False)
               ["input_ids"] for e in examples]
    sampling = SamplingParams(temperature=1.0, max_new_tokens=args.new_tokens, seed=0)

    def measure(engine, size):
        engine.generate(prompts[:2], sampling=SamplingParams(max_new_tokens=4))   # warm up
        t0 = time.perf_counter()
        out = engine.generate(prompts[:size], sampling=sampling)
        return sum(len(c) for c in out.completion_ids) / (time.perf_counter() - t0)

    # HF first: a vLLM CPU engine binds OpenMP threads for the whole process afterwards
    hf = make_engine("hf", model=model, tokenizer=tokenizer, batch_size=max(sizes))
    hf_speed = {size: measure(hf, size) for size in sizes}
    start = time.perf_counter()
    vllm = make_engine("vllm", model=model, tokenizer=tokenizer, model_path=path,
                       dtype=args.dtype, max_model_len=512)
    init = time.perf_counter() - start
    results = {"vllm_init_s": init}
    print(f"rollout bench: bundled model, {args.dtype}, {args.new_tokens} new tokens, "
          f"T=1.0, {torch.get_num_threads()} threads (vLLM init {init:.1f} s)")
    print(f"{'batch':>6}{'HF tok/s':>10}{'vLLM tok/s':>12}{'ratio':>8}")
    for size in sizes:
        row = {"hf": hf_speed[size], "vllm": measure(vllm, size)}
        results[f"batch{size}"] = row
        print(f"{size:>6}{row['hf']:>10.1f}{row['vllm']:>12.1f}{row['vllm'] / row['hf']:>7.2f}x",
              flush=True)
    with torch.no_grad():
        for layer in model.model.layers[:2]:
            layer.mlp.down_proj.weight.mul_(1.01)
    times = [vllm.sync_weights(model) for _ in range(3)]
    results["sync_weights_s"] = times
    print(f"sync_weights (incl. verification probe): {min(times):.2f} s best of 3 "
          f"({', '.join(f'{t:.2f}' for t in times)})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
