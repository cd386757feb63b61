"""A recipe's peak memory, estimated at start-up from the recipe and the model's config.json
(no weights read), and the check that refuses a run the machine cannot hold.

The estimate is per training process, in bytes, the sum of these terms (P = the model's
parameters, counted from its safetensors headers; T = trained parameters: P, or the LoRA
adapters' when model.lora.r > 0, plus the critic's; b = bytes per value of the training
dtype, 2 for bfloat16, 4 for float32):

    runtime        Python, torch, transformers, tokenizers, datasets, the data as read:
                   what a process holds before any model is loaded (RUNTIME, measured)
    weights        the policy, P x b (+ LoRA adapters, fp32)
    master         AdamW's fp32 master copy of bf16 trainable weights, T x 4
                   (trainers/optim.py: MasterWeightOptimizer; none in float32, none with
                   trainer.optimizer=adamw_kahan, which steps the bf16 weights in place)
    gradients      T x 4 with a master copy (each bf16 gradient becomes an fp32 one at the
                   step), else T x b
    optimizer      AdamW's two moments, T x 8 (fp32); adamw_kahan: two bf16 moments and a
                   bf16 compensation buffer, T x 6; rmsprop one fp32 moment; sgd none.
                   LoRA adapters are fp32 (PEFT upcasts them), so they get no master copy
                   and fp32 gradients and moments
    reference      a frozen copy of π_ref, P x b, when the run keeps one: dpo/ipo/copg with
                   `reference: model` or online, GRPO with beta > 0, PPO / DR-PO with a KL
                   term, APA (anchored on π_init), and model.reference set; none with LoRA
                   (the policy with its adapters off is π_ref) or with precomputed
                   reference log-probs (the table, a few bytes per pair, replaces it)
    critic         PPO / APA / DR-PO's value model: the policy's weights with a scalar head
                   (its training state is in master / gradients / optimizer, via T)
    activations    what the backward pass keeps of the longest micro-batch's forward:
                   tokens x layers x (ACT_HIDDEN x hidden + ACT_MLP x intermediate) values
                   of b bytes (per token and layer: the two norms' inputs and outputs, q,
                   k, v before and after RoPE, the attention output; the SwiGLU's gate, up,
                   activation and product; with LoRA on a bf16 model, each adapter's input
                   again, as PEFT casts it to the adapters' fp32), doubled when a critic
                   runs on the same micro-batch (PPO-ptx's demonstration micro-batch, the
                   policy alone, when that is larger). Tokens (`micro_batch_tokens`): the
                   trainers pack rows as prefix trees where that is cheaper, so a pair
                   costs its prompt once and both completions, a group of k online samples
                   one prompt and k completions of rollout.max_new_tokens, with the
                   training data's longest rows (`data_lengths`: data.train tokenised the
                   trainer's way, into the cache the trainer then reads); the bound
                   data.max_length where the data cannot be read. With
                   model.gradient_checkpointing only each layer's input is kept, plus one
                   layer's activations recomputed at a time
    logits         the log-prob head's working set: losses/logps.py never materialises the
                   (positions, vocabulary) logits, only chunks of CHUNK_ELEMENTS values in
                   fp32 (logits, their exponentials, the gradient): a constant ~0.1 GB
    engine         online and SPIN runs with vLLM (rollout.backend vllm, or auto where it
                   is installed): the engine's own copy of the weights in the rollout dtype,
                   plus its runtime and CPU worker buffers (VLLM_RUNTIME, measured); with
                   the hf backend the engine is the policy itself (nothing added)
    kv_cache       vLLM's KV cache on CPU: rollout.kv_cache_gb, or the `auto` size
                   (rollout/kv_cache.py: the largest generate call's sequences x tokens x
                   the model's KV bytes per token, x 1.25)

The terms are summed although they do not all peak at once (the fp32 gradients of the
step exist after the activations are freed): on the shipped recipes that overlap is within
the error. Two constants are measured (RUNTIME, VLLM_RUNTIME: fitted on every shipped
recipe's peak RSS, bench/memory_estimate.py, bench/RESULTS.md); the rest is counted from
the code.

Several processes (launch.num_processes > 1): the estimate is per process, each holding
all of the above (DDP replicates; ZeRO / FSDP shard weights and optimizer state, which
this estimate does not model: an upper bound there), and the processes on one machine must
fit together: `memory_check.check_memory` compares estimate x processes per machine
with the machine.
The check is for host memory: on a CUDA machine the model lives in GPU memory and the
check is skipped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from alignment.config import Recipe
from alignment.config.schema import (
    CRITIC,
    PAIRS_ONLINE,
    completion_budget,
    is_online,
    uses_rollout,
)

GB = 1e9


# --- measured: fitted on the shipped recipes' peak RSS (bench/RESULTS.md) ---
RUNTIME = 0.5e9          # a process before the model: interpreter, torch, transformers,
                         # tokenizer, data (0.47 GB measured right after those imports)
VLLM_RUNTIME = 0.6e9     # vLLM imported (0.14 GB) and its CPU engine's buffers, without the
                         # weights and the KV cache
# --- counted from the code ---
ACT_HIDDEN = 10          # values of width hidden_size kept per token and layer for backward
ACT_MLP = 4              # values of width intermediate_size kept per token and layer
CHUNK_ELEMENTS = 1 << 23   # losses/logps.py: logits held at once by the fused head
LOGIT_COPIES = 3           # chunk logits, their exponentials, the gradient (fp32 each)


@dataclass
class MemoryEstimate:
    """Peak memory of one training process, by term, in bytes (see the module docstring)."""

    runtime: int = 0
    weights: int = 0
    master: int = 0
    gradients: int = 0
    optimizer: int = 0
    reference: int = 0
    critic: int = 0
    activations: int = 0
    logits: int = 0
    engine: int = 0
    kv_cache: int = 0
    processes: int = 1          # training processes on this machine
    parameters: int = 0         # P
    trained: int = 0            # T

    def terms(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("processes", "parameters", "trained")}

    @property
    def total(self) -> int:
        """One process's peak."""
        return sum(self.terms().values())

    @property
    def machine_total(self) -> int:
        """All of this machine's processes."""
        return self.total * self.processes

    def lines(self) -> list[str]:
        rows = [f"  {name:<12} {_gb(value):>9}" for name, value in self.terms().items() if value]
        rows.append(f"  {'total':<12} {_gb(self.total):>9}"
                    + (f" per process, x {self.processes} = {_gb(self.machine_total)}"
                       if self.processes > 1 else ""))
        return rows

    def table(self) -> str:
        return "\n".join(self.lines())

    def one_line(self) -> str:
        big = sorted(((v, k) for k, v in self.terms().items() if v), reverse=True)[:5]
        per = f" per process x {self.processes}" if self.processes > 1 else ""
        return (f"estimated peak memory {_gb(self.total)}{per} ("
                + ", ".join(f"{k} {_gb(v)}" for v, k in big) + ")")


