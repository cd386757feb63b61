"""Realistic shapes: DPO and SFT tokens/s, GRPO s/step, ours vs TRL's fastest configuration
at each point, peak RSS, and the share of this CPU's bf16 matmul throughput each achieves.

    python bench/shapes.py --models smollm2-135m --lengths 512 --parts dpo --steps 1 --batch 1
    python bench/shapes.py --models qwen2.5-0.5b-shape --lengths 2048 --parts dpo,sft
    python bench/shapes.py --parts grpo --grpo-tokens 256,512 --trl-configs all
    python bench/shapes.py --json bench/shapes.json      # the whole grid: hours on 2 cores

Models (bf16 weights on both sides):
  smollm2-135m        the bundled SmolLM2-135M-Instruct (trained weights)
  smollm2-360m-shape  random weights, SmolLM2-360M's published architecture: Llama, hidden
                      960, MLP 2560, 32 layers, 15 heads / 5 KV heads, vocab 49,152, tied
                      embeddings, 8,192 positions, rope θ 1e5, RMS-norm ε 1e-5
  qwen2.5-0.5b-shape  random weights, Qwen2.5-0.5B's published architecture: Qwen2 (QKV
                      bias), hidden 896, MLP 4864, 24 layers, 14 heads / 2 KV heads, vocab
                      151,936, tied embeddings, 32,768 positions, rope θ 1e6, ε 1e-6
The two random models are built once (seed 0) under $ALIGNMENT_CACHE/models/bench-shapes/
with the bundled SmolLM2 tokenizer and chat template next to them (its ids are < 49,152, so
the Qwen shape's 151,936-wide head is all there: the large-vocabulary case).

Data: generated, deterministic multi-turn conversations over a fixed word list. For a
target length L, each sequence's total is drawn in about [0.5 L, L] tokens (chat template
and its default system line included), the prompt about a third of it, with 1-3 earlier
user/assistant exchanges before the final user turn; DPO gets a chosen and a rejected
assistant answer, SFT the same rows as prompt + completion (the chosen one). GRPO gets
prompts of about half the completion budget (a third of the whole sequence) with an
`answer` column for the `exact_answer` reward (never earned: only the cost matters). The
random models never write EOS, so their completions run to the budget (256 / 512 tokens);
the bundled instruct model stops where it likes: completion tokens per step are reported.

Per point, every trainer runs in a fresh process (peak RSS = its VmHWM). Both sides get the
same rows, batch, max length and threads. DPO and SFT: one epoch over steps x batch rows,
the whole `train()` call timed (reference log-probs included wherever each computes them);
tokens = prompt + completion of each sequence (DPO: both sequences of each pair), counted
once by our tokenisation for both sides. GRPO: mean s/step over steps 2..N (the first is
warm-up), 2 prompts x 4 samples, β 0, our rollout engine's start-up not included.

TRL 1.16 configurations (names: weights-gc-...; `--trl-configs all` runs every one, the
default runs the set below; every one tried is printed, a refused one as "refused: why"):
  DPO   weights bf16 | autocast (fp32 weights, bf16=True); gc | nogc; pre
        (`precompute_ref_log_probs`) | step (reference forward each step); -pf
        (`padding_free`); -ltk (`use_logits_to_keep`). Default: bf16-nogc-pre (the fastest
        in bench/RESULTS.md), bf16-gc-pre (its lowest-memory), and the -pf / -ltk probes:
        TRL 1.16's DPOTrainer turns padding_free back off and DPOConfig has no
        use_logits_to_keep, so both are refused without training. Autocast and step mode
        were slower than bf16 / pre in every measured case.
  SFT   weights; gc | nogc; -pf (`padding_free`); -pack (`packing`, best-fit decreasing:
        rows of max_length tokens, padding-free implied, so -pf-pack is not run). Default:
        bf16-nogc, bf16-nogc-pf, bf16-nogc-pack, bf16-gc-pack. A packed step holds more
        tokens (batch x max_length): the epoch has fewer, larger steps.
  GRPO  weights; gc | nogc (HF generate: TRL's fastest on this CPU, bench/grpo_vs_trl.py).
        Default: bf16-nogc, bf16-gc.
Ours runs with `model.gradient_checkpointing` false and true (its memory/speed trade-off),
bf16 weights and `trainer.optimizer` adamw (fp32 master copies and moments: 18 bytes per
parameter at the step, against TRL's pure-bf16 AdamW at ~8) or, with --our-optimizer,
adamw_kahan (no fp32 copy, 10 bytes per parameter).

Model FLOPs (what "achieved FLOP/s" counts; the same count for both sides, whatever work
a trainer skips or repeats):
  N = parameters of the matmuls: per layer q, k, v, o and the three MLP projections, plus
      the LM head V x H (tied embeddings counted once, as the head; the embedding lookup,
      norms and biases not counted)
  A(T) = 2 * layers * d_attn * T * (T + 1): the forward attention FLOPs (QK^T and AV,
      causal: position t attends to t positions) of one sequence of T tokens, d_attn =
      heads x head_dim
  DPO  per sequence: 6 N T + 3 A(T) (trained) + 2 N T + A(T) (reference forward)
  SFT  per sequence: 6 N T + 3 A(T)
  GRPO per sample, T = prompt + completion (mean lengths): 2 N T + A(T) (generation:
       prefill and decode) + 6 N T + 3 A(T) (training forward and backward)
Achieved (GFLOP/s) = counted FLOPs / measured seconds; share = achieved / this CPU's bf16
GEMM throughput (GEMM) measured right before that trainer's run (4096^3 torch.matmul, same
threads, best of 3; also at the start and end, fp32 alongside for reference). A share is
only as good as the machine was quiet: another job on the cores halves both.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from child_runs import peak_rss_gb, steady, trl_exact_answer, write_json  # bench/

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {   # name -> (transformers config class, published architecture numbers)
    "smollm2-360m-shape": ("LlamaConfig", dict(
        hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
        num_key_value_heads=5, vocab_size=49152, tie_word_embeddings=True,
        max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5)),
    "qwen2.5-0.5b-shape": ("Qwen2Config", dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
        max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6)),
}
MODELS = ["smollm2-135m", *SHAPES]
PARTS = ("dpo", "sft", "grpo")
DEFAULT_TRL = {
    "dpo": ["bf16-nogc-pre", "bf16-gc-pre", "bf16-nogc-pre-pf", "bf16-nogc-pre-ltk"],
    "sft": ["bf16-nogc", "bf16-nogc-pf", "bf16-nogc-pack", "bf16-gc-pack"],
    "grpo": ["bf16-nogc", "bf16-gc"],
}
ALL_TRL = {
    "dpo": [f"{w}-{gc}-{ref}{pf}{ltk}" for w in ("bf16", "autocast") for gc in ("gc", "nogc")
            for ref in ("pre", "step") for pf in ("", "-pf") for ltk in ("", "-ltk")],
    "sft": [f"{w}-{gc}{extra}" for w in ("bf16", "autocast") for gc in ("gc", "nogc")
            for extra in ("", "-pf", "-pack")],
    "grpo": [f"{w}-{gc}" for w in ("bf16", "autocast") for gc in ("gc", "nogc")],
}
TOKENS_PER_STEP = 4096   # default batch: about this many tokens per step
GRPO_PROMPTS, GRPO_SAMPLES = 2, 4

WORDS = """the a of and to in is that it for on with as was at by this from be have or
are not but had they which you were all we when there can an your more if one would so
what out up about into time than them some could only other then its also two over new
like after first well way even because any these people just most through back much
before how good where each those such own little same still work life world day year
water house place city river road garden window table letter story book music morning
evening question answer reason idea plan change problem number money price market
report team friend family child teacher doctor student village mountain island forest
light colour sound voice paper stone bread coffee train station bridge street corner
open close read write build carry follow bring begin keep hold turn show hear play run
move live believe happen learn remember explain decide consider wonder notice prepare
careful quiet bright simple strange early late warm cold long short heavy useful
clear""".split()


# ---------------------------------------------------------------------- models
def model_folder(name: str) -> str:
    """The bundled model's folder, or the random-weight shape built once (seeded)."""
    from alignment.models import cache_dir, resolve_model

    if name not in SHAPES:
        return resolve_model(name)
    target = cache_dir() / "models" / "bench-shapes" / name
    if (target / "config.json").is_file():
        return str(target)
    import torch
    import transformers

    from alignment.models import load_tokenizer

    print(f"building {name} (random weights, seed 0) in {target}", flush=True)
    tokenizer = load_tokenizer(resolve_model("smollm2-135m"))
    class_name, numbers = SHAPES[name]
    config = getattr(transformers, class_name)(
        **numbers, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    tmp.chmod(0o755)   # mkdtemp's 0700 would hide the model from other users of the cache
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, target)   # atomic: a killed build leaves no half folder under the name
    return str(target)


