"""What every rollout backend takes and returns.

`Rollouts` is ragged (one list per sample) and converts to padded tensors with masks in
the layout the trainers consume (`padded()`). Samples are ordered prompt by prompt: the n
samples of prompt 0, then those of prompt 1, ... (`prompt_index` says which is which),
which is the group layout GRPO's advantages expect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0                 # 0 = no top-k
    max_new_tokens: int = 64
    seed: int | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def sample_seed(prompt_seed: int, k: int) -> int:
    """The random stream of sample k of a prompt seeded `prompt_seed` (63-bit)."""
    return (prompt_seed * 1_000_003 + k) % (1 << 63)


def check_request(prompts: list[list[int]], n: int, prefixes: list[list[int]] | None,
                  seeds: list[int] | None = None) -> list[list[int]]:
    """Validate a generate() call; return one (possibly empty) prefix per prompt."""
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    if n < 1:
        raise ValueError(f"n (samples per prompt) must be >= 1, got {n}")
    if any(not p for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if prefixes is None:
        return [[] for _ in prompts]
    if len(prefixes) != len(prompts):
        raise ValueError(f"{len(prefixes)} prefixes for {len(prompts)} prompts")
    return [list(p) for p in prefixes]


@dataclass
class Rollouts:
    prompt_ids: list[list[int]]            # one per prompt
    completion_ids: list[list[int]]        # one per sample (forced prefix included)
    logprobs: list[list[float]]            # sampling log-prob of each completion token
    texts: list[str]                       # decoded completions (special tokens removed)
    finish_reasons: list[str]              # "stop" (EOS) or "length" (budget reached)
    prompt_index: list[int]                # which prompt each sample continues
    forced: list[list[bool]] = field(default_factory=list)   # True on prefix tokens

    def __len__(self) -> int:
        return len(self.completion_ids)

    def padded(self, pad_id: int) -> dict[str, torch.Tensor]:
        """(samples, T) completion ids / sampling log-probs, `completion_mask` on real
        tokens, `forced_mask` on prefix tokens (excluded from policy losses, DR-PO)."""
        n = len(self)
        width = max(1, max((len(c) for c in self.completion_ids), default=1))
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        logps = torch.zeros((n, width), dtype=torch.float32)
        mask = torch.zeros((n, width), dtype=torch.bool)
        forced = torch.zeros((n, width), dtype=torch.bool)
        for i, (c, lp) in enumerate(zip(self.completion_ids, self.logprobs, strict=True)):
            ids[i, :len(c)] = torch.tensor(c, dtype=torch.long)
            logps[i, :len(lp)] = torch.tensor(lp, dtype=torch.float32)
            mask[i, :len(c)] = True
            if self.forced and self.forced[i]:
                forced[i, :len(self.forced[i])] = torch.tensor(self.forced[i])
        return {"completion_ids": ids, "sampling_logps": logps, "completion_mask": mask,
                "forced_mask": forced,
                "prompt_index": torch.tensor(self.prompt_index, dtype=torch.long)}