# ---------------------------------------------------------------------------- estimate
def estimate_memory(recipe: Recipe, *, lengths: DataLengths | None = None,
                    processes: int | None = None) -> MemoryEstimate:
    """The recipe's peak memory per process (module docstring). `lengths`: the training
    data's longest rows (`data_lengths`); None = the bounds data.max_length and
    data.max_prompt_length. The model must be a local folder (or the bundled model,
    converted): a ValueError otherwise."""
    from alignment.preflight import model_folder, parameter_count

    folder = model_folder(recipe.model.name)
    params = parameter_count(recipe.model.name)
    if folder is None or params is None:
        raise ValueError(f"model.name: '{recipe.model.name}' is not a local model folder")
    config = json.loads((folder / "config.json").read_text())
    config = config.get("text_config", config)
    hidden = config["hidden_size"]
    layers = config["num_hidden_layers"]
    inter = config.get("intermediate_size") or 4 * hidden
    vocab = config["vocab_size"]
    b = _dtype_bytes(recipe.model.dtype)
    algo = recipe.algorithm
    critic = algo in CRITIC
    head = 0 if config.get("tie_word_embeddings", True) else vocab * hidden
    critic_params = params - head + hidden if critic else 0   # no LM head, a scalar one

    lora = recipe.model.lora
    policy_trained = _lora_params(config, lora.r, lora.target_modules) if lora.r else params
    critic_trained = (_lora_params(config, recipe.critic.lora.r, recipe.critic.lora.target_modules)
                      if recipe.critic.lora.r else critic_params) if critic else 0
    est = MemoryEstimate(runtime=int(RUNTIME), parameters=params,
                         trained=policy_trained + critic_trained,
                         processes=processes or _processes(recipe))
    est.critic = critic_params * b
    # trained parameters in the model's dtype (full fine-tuning) and in fp32 (LoRA
    # adapters: PEFT upcasts them)
    low = fp32 = 0
    for n, is_lora in ((policy_trained, lora.r > 0), (critic_trained, recipe.critic.lora.r > 0)):
        if is_lora:
            fp32 += n
        else:
            low += n
    est.weights = params * b + fp32 * 4          # (+ the LoRA adapters, fp32)
    optimizer = recipe.trainer.optimizer
    master = b < 4 and optimizer != "adamw_kahan"
    est.master = low * 4 if master else 0
    est.gradients = (low * (4 if master else b)) + fp32 * 4
    if optimizer == "adamw":
        est.optimizer = (low + fp32) * 8
    elif optimizer == "adamw_kahan":
        est.optimizer = low * (6 if b < 4 else 8) + fp32 * 8
    elif optimizer == "rmsprop":
        est.optimizer = (low + fp32) * 4
    if _keeps_reference(recipe):
        est.reference = params * b

    tokens = micro_batch_tokens(recipe, lengths)
    per_layer = (ACT_HIDDEN * hidden + ACT_MLP * inter) * b      # bytes per token
    if lora.r:   # each adapter keeps its input, cast to the adapters' fp32 (a copy in bf16)
        per_layer += _lora_inputs(config, lora.r, lora.target_modules, b)
    if recipe.model.gradient_checkpointing:
        per_token = layers * hidden * b + per_layer               # layer inputs + one layer
    else:
        per_token = layers * per_layer
    est.activations = tokens * per_token * (2 if critic else 1)
    section = getattr(recipe, algo, None)
    if critic and section.ptx_coef > 0:   # PPO-ptx: its own micro-batch, the policy alone
        ptx_rows = section.ptx_batch_size or recipe.trainer.batch_size
        est.activations = max(est.activations, ptx_rows * recipe.data.max_length * per_token)
    est.logits = min(CHUNK_ELEMENTS, tokens * vocab) * 4 * LOGIT_COPIES

    if uses_rollout(recipe) and _backend(recipe) == "vllm":
        engine_b = b if recipe.rollout.dtype == "auto" else _dtype_bytes(recipe.rollout.dtype)
        est.engine = int(VLLM_RUNTIME) + params * engine_b
        est.kv_cache = kv_cache_bytes(recipe, folder, engine_b)
    return est


