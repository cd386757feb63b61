"""Greedy exact-answer accuracy of a model on prompt/answer data (`alignment eval`).

Generation here uses transformers' `generate` (greedy, left-padded batches sorted by
prompt length so that little padding is computed). Correctness is `reward_models`'
exact-answer checker. Results are broken down by the data's `task` column when present.

With an environment (`EvalSettings.environment`, as the recipe's `environment:` names it)
every prompt is played as a greedy multi-turn episode (`alignment.rollout.episodes`, the
HF engine on the same model) and the model's last turn is the answer checked; an episode
the environment aborted counts as wrong. The result then has an `episodes` block (mean
turns, aborted share, the environment's metrics) and the samples keep whole transcripts.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from alignment.data import load_examples, render_prompt
from alignment.models import load_tokenizer, resolve_dtype, resolve_model, stop_token_ids
from reward_models import extract_answer, is_correct


@dataclass
class EvalSettings:
    limit: int | None = None
    max_new_tokens: int = 64
    batch_size: int = 32
    dtype: str = "auto"
    chat_template: bool = True
    system_prompt: str | None = None
    samples_kept: int = 20
    environment: str | None = None          # multi-turn: the environment's name
    environment_options: dict = field(default_factory=dict)
    max_turns: int = 2
    max_episode_tokens: int = 256


def evaluate(model: str, data: str, settings: EvalSettings | None = None, *,
             loaded=None, progress: bool = False) -> dict:
    """Accuracy of `model` (name or folder) on `data`; `loaded` = (model, tokenizer) reuses
    objects already in memory (e.g. the trainer's policy)."""
    s = settings or EvalSettings()
    examples = load_examples(data, "prompt", limit=s.limit)
    if loaded is None:
        from transformers import AutoModelForCausalLM

        path = resolve_model(model)
        tokenizer = load_tokenizer(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(s.dtype))
    else:
        lm, tokenizer = loaded
    lm.eval()
    tools = None
    if s.environment is not None:   # an environment's typed functions, shown as in training
        from alignment.environments import environment_factory, tool_schemas

        schemas = tool_schemas(environment_factory(s.environment, s.environment_options)())
        tools = json.loads(schemas) if schemas else None
    prompts = [render_prompt(tokenizer, ex.prompt, chat_template=s.chat_template,
                             system_prompt=s.system_prompt, plain=ex.plain,
                             tools=ex.tools if ex.tools is not None else tools)
               for ex in examples]
    start = time.perf_counter()
    episodes = None
    if s.environment is not None:
        completions, new_tokens, episodes = play_greedy(lm, tokenizer, prompts,
                                                        [ex.extra for ex in examples], s)
    else:
        completions, new_tokens = generate_greedy(lm, tokenizer, prompts, s.max_new_tokens,
                                                  s.batch_size, progress=progress)
    seconds = time.perf_counter() - start

    per_task: dict[str, list[bool]] = defaultdict(list)
    samples = []
    for i, (ex, completion) in enumerate(zip(examples, completions, strict=True)):
        ok = is_correct(completion, ex.extra["answer"])
        per_task[str(ex.extra.get("task", "all"))].append(ok)
        if len(samples) < s.samples_kept:
            samples.append({"prompt": ex.prompt[-1]["content"], "completion": completion,
                            "answer": ex.extra["answer"], "extracted": extract_answer(completion),
                            "correct": ok})
            if episodes is not None:
                samples[-1]["transcript"] = episodes["transcripts"][i]
                samples[-1]["aborted"] = episodes["aborted"][i]
    flat = [ok for oks in per_task.values() for ok in oks]
    extra = {} if episodes is None else {"episodes": episodes["summary"]}
    return {**extra,
        "model": model,
        "data": str(data),
        "n": len(flat),
        "accuracy": sum(flat) / len(flat),
        "per_task": {t: {"n": len(v), "accuracy": sum(v) / len(v)}
                     for t, v in sorted(per_task.items())},
        "generation": {"seconds": round(seconds, 2), "new_tokens": new_tokens,
                       "tokens_per_s": round(new_tokens / max(seconds, 1e-9), 1),
                       "max_new_tokens": s.max_new_tokens, "dtype": str(lm.dtype)},
        "samples": samples,
    }


@torch.no_grad()
def generate_greedy(model, tokenizer, prompts: list[str], max_new_tokens: int,
                    batch_size: int, progress: bool = False) -> tuple[list[str], int]:
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    # every EOS the generation config lists: Llama 3, Gemma and Phi-3 end a turn with one
    # that is not the tokenizer's, and would otherwise run to max_new_tokens
    stops = stop_token_ids(tokenizer, model)
    total_new = 0
    tokenizer.padding_side = "left"  # generation continues from the right edge
    batches = range(0, len(order), batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="generating", unit="batch")
    for b in batches:
        idx = order[b:b + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
        gen = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=stops or None,
                             pad_token_id=tokenizer.pad_token_id, use_cache=True)
        new = gen[:, enc["input_ids"].shape[1]:]               # (batch, new tokens)
        for row, i in enumerate(idx):
            ids = new[row].tolist()
            end = next((k for k, t in enumerate(ids) if t in stops), None)
            if end is not None:       # (the rest of the row is padding)
                ids = ids[:end + 1]
            total_new += len(ids)
            out[i] = tokenizer.decode(ids, skip_special_tokens=True)
    return out, total_new


def play_greedy(model, tokenizer, prompts: list[str], rows: list[dict], s: EvalSettings
                ) -> tuple[list[str], int, dict]:
    """Each prompt as a greedy episode with `s.environment`: (the last turns, the tokens
    the model wrote, {"summary", "transcripts", "aborted"})."""
    from alignment.environments import environment_factory
    from alignment.rollout import SamplingParams
    from alignment.rollout.episodes import EpisodeLimits, ReplyRenderer, play_episodes
    from alignment.rollout.hf import HFEngine

    new_env = environment_factory(s.environment, dict(s.environment_options))
    engine = HFEngine(model, tokenizer, batch_size=s.batch_size)
    prompt_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    sampling = SamplingParams(temperature=0.0, max_new_tokens=s.max_new_tokens)
    first = engine.generate(prompt_ids, n=1, sampling=sampling)
    rollouts, info = play_episodes(
        engine, first, [new_env() for _ in prompts], rows=rows,
        verify=lambda i, text: float(is_correct(text, rows[i]["answer"])),
        renderer=ReplyRenderer(tokenizer, stop_token_ids(tokenizer, model)),
        sampling=sampling, limits=EpisodeLimits(s.max_turns, s.max_episode_tokens))
    answers = ["" if why else text for text, why in
               zip(rollouts.texts, info.aborted, strict=True)]
    written = sum(len(c) - r for c, r in zip(rollouts.completion_ids, info.reply_tokens,
                                             strict=True))
    n = max(len(prompts), 1)
    summary = {"environment": s.environment, "turns": sum(info.turns) / n,
               "aborted": sum(a is not None for a in info.aborted) / n}
    for key in sorted({k for m in info.metrics for k in m}):
        values = [m[key] for m in info.metrics if key in m]
        summary[key] = sum(values) / len(values)
    return answers, written, {"summary": summary, "transcripts": info.transcripts,
                              "aborted": info.aborted}


def format_table(result: dict) -> str:
    lines = [f"{'task':<12}{'n':>6}{'accuracy':>10}"]
    for task, r in result["per_task"].items():
        lines.append(f"{task:<12}{r['n']:>6}{r['accuracy']:>10.1%}")
    lines.append(f"{'overall':<12}{result['n']:>6}{result['accuracy']:>10.1%}")
    if "episodes" in result:
        e = result["episodes"]
        lines.append("episodes: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float)
                                             else f"{k} {v}" for k, v in e.items()))
    g = result["generation"]
    lines.append(f"({g['new_tokens']} tokens in {g['seconds']} s, {g['tokens_per_s']} tok/s, "
                 f"{g['dtype']})")
    return "\n".join(lines)