def architecture(folder: str) -> dict:
    """What the FLOP count needs: N (matmul parameters incl. the LM head), layers, d_attn."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(folder)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    h, q, kv = c.hidden_size, c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * c.intermediate_size
    return {"n_matmul": c.num_hidden_layers * per_layer + c.vocab_size * h,
            "layers": c.num_hidden_layers, "d_attn": q, "vocab": c.vocab_size}


def attention_flops(arch: dict, tokens: float) -> float:
    """A(T): forward QK^T + AV of one causal sequence of T tokens."""
    return 2 * arch["layers"] * arch["d_attn"] * tokens * (tokens + 1)


def sequence_flops(arch: dict, tokens: float, trained: int, forwards: int) -> float:
    """Model FLOPs of one sequence: `trained` forward+backward passes and `forwards`
    forward-only passes (reference, generation)."""
    n = arch["n_matmul"]
    return (trained * (6 * n * tokens + 3 * attention_flops(arch, tokens))
            + forwards * (2 * n * tokens + attention_flops(arch, tokens)))


# ---------------------------------------------------------------------- data
def words(seed: tuple, n: int) -> str:
    """n words of plain sentences; the first k of n+m are the same for the same seed."""
    rng = random.Random(repr(seed))
    out, sentence = [], 0
    for _ in range(max(1, n)):
        word = rng.choice(WORDS)
        out.append(word.capitalize() if sentence == 0 else word)
        sentence += 1
        if sentence >= rng.randint(6, 16):
            out[-1] += "." if rng.random() < 0.85 else "?"
            sentence = 0
        elif rng.random() < 0.06:
            out[-1] += ","
    return " ".join(out) + ("" if out[-1][-1] in ".?" else ".")


class Counter:
    """Token counts through the chat template, as the trainers render them."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        sample = words(("ratio",), 2000)
        self.per_word = len(self.ids(sample)) / 2000

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt(self, messages: list[dict]) -> int:
        return len(self.ids(self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True)))

    def full(self, messages: list[dict]) -> int:
        return len(self.ids(self.tokenizer.apply_chat_template(messages, tokenize=False)))


