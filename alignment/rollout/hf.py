"""The `hf` rollout backend: transformers' `generate` on the trainer's own model.

It shares the trainer's weights (so `sync_weights` has nothing to copy, only to check),
is available everywhere, and is the correctness oracle for the vLLM backend.

Sampling log-probs are those of the distribution actually sampled from (logits divided by
the temperature, after top-k/top-p filtering), read from `generate`'s processed scores.
With `seeds` (one per prompt), sample k of prompt i is drawn from its own random stream
(Gumbel-max: argmax of log p + Gumbel noise from a generator seeded by (seed, k)), so it is
the same whichever batch or process it is generated in: a run on 2 processes samples
exactly what the same run on 1 process samples.

Generation stops at any of the model's EOS ids (`alignment.models.stop_token_ids`), which
ends the completion (finish reason "stop").

With `prefixes`, each sample's response starts with forced tokens (DR-PO's dataset
reset): they are fed as part of the input, returned at the head of the completion with
`forced=True`, and their log-probs are the model's own log-probs of those tokens.
"""

from __future__ import annotations

import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from alignment.model_logps import forward_hidden, labels_logps
from alignment.models import stop_token_ids
from alignment.rollout.sync_check import SyncCheck, default_tolerance
from alignment.rollout.types import Rollouts, SamplingParams, check_request, sample_seed


