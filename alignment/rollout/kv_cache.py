"""The vLLM engine's KV cache sized from the recipe (`rollout.kv_cache_gb: auto`).

A run's engine has to hold the keys and values of every sequence of its largest generate
call at once (a step's prompts x samples per prompt, or an eval pass); more is idle memory,
less makes vLLM queue sequences and decode them in several rounds. Per token that is

    2 (K and V) x num_hidden_layers x num_key_value_heads x head_dim x dtype bytes

(SmolLM2-135M in bf16: 2 x 30 x 3 x 64 x 2 = 23,040 bytes). vLLM stores tokens in blocks
(128 tokens on CPU), so a sequence takes whole blocks; 25% more leaves room for what this
count does not see.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

GIB = 1 << 30
MARGIN = 1.25
CPU_BLOCK_TOKENS = 128   # vLLM's block size on CPU (its `cache_config.block_size`)
MAX_NUM_SEQS = 256       # vLLM's default max_num_seqs on CPU: more sequences wait anyway
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}


@dataclass(frozen=True)
class KVCacheSize:
    """The KV cache an engine gets, and what it was sized for (`auto`)."""

    gib: float
    sequences: int = 0          # sequences decoded at once
    tokens: int = 0             # tokens of each (prompt + completion)
    auto: bool = False

    def __str__(self) -> str:
        if not self.auto:
            return f"{self.gib:.2f} GiB (rollout.kv_cache_gb)"
        return f"{self.gib:.2f} GiB for {self.sequences} sequences × {self.tokens} tokens (auto)"


def kv_bytes_per_token(config: dict, dtype: str) -> int:
    """Bytes of keys and values one token takes over all layers, from a config.json."""
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return 2 * config["num_hidden_layers"] * kv_heads * head_dim * DTYPE_BYTES[dtype]


def auto_kv_cache(per_token: int, generations: list[tuple[int, int]], *, max_model_len: int,
                  block_tokens: int = CPU_BLOCK_TOKENS, margin: float = MARGIN) -> KVCacheSize:
    """The cache for the largest of `generations`, each (sequences at once, tokens per
    sequence): whole blocks per sequence, times `margin`, rounded up to whole blocks, and
    never less than one sequence of `max_model_len` (vLLM refuses to start without it)."""
    def blocks(tokens: int) -> int:
        return math.ceil(tokens / block_tokens)

    sequences, tokens = max(((min(n, MAX_NUM_SEQS), min(t, max_model_len))
                             for n, t in generations), key=lambda g: g[0] * blocks(g[1]))
    total = max(math.ceil(margin * sequences * blocks(tokens)), blocks(max_model_len))
    return KVCacheSize(total * block_tokens * per_token / GIB, sequences, tokens, auto=True)


def model_kv_cache(model_path: str, dtype: str, generations: list[tuple[int, int]],
                   max_model_len: int) -> KVCacheSize:
    """`auto_kv_cache` for the model in `model_path` (its config.json) in `dtype`."""
    config = json.loads((Path(model_path) / "config.json").read_text())
    config = config.get("text_config", config)   # (multimodal configs nest the LM's)
    return auto_kv_cache(kv_bytes_per_token(config, dtype), generations,
                         max_model_len=max_model_len)