def conversation(counter: Counter, seed: tuple, prompt_tokens: int) -> list[dict]:
    """1-3 earlier user/assistant exchanges and a final user turn, ~prompt_tokens in all."""
    rng = random.Random(repr(seed))
    turns = 2 * rng.randint(1, 3) + 1
    weights = [rng.uniform(0.4, 1.6) for _ in range(turns)]
    # the template's system line and per-turn markers are part of the prompt's tokens
    budget = max(turns * 4, prompt_tokens - 20 - 5 * turns) / counter.per_word
    return [{"role": "user" if k % 2 == 0 else "assistant",
             "content": words((*seed, k), round(budget * w / sum(weights)))}
            for k, w in enumerate(weights)]


def answer(counter: Counter, prompt: list[dict], seed: tuple, tokens: int,
           max_length: int) -> list[dict]:
    """One assistant message of ~tokens, shortened until prompt + it fits max_length."""
    n = max(1, round(tokens / counter.per_word))
    while True:
        message = [{"role": "assistant", "content": words(seed, n)}]
        if n == 1 or counter.full(prompt + message) <= max_length:
            return message
        n = max(1, int(n * 0.95))


def preference_rows(tokenizer, length: int, n: int) -> list[dict]:
    """n pairs, each sequence's total drawn in ~[0.5, 1] x length, prompt ~1/3 of it."""
    counter = Counter(tokenizer)
    rows = []
    for i in range(n):
        rng = random.Random(f"pair-{length}-{i}")
        total = rng.uniform(0.5, 1.0) * length
        prompt = conversation(counter, ("prompt", length, i), round(total / 3))
        rows.append({
            "prompt": prompt,
            "chosen": answer(counter, prompt, ("chosen", length, i), round(total * 2 / 3),
                             length),
            "rejected": answer(counter, prompt, ("rejected", length, i),
                               round(total * 2 / 3 * rng.uniform(0.8, 1.2)), length)})
    return rows