class HFEngine:
    backend = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 64, synced: bool = False,
                 probe_tolerance: float | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # ZeRO-3 (weights sharded over processes): every forward gathers from all of them,
        # so all processes decode in lockstep until the last one is done
        self.synced = synced
        # every EOS the model's generation config lists, not only the tokenizer's (Llama 3,
        # Gemma, Phi-3 end a turn with a token only the generation config names)
        self.stop_ids = stop_token_ids(tokenizer, model)
        self.eos_id = self.stop_ids[0] if self.stop_ids else None
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        dtype = next(model.parameters()).dtype
        self.sync_check = SyncCheck(tokenizer, probe_tolerance or default_tolerance(dtype))

    def sync_weights(self, model) -> float:
        """Same weights by construction: nothing to copy; verified all the same, as every
        backend is (a probe forward, milliseconds); return the seconds taken."""
        start = time.perf_counter()
        if model is not self.model:
            self.model = model
        self.verify(model)
        return time.perf_counter() - start

    def verify(self, model) -> float:
        """Raise StaleWeightsError unless this engine samples from `model`'s weights."""
        return self.sync_check.verify(self.probe_logps(), model)

    def probe_logps(self) -> torch.Tensor:
        return self.sync_check.trainer_logps(self.model)

    @property
    def last_probe_gap(self) -> float | None:
        return self.sync_check.last_gap

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], n: int = 1,
                 sampling: SamplingParams | None = None,
                 prefixes: list[list[int]] | None = None,
                 seeds: list[int] | None = None) -> Rollouts:
        sampling = sampling or SamplingParams()
        prefixes = check_request(prompts, n, prefixes, seeds)
        was_training = self.model.training
        use_cache = self.model.config.use_cache
        self.model.eval()
        self.model.config.use_cache = True
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        # one entry per sample, prompt by prompt
        jobs = [(i, prompts[i], prefixes[i], None if seeds is None else sample_seed(seeds[i], k))
                for i in range(len(prompts)) for k in range(n)]
        completions, logprobs, reasons, forced = [], [], [], []
        for start in range(0, len(jobs), self.batch_size):
            c, lp, r, f = self._generate_batch(jobs[start:start + self.batch_size], sampling)
            completions += c
            logprobs += lp
            reasons += r
            forced += f
        self.model.train(was_training)
        self.model.config.use_cache = use_cache
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        return Rollouts(prompt_ids=[list(p) for p in prompts], completion_ids=completions,
                        logprobs=logprobs, texts=texts, finish_reasons=reasons,
                        prompt_index=[j[0] for j in jobs], forced=forced)

    def _generate_batch(self, jobs, sampling: SamplingParams):
        device = next(self.model.parameters()).device
        inputs = [p + pre for _, p, pre, _ in jobs]
        width = max(len(x) for x in inputs)
        ids = torch.full((len(inputs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, x in enumerate(inputs):              # left padding: generation continues
            ids[row, width - len(x):] = torch.tensor(x)  # from the right edge
            mask[row, width - len(x):] = 1
        ids, mask = ids.to(device), mask.to(device)
        kwargs = {"do_sample": not sampling.greedy, "max_new_tokens": sampling.max_new_tokens,
                  "eos_token_id": self.stop_ids, "pad_token_id": self.pad_id,
                  "return_dict_in_generate": True, "output_scores": True,
                  "synced_gpus": self.synced}
        seeded = None
        if sampling.greedy:
            pass
        elif jobs[0][3] is not None:   # per-sample streams: greedy decoding of log p + noise
            seeded = SeededSampler([j[3] for j in jobs], sampling)
            kwargs.update(do_sample=False, output_scores=False,
                          logits_processor=LogitsProcessorList(seeded.processors))
        else:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p,
                          top_k=sampling.top_k or None)
        out = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        new = out.sequences[:, width:]                                     # (B, T)
        if seeded is not None:
            sampled = seeded.sampled_logps(new)
        else:
            scores = torch.stack(out.scores, dim=1).float().log_softmax(-1)  # (B, T, V)
            sampled = scores.gather(-1, new[..., None]).squeeze(-1)          # (B, T)
        forced_lp = self._prefix_logps(ids, mask, jobs)
        completions, logprobs, reasons, forced = [], [], [], []
        for row, (_, _, prefix, _) in enumerate(jobs):
            tokens = new[row].tolist()
            lps = sampled[row].tolist()
            cut = next((k + 1 for k, t in enumerate(tokens) if t in self.stop_ids), None)
            if cut is not None:
                tokens, lps, reason = tokens[:cut], lps[:cut], "stop"
            else:
                reason = "length"
            completions.append(list(prefix) + tokens)
            logprobs.append(forced_lp[row] + lps)
            reasons.append(reason)
            forced.append([True] * len(prefix) + [False] * len(tokens))
        return completions, logprobs, reasons, forced

    def _prefix_logps(self, ids, mask, jobs) -> list[list[float]]:
        """log π of each forced prefix token under the (unfiltered) model distribution."""
        lengths = [len(pre) for _, _, pre, _ in jobs]
        if not any(lengths):
            return [[] for _ in jobs]
        longest = max(lengths)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        _, hidden = forward_hidden(self.model, input_ids=ids, attention_mask=mask,
                                   position_ids=position_ids)
        # hidden state j predicts token j + 1: the last `longest` input tokens
        picked = labels_logps(self.model, hidden[:, -longest - 1:-1], ids[:, -longest:])
        return [picked[row, longest - k:].tolist() if k else [] for row, k in enumerate(lengths)]


class SeededSampler(LogitsProcessor):
    """Sampling with one random stream per row, by the Gumbel-max trick: the argmax of
    log p + g, with g = -log(-log u) and u uniform, is a sample from p. Row r draws its u
    from its own generator, so its tokens do not depend on the other rows of the batch.

    `processors` is what `generate(do_sample=False)` runs: temperature, top-k, top-p (the
    distribution sampled from), then this. The log-prob of each sampled token under that
    distribution is picked up one step later, when the token shows up in `input_ids`."""

    def __init__(self, seeds: list[int], sampling: SamplingParams):
        self.seeds = seeds
        self.generators: list[torch.Generator] | None = None
        self.picked: list[torch.Tensor] = []
        self.last: torch.Tensor | None = None
        warpers = [TemperatureLogitsWarper(sampling.temperature)]
        if sampling.top_k:
            warpers.append(TopKLogitsWarper(sampling.top_k))
        if sampling.top_p < 1.0:
            warpers.append(TopPLogitsWarper(sampling.top_p))
        self.processors = [*warpers, self]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logps = scores.float().log_softmax(-1)
        if self.last is not None:           # the token chosen at the previous step
            self.picked.append(self.last.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.last = logps
        if self.generators is None:
            self.generators = [torch.Generator(device=scores.device).manual_seed(s)
                               for s in self.seeds]
        vocab = scores.shape[-1]
        u = torch.stack([torch.rand(vocab, generator=g, device=scores.device)
                         for g in self.generators])
        return logps - torch.log(-torch.log(u))   # u = 0 gives -inf: never picked

    def sampled_logps(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) log-probs of the generated tokens (T = generate's new tokens)."""
        picked = [*self.picked, self.last.gather(-1, new_tokens[:, -1:]).squeeze(-1)]
        return torch.stack(picked, dim=1)
