"""The rollout engine, set up in one place for every trainer that generates (the online
loop, and SPIN's generation phases): backend choice, sampling settings, vLLM options."""

from __future__ import annotations

import time

from alignment.rollout import SamplingParams, make_engine, vllm_available


class EngineSetup:
    """Mixin for `Trainer`s: `start_engine()` sets `self.engine`, `self.sampling` and
    `self.pad_id` from the recipe's `rollout:` section."""

    def start_engine(self) -> None:
        r = self.recipe.rollout
        self.pad_id = (self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                       else self.tokenizer.eos_token_id)
        self.sampling = SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                       max_new_tokens=r.max_new_tokens)
        backend = r.backend
        if backend == "auto":
            backend = "vllm" if vllm_available() else "hf"
        t0 = time.perf_counter()
        options = (self._vllm_options() if backend == "vllm"
                   else {"synced": self.zero_stage == 3})   # ZeRO-3: decode in lockstep
        self.engine = make_engine(backend, model=self.policy, tokenizer=self.tokenizer,
                                  model_path=str(self.model_path), **options)
        self._say(f"rollout engine: {self.engine.backend} ({time.perf_counter() - t0:.1f} s "
                  "to start)")

    def _vllm_options(self) -> dict:
        r = self.recipe.rollout
        longest = self.recipe.data.max_prompt_length + max(r.max_new_tokens,
                                                           self.recipe.eval.max_new_tokens)
        return {"dtype": r.dtype if r.dtype != "auto" else str(self.dtype).removeprefix("torch."),
                "kv_cache_gb": r.kv_cache_gb, "gpu_memory_utilization": r.gpu_memory_utilization,
                "max_model_len": longest + 8, "seed": self.cfg.seed + self.rank}