def grpo_rows(tokenizer, completion: int, n: int) -> list[dict]:
    """n prompts of ~[1/3, 2/3] x the completion budget (a third of the whole on average)."""
    counter = Counter(tokenizer)
    return [{"prompt": conversation(counter, ("grpo", completion, i),
                                    round(random.Random(f"grpo-{i}").uniform(1, 2)
                                          * completion / 3)),
             "answer": "0"} for i in range(n)]


def sequence_lengths(tokenizer, path: str, kind: str, max_length: int,
                     max_prompt_length: int) -> dict:
    """Tokens per sequence (prompt + completion) by our tokenisation: what both sides count."""
    from alignment.data import load_examples, tokenize_examples

    tokenized, report = tokenize_examples(
        tokenizer, load_examples(path, kind), max_length=max_length,
        max_prompt_length=max_prompt_length)
    if report.too_long:
        sys.exit(f"{path}: {len(report.too_long)} rows over max_length {max_length}")
    prompts = [len(t.prompt_ids) for t in tokenized]
    seqs = [p + len(ids) for t, p in zip(tokenized, prompts, strict=True)
            for ids in t.completion_ids.values()]
    return {"sequences": seqs, "prompt_tokens": prompts}


# ---------------------------------------------------------------------- machine limit
def gemm_throughput(threads: int, dtypes=("bf16", "fp32"), size: int = 4096,
                    repeats: int = 3) -> dict:
    """Best-of FLOP/s of one size^3 torch.matmul per dtype."""
    import torch

    torch.set_num_threads(threads)
    out = {}
    for name in dtypes:
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[name]
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        torch.matmul(a, b)   # warm-up: oneDNN picks its kernel on first use
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - start)
        out[name] = 2 * size**3 / best
    return out


# ---------------------------------------------------------------------- children
def options(config: str) -> dict:
    parts = config.split("-")
    return {"weights": parts[0], "gc": "gc" in parts, "pre": "pre" in parts,
            "pf": "pf" in parts, "ltk": "ltk" in parts, "pack": "pack" in parts}


def step_timer(step_times: list[float]):
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter() - self.t)

    return Timer()


def refusal(exc: Exception) -> dict:
    return {"refused": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}


def run_trl(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    from alignment.models import load_tokenizer

    part, opt = spec["part"], options(spec["config"])
    rows = [json.loads(line) for line in open(spec["data"])]
    common = dict(output_dir=spec["workdir"] + "/trl", use_cpu=True, bf16=True,
                  gradient_checkpointing=opt["gc"], report_to=[], save_strategy="no",
                  logging_steps=1, lr_scheduler_type="constant", seed=0, disable_tqdm=True)
    try:   # a configuration TRL does not accept is reported, not run
        if part == "dpo":
            extra = {"use_logits_to_keep": True} if opt["ltk"] else {}
            config = DPOConfig(**common, **extra, beta=0.1, learning_rate=5e-6,
                               per_device_train_batch_size=spec["batch"], num_train_epochs=1,
                               max_length=spec["max_length"], precompute_ref_log_probs=opt["pre"],
                               precompute_ref_batch_size=spec["batch"], padding_free=opt["pf"])
            dataset = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]
        elif part == "sft":
            config = SFTConfig(**common, learning_rate=5e-6, num_train_epochs=1,
                               per_device_train_batch_size=spec["batch"],
                               # padding-free without packing refuses a max_length
                               # ("not enforced"); the rows already fit it
                               max_length=None if opt["pf"] and not opt["pack"]
                               else spec["max_length"],
                               padding_free=opt["pf"], packing=opt["pack"])
            dataset = rows
        else:
            config = GRPOConfig(
                **common, learning_rate=1e-5, max_steps=spec["steps"], warmup_steps=0,
                per_device_train_batch_size=GRPO_PROMPTS * GRPO_SAMPLES,
                num_generations=GRPO_SAMPLES, max_completion_length=spec["new_tokens"],
                temperature=1.0, top_p=1.0, top_k=0, beta=0.0, num_iterations=1,
                loss_type="grpo", use_vllm=False, log_completions=False)
            dataset = rows
    except (TypeError, ValueError) as exc:
        return refusal(exc)
    dtype = torch.bfloat16 if opt["weights"] == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=dtype)
    step_times: list[float] = []
    kwargs = dict(model=model, args=config, train_dataset=Dataset.from_list(dataset),
                  processing_class=load_tokenizer(spec["model"]),
                  callbacks=[step_timer(step_times)])
    try:
        if part == "dpo":
            trainer = DPOTrainer(**kwargs)
        elif part == "sft":
            trainer = SFTTrainer(**kwargs)
        else:
            trainer = GRPOTrainer(reward_funcs=[trl_exact_answer], **kwargs)
    except (TypeError, ValueError, NotImplementedError) as exc:
        return refusal(exc)
    if part == "dpo" and opt["pf"] and not trainer.padding_free:
        return {"refused": "TRL 1.16 DPOTrainer: padding_free is temporarily unavailable "
                           "(it warns and falls back to padding)"}
    lengths: list[int] = []
    if part == "grpo":   # completion tokens actually generated per step
        generate = trainer._generate_single_turn

        def counted(*a, **k):
            out = generate(*a, **k)
            lengths.append(sum(len(c) for c in out[0]))
            return out
        trainer._generate_single_turn = counted
    start = time.perf_counter()
    trainer.train()
    return {"seconds": time.perf_counter() - start, "step_seconds": step_times,
            "completion_tokens": lengths}


