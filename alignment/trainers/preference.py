"""What DPO-family trainers share: pairs, reference log-probs, one forward per step.

A subclass names its loss (`preference_loss`) and whether sequence log-probs are summed
or averaged over tokens; everything else (data, the reference, batching) lives here.

The reference policy π_ref is the model at initialisation (or `model.reference`). Its
log-probs are either
  precompute  computed once for every train/eval pair before the first step (one batched
              no-grad pass, cached in output_dir/reference_logps.pt for resumed runs,
              keyed by the tokenised pairs and the reference model's files);
  model       recomputed at every step by a frozen copy, or, with LoRA, by the same model
              with its adapters disabled (no second copy in memory).
"""

from __future__ import annotations

import abc
import hashlib
import json
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignment import disk
from alignment.data.prepare import MappedRows
from alignment.models import resolve_model
from alignment.trainers import batching
from alignment.trainers.base import Trainer
from alignment.trainers.sequences import attention_width, collate_preference, pair_logps


@dataclass
class Pair:
    index: int
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    where: str
    row: dict = field(default_factory=dict)          # the row's other columns
    rewards: tuple[float, float] | None = None       # CoPG: a scalar reward per completion
    raw_prompt: Any = None                           # the prompt as scorers see it


class PairData:
    """Preference pairs as training examples (shared with the reward-model trainer)."""

    def load_examples(self, path, limit: int | None, split: str) -> MappedRows:
        """The pairs of `path`, kept in Arrow; each a `Pair` when a batch asks for it."""
        rows = self.read_data(path, "preference", limit, split)
        return MappedRows(rows, lambda i, t: Pair(
            i, t.prompt_ids, t.completion_ids["chosen"], t.completion_ids["rejected"], t.where,
            dict(t.extra), raw_prompt=t.raw_prompt))

    def example_length(self, pair: Pair) -> int:
        return len(pair.prompt_ids) + max(len(pair.chosen_ids), len(pair.rejected_ids))

    def batch_weight(self, batch: dict) -> float:
        return batch["n_pairs"]


class ReferenceLogps:
    """π_ref's sequence log-probs of a batch of pairs, recomputed at each step: by a frozen
    copy, or, with LoRA, by the policy with its adapters disabled (no second copy)."""

    average_logps = False   # True: per-token mean log-probs (IPO's TRL convention)

    def _needs_reference_copy(self) -> bool:
        """A LoRA policy with its adapters off IS the initial policy: no copy needed."""
        return self.recipe.model.reference is not None or not self.uses_lora

    def _load_reference_copy(self) -> None:
        self._ref_model = self.load_frozen(self.recipe.model.reference or self.recipe.model.name)

    @torch.no_grad()
    def _reference_logps(self, batch: dict) -> torch.Tensor:
        if not hasattr(self, "_ref_model") and self._needs_reference_copy():
            self._load_reference_copy()       # first use (e.g. an eval before training)
        if not hasattr(self, "_ref_model"):
            with self.policy.disable_adapter():
                return pair_logps(self.policy, batch, average=self.average_logps)
        return pair_logps(self._ref_model, batch, average=self.average_logps)