@dataclass(frozen=True)
class DataLengths:
    """The training rows' longest parts, in tokens as the trainer tokenises them."""

    prompt: int          # the longest prompt
    row: int             # the longest prompt + completion (prompt data: = prompt)
    completion: int      # the longest completion (prompt data: 0)


def data_lengths(recipe: Recipe) -> DataLengths | None:
    """data.train tokenised the trainer's way (`alignment.data.prepare`, the same cache:
    the trainer then reads it instead of tokenising again); None when that fails (the
    model has no tokenizer, the data cannot be read: the run will say why)."""
    from alignment.data.prepare import PREFIX, TokenizeSettings, tokenize_source
    from alignment.models import load_tokenizer
    from alignment.preflight import model_folder

    folder = model_folder(recipe.model.name)
    if folder is None:   # not local yet (the bundled model unconverted): never the hub
        return None
    try:
        tokenizer = load_tokenizer(str(folder))
        d = recipe.data
        online = is_online(recipe)
        kind = ("prompt" if online else "sft" if recipe.algorithm in ("sft", "spin")
                else "preference")
        settings = TokenizeSettings(d.max_length, d.max_prompt_length, d.too_long,
                                    d.chat_template, d.system_prompt)
        rows = tokenize_source(tokenizer, d.train, kind, settings, limit=d.train_limit,
                               role="train", answer_column=None if kind == "prompt" else "answer")
        if not len(rows):
            return None
        totals = rows.lengths
        prompts = [len(x) for x in rows.table[PREFIX + "prompt"]]
    except Exception:   # (an estimate: the bounds then)
        return None
    return DataLengths(prompt=max(prompts), row=max(totals),
                       completion=max(t - p for t, p in zip(totals, prompts, strict=True)))


def micro_batch_tokens(recipe: Recipe, lengths: DataLengths | None = None) -> int:
    """Tokens of the longest training micro-batch. The trainers pack rows as prefix trees
    where that is cheaper (trainers/sequences.py): a shared prompt is computed once and
    nothing is padded, so a pair costs prompt + both completions, and a group of k online
    samples one prompt + k completions; batches are sorted by length, so the longest
    micro-batch's rows are all about the longest row. Without `lengths`, the padded
    bound: every row data.max_length (online: max_prompt_length + max_new_tokens)."""
    d, algo = recipe.data, recipe.algorithm
    batch = recipe.trainer.batch_size
    if is_online(recipe):
        section = getattr(recipe, algo)
        k = getattr(section, "samples_per_prompt", None) or section.num_generations
        rows = min(batch, section.prompts_per_step * k)
        new = completion_budget(recipe)   # a multi-turn episode: all of its turns
        if lengths is None:
            return rows * min(d.max_length, d.max_prompt_length + new)
        return rows * new + math.ceil(rows / k) * lengths.prompt
    if algo == "sft":
        return batch * (lengths.row if lengths else d.max_length)
    if lengths is None:
        return 2 * batch * d.max_length          # pairs: chosen and rejected rows
    second = (min(recipe.rollout.max_new_tokens, d.max_length - lengths.prompt)
              if algo == "spin" else lengths.completion)   # SPIN: its own generation
    return batch * (lengths.row + second)