def run_ours(spec: dict) -> dict:
    from alignment.config import recipe_from_dict
    from alignment.trainers.dpo import DPOTrainer
    from alignment.trainers.grpo import GRPOTrainer
    from alignment.trainers.sft import SFTTrainer

    part, out = spec["part"], spec["workdir"] + "/ours"
    recipe = {
        "algorithm": part, "output_dir": out,
        "model": {"name": spec["model"], "dtype": "bfloat16",
                  "gradient_checkpointing": spec["config"] == "gc"},
        "data": {"train": spec["data"], "eval": None, "max_length": spec["max_length"],
                 "max_prompt_length": spec["max_prompt_length"]},
        "trainer": {"lr": 5e-6, "batch_size": spec["batch"], "epochs": 1,
                    "scheduler": "constant", "save_every": None, "seed": 0,
                    "threads": spec["threads"], "optimizer": spec["optimizer"]},
        "eval": {"before_after": False},
        "logging": {"report_to": [], "progress_bar": False},
    }
    if part == "dpo":
        recipe["dpo"] = {"beta": 0.1}
    if part == "grpo":
        recipe["trainer"].update(lr=1e-5, max_steps=spec["steps"],
                                 batch_size=GRPO_PROMPTS * GRPO_SAMPLES)
        recipe["grpo"] = {"prompts_per_step": GRPO_PROMPTS, "num_generations": GRPO_SAMPLES,
                          "beta": 0.0, "aggregation": "grpo", "iterations": 1}
        recipe["rollout"] = {"backend": spec["backend"], "temperature": 1.0, "top_p": 1.0,
                             "top_k": 0, "max_new_tokens": spec["new_tokens"]}
        recipe["rewards"] = [{"name": "exact_answer"}]
    trainer = {"dpo": DPOTrainer, "sft": SFTTrainer, "grpo": GRPOTrainer}[part](
        recipe_from_dict(recipe))
    result = {}
    if part == "grpo":   # the engine's start-up is not part of a step
        start = time.perf_counter()
        trainer.before_training()
        result["engine_start_seconds"] = time.perf_counter() - start
        result["generation"] = trainer.engine.backend
        trainer.before_training = lambda: None
    trainer.export_final = lambda: None     # saving is not timed (nor done) in the bench
    trainer.save_checkpoint = lambda history: None
    start = time.perf_counter()
    trainer.train()
    result["seconds"] = time.perf_counter() - start
    logged = [json.loads(line) for line in open(Path(out) / "metrics.jsonl")]
    logged = [r for r in logged if "step_seconds" in r]
    result["step_seconds"] = [r["step_seconds"] for r in logged]
    result["completion_tokens"] = [r["completion_length"] * r["samples"] for r in logged
                                   if "completion_length" in r]
    return result