class PreferenceTrainer(ReferenceLogps, PairData, Trainer):
    layout = "auto"         # `collate_preference`'s: pair rows or prefix trees per batch

    @property
    @abc.abstractmethod
    def reference_mode(self) -> str:
        """'precompute' or 'model' (see the module docstring)."""

    @abc.abstractmethod
    def preference_loss(self, policy_chosen, policy_rejected, ref_chosen, ref_rejected, batch):
        """The algorithm's loss on (B,) sequence log-probs: (loss, metrics)."""

    # ------------------------------------------------------------------ data
    def collate(self, pairs: list[Pair], split: str = "train") -> dict:
        batch = self._collate_pairs(pairs)
        if self.reference_mode == "precompute":
            table = self._ref_table[split]                      # (N, 2): chosen, rejected
            idx = torch.tensor([p.index for p in pairs])
            batch["ref_logps"] = torch.cat([table[idx, 0], table[idx, 1]])   # (2B,)
        if pairs[0].rewards is not None:
            batch["pair_rewards"] = torch.tensor([p.rewards for p in pairs], dtype=torch.float64)
        return batch

    def _collate_pairs(self, pairs: list[Pair]) -> dict:
        """Rows of pairs or prefix trees, whichever the cost rule predicts cheaper."""
        return collate_preference([p.prompt_ids for p in pairs], [p.chosen_ids for p in pairs],
                                  [p.rejected_ids for p in pairs], self.tokenizer.pad_token_id,
                                  layout=self.layout, width0=attention_width(self.policy.config))

    # ------------------------------------------------------------------ the loss
    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        n = batch["n_pairs"]
        logps = pair_logps(self.model, batch, average=self.average_logps)   # (2B,)
        if "ref_logps" in batch:
            ref = batch["ref_logps"].to(logps.device)
        else:
            ref = self._reference_logps(batch)
        return self.preference_loss(logps[:n], logps[n:], ref[:n], ref[n:], batch)

    # ------------------------------------------------------------------ reference
    def before_training(self) -> None:
        if self.reference_mode == "precompute":
            self._ref_table = self._precomputed_reference()
        elif self._needs_reference_copy():
            self._load_reference_copy()

    def _precomputed_reference(self) -> dict[str, torch.Tensor]:
        cache = self.output_dir / "reference_logps.pt"
        key = self._reference_key()
        if cache.is_file():
            saved = torch.load(cache, weights_only=True)
            if saved.get("key") == key:
                return {"train": saved["train"], "eval": saved["eval"]}
        if self.recipe.model.reference is not None or (self.step > 0 and not self.uses_lora):
            # a separate π_ref, or resumed without a cache (the policy has moved)
            self._load_reference_copy()
        self._say(f"computing reference log-probs for {len(self.train_set)} + "
                  f"{len(self.eval_set)} pairs (once) ...")
        tables = {"train": self._reference_table(self.train_set),
                  "eval": self._reference_table(self.eval_set)}
        self.__dict__.pop("_ref_model", None)
        if self.is_main:
            cache.parent.mkdir(parents=True, exist_ok=True)
            disk.save_torch({"key": key, **tables}, cache, "the reference log-prob cache")
        return tables

    @torch.no_grad()
    def _reference_table(self, pairs: list[Pair]) -> torch.Tensor:
        """(N, 2) reference log-probs; each process computes a share, then all gather."""
        table = torch.zeros(len(pairs), 2, dtype=torch.float64)   # sums of ~100s of logps
        if not pairs:
            return table
        self.model.eval()
        lengths = [self.example_length(p) for p in pairs]
        size = max(self.cfg.batch_size, 16)
        for idx, counted in self.eval_share(batching.eval_batches(lengths, size)):
            chunk = [pairs[i] for i in idx]
            batch = self._collate_pairs(chunk)
            logps = self._table_logps(batch).double().cpu()
            if not counted:   # a repeated batch that only keeps ZeRO-3 processes in step
                continue
            table[idx, 0] = logps[:len(idx)]
            table[idx, 1] = logps[len(idx):]
        self.model.train()
        if self.world > 1:  # shares are disjoint and zero elsewhere: a sum gathers them
            table = self.accelerator.reduce(table.to(self.accelerator.device), "sum").cpu()
        return table

    def _table_logps(self, batch: dict) -> torch.Tensor:
        """Reference log-probs of one batch for the precomputed table."""
        if self.uses_lora or hasattr(self, "_ref_model"):
            return self._reference_logps(batch)
        # full fine-tuning before the first step: the policy IS π_ref
        return pair_logps(self.policy, batch, average=self.average_logps)

    def _reference_key(self) -> str:
        """What the cached tables depend on: the tokenised pairs themselves (so the data's
        content, limits, lengths, chat template and tokenizer; not the file's path, which
        may hold new rows next time), the reference model's files, dtype and averaging."""
        digest = hashlib.sha256()
        for pairs in (self.train_set, self.eval_set):
            digest.update(f"{len(pairs)} pairs".encode())
            if hasattr(pairs, "content_digest"):   # kept in Arrow: hashed from its buffers
                digest.update(pairs.content_digest().encode())
                continue
            for p in pairs:
                for ids in (p.prompt_ids, p.chosen_ids, p.rejected_ids):
                    digest.update(len(ids).to_bytes(8, "little"))
                    digest.update(array("q", ids).tobytes())
        reference = self.recipe.model.reference
        model = resolve_model(reference) if reference is not None else self.model_path
        parts = [digest.hexdigest(), _files_identity(model), self.average_logps,
                 str(self.dtype)]
        return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _files_identity(folder) -> list:
    """A model folder's path and the name, size and modification time of each of its
    weight and config files (hashing gigabytes of weights at every start would be slow;
    rewriting a file changes its time)."""
    path = Path(folder)
    files = sorted(f for f in path.glob("*") if f.is_file() and f.suffix in (
        ".safetensors", ".bin", ".json", ".pt")) if path.is_dir() else []
    return [str(folder)] + [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