def kv_cache_bytes(recipe: Recipe, folder: Path, dtype_bytes: int) -> int:
    """rollout.kv_cache_gb, or the engine's `auto` size (trainers/engine_setup.py)."""
    from alignment.rollout.kv_cache import GIB, MAX_NUM_SEQS, model_kv_cache

    r, d = recipe.rollout, recipe.data
    if r.kv_cache_gb != "auto":
        return int(float(r.kv_cache_gb) * GIB)
    world = max(1, _world(recipe))
    if recipe.algorithm == "spin":     # an iteration generates for every demonstration
        sequences = math.ceil((d.train_limit or MAX_NUM_SEQS) / world)
    else:
        section = getattr(recipe, recipe.algorithm)
        per_prompt = getattr(section, "samples_per_prompt", None) or section.num_generations
        sequences = section.prompts_per_step * per_prompt
    new = completion_budget(recipe)    # a multi-turn episode: all of its turns
    episodic = new != r.max_new_tokens
    calls = [(sequences, d.max_prompt_length + new)]
    if d.eval is not None:             # the engine's greedy eval of data.eval (episodes too)
        calls.append((math.ceil((d.eval_limit or MAX_NUM_SEQS) / world),
                      d.max_prompt_length + max(recipe.eval.max_new_tokens,
                                                new if episodic else 0)))
    longest = d.max_prompt_length + max(new, recipe.eval.max_new_tokens) + 8
    dtype = {2: "bfloat16", 4: "float32"}.get(dtype_bytes, "float32")
    return int(model_kv_cache(str(folder), dtype, calls, longest).gib * GIB)


def _keeps_reference(recipe: Recipe) -> bool:
    """Does training keep a frozen π_ref copy in memory (module docstring, `reference`)?"""
    algo = recipe.algorithm
    if algo in PAIRS_ONLINE:   # precomputed: a separate π_ref is freed before the first step
        section = getattr(recipe, algo)
        needs = section.online or section.reference == "model"
    elif algo == "grpo":
        needs = recipe.grpo.beta > 0 or recipe.environment.first_turn_kl > 0
    elif algo in CRITIC:
        s = getattr(recipe, algo)
        needs = s.kl_coef > 0 or s.kl_target is not None or algo == "apa"
    else:                      # sft, reward_model; SPIN's opponent is a precomputed table
        needs = False
    # with LoRA, π_ref is the policy with its adapters off, unless model.reference is set
    return needs and (recipe.model.lora.r == 0 or recipe.model.reference is not None)


def _lora_params(config: dict, r: int, targets: list[str]) -> int:
    """LoRA adapter parameters: r x (in + out) per adapted linear layer."""
    h = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or heads
    hd = config.get("head_dim") or h // heads
    inter = config.get("intermediate_size") or 4 * h
    shapes = {"q_proj": (h, heads * hd), "k_proj": (h, kv * hd), "v_proj": (h, kv * hd),
              "o_proj": (heads * hd, h), "gate_proj": (h, inter), "up_proj": (h, inter),
              "down_proj": (inter, h)}
    return config["num_hidden_layers"] * sum(r * sum(shapes[t]) for t in targets
                                             if t in shapes)


def _lora_inputs(config: dict, r: int, targets: list[str], b: int) -> int:
    """Bytes per token and layer the LoRA adapters keep for backward: each adapter's input
    cast to fp32 (PEFT casts it per module: q, k and v each make their own copy; no copy
    when the model is fp32 already) and its rank-r middle."""
    h = config["hidden_size"]
    inter = config.get("intermediate_size") or 4 * h
    inputs = {"q_proj": h, "k_proj": h, "v_proj": h, "o_proj": h, "gate_proj": h,
              "up_proj": h, "down_proj": inter}
    adapted = [t for t in targets if t in inputs]
    return sum(inputs[t] for t in adapted) * 4 * (b < 4) + len(adapted) * r * 4


def _dtype_bytes(name: str) -> int:
    from alignment.models import resolve_dtype

    return resolve_dtype(name).itemsize


def _backend(recipe: Recipe) -> str:
    if recipe.rollout.backend != "auto":
        return recipe.rollout.backend
    from alignment.rollout import vllm_available

    return "vllm" if vllm_available() else "hf"


def _world(recipe: Recipe) -> int:
    try:
        from alignment.launch import plan

        return plan(recipe).num_processes
    except Exception:   # (a bad launch section is the launcher's to report)
        return recipe.launch.num_processes or 1


def _processes(recipe: Recipe) -> int:
    """Training processes on this machine."""
    try:
        from alignment.launch import plan

        return plan(recipe).per_machine
    except Exception:
        return recipe.launch.num_processes or 1


# ---------------------------------------------------------------------------- the machine
def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB" if abs(n) >= 1e8 else f"{n / 1e6:.0f} MB"