def child(spec_path: str) -> None:
    import torch

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    result = run_trl(spec) if spec["which"] == "trl" else run_ours(spec)
    result["peak_rss_gb"] = peak_rss_gb()
    print("RESULT " + json.dumps(result), flush=True)


def launch(spec: dict) -> dict:
    """One trainer in a fresh process; a crash is recorded, not fatal to the grid."""
    workdir = tempfile.mkdtemp(prefix=f"bench-shapes-{spec['which']}-")
    spec = {**spec, "workdir": workdir}
    (Path(workdir) / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(spec["threads"]),
           "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, __file__, "--child", str(Path(workdir) /
                              "spec.json")], capture_output=True, text=True, env=env,
                             check=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        tail = out.stderr.strip().splitlines()[-1:] or ["no output"]
        print(out.stderr[-3000:], file=sys.stderr)
        return {"failed": f"rc {out.returncode}: {tail[0][:200]}"}
    result = json.loads(lines[-1][len("RESULT "):])
    result["wall_seconds"] = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------- one point
def run_point(part: str, model: str, length: int, args) -> dict:
    from alignment.models import load_tokenizer

    folder = model_folder(model)
    arch = architecture(folder)
    tokenizer = load_tokenizer(folder)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-shapes-data-"))
    data = str(data_dir / "rows.jsonl")
    if part == "grpo":
        rows = grpo_rows(tokenizer, length, args.steps * GRPO_PROMPTS)
        Path(data).write_text("".join(json.dumps(r) + "\n" for r in rows))
        counted = sequence_lengths(tokenizer, data, "prompt", 10 * length, 10 * length)
        prompt_mean = sum(counted["prompt_tokens"]) / len(rows)
        batch = GRPO_PROMPTS
        spec_extra = {"new_tokens": length, "max_prompt_length": max(counted["prompt_tokens"]),
                      "max_length": max(counted["prompt_tokens"]) + length}
        head = (f"GRPO {model}, {length} new tokens: {args.steps} steps x {GRPO_PROMPTS} prompts "
                f"x {GRPO_SAMPLES} samples, prompt {prompt_mean:.0f} tokens (mean)")
    else:
        per_row = 0.75 * length * (2 if part == "dpo" else 1)
        batch = args.batch or max(1, round(TOKENS_PER_STEP / per_row))
        rows = preference_rows(tokenizer, length, args.steps * batch)
        if part == "sft":
            rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows]
        Path(data).write_text("".join(json.dumps(r) + "\n" for r in rows))
        counted = sequence_lengths(tokenizer, data, "preference" if part == "dpo" else "sft",
                                   length, length // 2)
        tokens = sum(counted["sequences"])
        flops = sum(sequence_flops(arch, t, 1, 1 if part == "dpo" else 0)
                    for t in counted["sequences"])
        # prompts are ~1/3 of a sequence; ours wants room left for the completion
        spec_extra = {"max_length": length, "max_prompt_length": length // 2}
        head = (f"{part.upper()} {model}, L = {length}: {args.steps} steps x {batch} "
                f"{'pairs' if part == 'dpo' else 'rows'}, {tokens:,} tokens, "
                f"{tokens / len(counted['sequences']):.0f} per sequence (prompt "
                f"{sum(counted['prompt_tokens']) / len(rows):.0f})")
    print(f"\n== {head}, {args.threads} threads, N = {arch['n_matmul'] / 1e6:.0f}M matmul "
          f"parameters", flush=True)
    speed_head = f"{'s/step':>9}{'1st':>8}" if part == "grpo" else f"{'tok/s':>9}{'s/step':>8}"
    print(f"{'trainer':<28}{speed_head}{'peak GB':>9}{'GFLOP/s':>9}{'GEMM':>6}{'share':>7}",
          flush=True)
    base = {"part": part, "model": folder, "data": data, "steps": args.steps, "batch": batch,
            "threads": args.threads, "backend": args.our_backend,
            "optimizer": args.our_optimizer, **spec_extra}
    configs = args.trl_configs.get(part, [])
    runs = [("trl", c) for c in configs] + [("ours", "nogc"), ("ours", "gc")]
    results = {}
    for which, config in runs:
        name = f"{which}-{config}"
        # the limit right before each run: other work on the machine moves it
        limit = gemm_throughput(args.threads, ("bf16",))["bf16"]
        r = launch({**base, "which": which, "config": config})
        r["gemm_bf16"] = limit
        results[name] = r
        if "refused" in r or "failed" in r:
            print(f"{name:<28}{'refused' if 'refused' in r else 'FAILED'}: "
                  f"{r.get('refused') or r['failed']}", flush=True)
            continue
        steps = r["step_seconds"]
        if part == "grpo":
            r["s_per_step"] = steady(steps) if len(steps) > 1 else steps[0]
            completion = (steady(r["completion_tokens"]) if len(steps) > 1
                          else r["completion_tokens"][0]) / (GRPO_PROMPTS * GRPO_SAMPLES)
            r["completion_tokens_per_sample"] = completion
            r["model_flops_per_step"] = GRPO_PROMPTS * GRPO_SAMPLES * sequence_flops(
                arch, prompt_mean + completion, 1, 1)
            r["flops_per_s"] = r["model_flops_per_step"] / r["s_per_step"]
            speed = f"{r['s_per_step']:>9.2f}{steps[0]:>8.2f}"
            extra = f"  {completion:.0f} completion tokens/sample"
        else:
            r["tokens_per_s"] = tokens / r["seconds"]
            r["s_per_step"] = r["seconds"] / max(1, len(steps))
            r["flops_per_s"] = flops / r["seconds"]
            speed = f"{r['tokens_per_s']:>9.1f}{r['s_per_step']:>8.2f}"
            extra = f"  {len(steps)} steps" if len(steps) != args.steps else ""
        r["gemm_share"] = r["flops_per_s"] / limit
        print(f"{name:<28}{speed}{r['peak_rss_gb']:>9.2f}{r['flops_per_s'] / 1e9:>9.1f}"
              f"{limit / 1e9:>6.0f}{100 * r['gemm_share']:>6.1f}%{extra}", flush=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    point = {"model": model, "length": length, "batch": batch, "runs": results,
             "n_matmul": arch["n_matmul"]}
    if part == "grpo":
        point["prompt_tokens_mean"] = prompt_mean
    else:
        point.update(tokens=tokens, tokens_per_sequence=tokens / len(counted["sequences"]),
                     model_flops=flops)
    summarise(part, point)
    return point


def summarise(part: str, point: dict) -> None:
    runs = point["runs"]
    done = {k: v for k, v in runs.items() if "flops_per_s" in v}
    trl = [k for k in done if k.startswith("trl-")]
    better = (lambda k: -done[k]["s_per_step"]) if part == "grpo" else \
        (lambda k: done[k]["tokens_per_s"])
    ours, ours_gc = done.get("ours-nogc"), done.get("ours-gc")
    if trl and ours:
        best = max(trl, key=better)
        lowest = min(trl, key=lambda k: done[k]["peak_rss_gb"])
        if part == "grpo":
            ratio, what = done[best]["s_per_step"] / ours["s_per_step"], "s/step (TRL / ours)"
        else:
            ratio, what = ours["tokens_per_s"] / done[best]["tokens_per_s"], "tokens/s"
        point.update(fastest_trl=best, ours_over_fastest_trl=ratio)
        print(f"ours / fastest TRL ({best}): {ratio:.2f}x {what}; peak RSS ours "
              f"{ours['peak_rss_gb']:.2f} GB vs {done[best]['peak_rss_gb']:.2f} GB (TRL's "
              f"lowest {done[lowest]['peak_rss_gb']:.2f} GB, {lowest})", flush=True)
        if part != "grpo" and len(ours["step_seconds"]) > 1:
            # a long run's rate: the steps after the first, one-time costs left out (the
            # reference pass before training, compiling the LM-head kernels, warm-up)
            per_step = {k: steady(done[k]["step_seconds"]) for k in [*trl, "ours-nogc"]
                        if len(done[k]["step_seconds"]) > 1}
            fastest = min((k for k in per_step if k != "ours-nogc"), key=per_step.get)
            steady_ratio = per_step[fastest] / per_step["ours-nogc"]
            point.update(steady_s_per_step=per_step, ours_over_fastest_trl_steady=steady_ratio)
            print(f"steps after the first: ours {per_step['ours-nogc']:.2f} s/step vs "
                  f"{per_step[fastest]:.2f} ({fastest}): {steady_ratio:.2f}x", flush=True)
    if ours and ours_gc:
        slower = ours_gc["s_per_step"] / ours["s_per_step"]
        saved = ours["peak_rss_gb"] - ours_gc["peak_rss_gb"]
        point["ours_checkpointing"] = {"time_factor": slower, "rss_saved_gb": saved}
        print(f"ours gradient checkpointing: {slower:.2f}x the time, peak RSS "
              f"{saved:+.2f} GB saved", flush=True)


# ---------------------------------------------------------------------- driver
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help=", ".join(MODELS))
    p.add_argument("--lengths", default="512,1024,2048", help="DPO / SFT sequence lengths")
    p.add_argument("--grpo-tokens", default="256,512", help="GRPO completion budgets")
    p.add_argument("--parts", default=",".join(PARTS), help=", ".join(PARTS))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=None,
                   help=f"DPO pairs / SFT rows per step (default: ~{TOKENS_PER_STEP} tokens "
                        "per step)")
    p.add_argument("--trl-configs", default="default",
                   help="'default', 'all', 'none' (ours only), or comma-separated names, e.g. "
                        "dpo:bf16-nogc-pre,sft:bf16-nogc-pack (a name without 'part:' goes "
                        "to every part)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--our-backend", choices=["auto", "vllm", "hf"], default="auto",
                   help="our GRPO rollout.backend (TRL: HF generate)")
    p.add_argument("--our-optimizer", choices=["adamw", "adamw_kahan"], default="adamw",
                   help="our trainer.optimizer (adamw: fp32 master copy, 18 bytes/parameter "
                        "at the step; adamw_kahan: none, 10 bytes/parameter)")
    p.add_argument("--json", help="write the results here (after every point)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child)

    models, parts = args.models.split(","), args.parts.split(",")
    if bad := (set(models) - set(MODELS)) | (set(parts) - set(PARTS)):
        p.error(f"unknown {sorted(bad)}; models: {', '.join(MODELS)}; parts: {', '.join(PARTS)}")
    if args.trl_configs in ("default", "all", "none"):
        args.trl_configs = {"default": DEFAULT_TRL, "all": ALL_TRL, "none": {}}[args.trl_configs]
    else:
        chosen: dict[str, list[str]] = {}
        for item in args.trl_configs.split(","):
            part, _, name = item.rpartition(":")
            for q in [part] if part else PARTS:
                if name not in ALL_TRL[q]:
                    if part:
                        p.error(f"unknown {q} configuration {name}: {', '.join(ALL_TRL[q])}")
                    continue
                chosen.setdefault(q, []).append(name)
        args.trl_configs = chosen
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    flags = sorted(set(Path("/proc/cpuinfo").read_text().split()) & {
        "avx512_bf16", "amx_bf16", "avx512f"})
    gemm = gemm_throughput(args.threads)
    print(f"{args.threads} threads, CPU flags {' '.join(flags) or 'none of avx512'}, torch "
          f"{torch.__version__}: 4096^3 matmul bf16 {gemm['bf16'] / 1e9:.0f} GFLOP/s, fp32 "
          f"{gemm['fp32'] / 1e9:.0f} GFLOP/s (best of 3)", flush=True)
    results: dict = {"config": {"threads": args.threads, "cpu_flags": flags, "steps": args.steps,
                                "trl_configs": args.trl_configs, "gemm_before": gemm,
                                "our_backend": args.our_backend,
                                "our_optimizer": args.our_optimizer}}
    for part in parts:
        lengths = args.grpo_tokens if part == "grpo" else args.lengths
        for model in models:
            for length in map(int, lengths.split(",")):
                point = run_point(part, model, length, args)
                results.setdefault(part, {})[f"{model}@{length}"] = point
                if args.json:
                    write_json(Path(args.json), results)
    after = gemm_throughput(args.threads)
    results["config"]["gemm_after"] = after
    print(f"\n4096^3 matmul after the runs: bf16 {after['bf16'] / 1e9:.0f} GFLOP/s, fp32 "
          f"{after['fp32'] / 1e9:.0f} GFLOP/s")
    if args.json:
        write_json(Path(args.json), results)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
