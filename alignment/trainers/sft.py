"""SFT — supervised fine-tuning on demonstrations (prompt + completion, or messages).

    minimise  − Σ log π_θ(y_t | x, y_<t) / (completion tokens)          (`sft_loss`)

The first stage of most pipelines (Ouyang et al. 2022, §3.5; the "cold start" before
reasoning RL): it teaches a format the policy cannot discover by sampling, e.g. worked
solutions that add one digit column at a time (`data/arithmetic/sft_columns`), which GRPO
or SPIN then start from (`model.name: runs/sft_mix`). Only completion tokens are trained;
the loss is the mean over every completion token of the step, whatever the micro-batches
(`batch_weight` = tokens). A completion ends at its first EOS, where generation stops (a
chat template appends a newline after the end-of-turn token that the model never has to
write). `data.eval` (demonstrations too) gives the held-out loss; `eval:` the greedy
accuracy before and after.
"""

from __future__ import annotations

from alignment.data import DataError
from alignment.data.prepare import MappedRows
from alignment.losses import sft_loss
from alignment.models import stop_token_ids
from alignment.trainers.base import Trainer
from alignment.trainers.preference import Pair
from alignment.trainers.sequences import (
    attention_width,
    collate_demonstrations,
    completion_token_logps,
)


def read_demonstrations(trainer, path, limit: int | None, split: str = "train",
                        budget: int | None = None) -> MappedRows:
    """SFT rows as `Pair`s whose chosen side is the demonstration (cut after its first EOS
    and to `budget` tokens), rejected empty; kept in Arrow; shared with SPIN."""
    rows = trainer.read_data(path, "sft", limit, split)
    stops = set(stop_token_ids(trainer.tokenizer))

    def demonstration(i: int, t) -> Pair:
        real = t.completion_ids["completion"]
        # end where generation ends: at the first EOS id (Phi-3's <|end|>, not the final
        # <|endoftext|> its template writes after it), nothing after it
        end = next((k for k, token in enumerate(real) if token in stops), None)
        if end is not None:
            real = real[:end + 1]
        if budget is not None:
            real = real[:budget]
        if not real:
            raise DataError(f"{t.where}: the completion is empty after tokenisation")
        return Pair(i, t.prompt_ids, real, [], t.where, dict(t.extra))
    return MappedRows(rows, demonstration)


def collate_demos(demos: list[Pair], pad_id: int, config) -> dict:
    """A micro-batch of demonstrations (`read_demonstrations`' rows); shared with the
    actor-critic trainers' PPO-ptx term."""
    return collate_demonstrations([d.prompt_ids for d in demos], [d.chosen_ids for d in demos],
                                  pad_id, width0=attention_width(config))


def demonstration_loss(model, batch: dict) -> tuple:
    """The token-mean NLL of a `collate_demos` batch under `model` (`sft_loss`)."""
    logps = completion_token_logps(model, batch)
    return sft_loss(logps, batch["completion_mask"].to(logps.device))


class SFTTrainer(Trainer):
    def load_examples(self, path, limit: int | None, split: str) -> MappedRows:
        return read_demonstrations(self, path, limit, split)

    def example_length(self, demo: Pair) -> int:
        return len(demo.prompt_ids) + len(demo.chosen_ids)

    def collate(self, demos: list[Pair], split: str = "train") -> dict:
        return collate_demos(demos, self.tokenizer.pad_token_id, self.policy.config)

    def batch_weight(self, batch: dict) -> float:
        return float(batch["completion_mask"].sum())   # a token mean across micro-batches

    def compute_loss(self, batch: dict):
        return demonstration_loss(self.model, batch)


__all__ = ["SFTTrainer", "collate_demos", "demonstration_loss", "read_demonstrations"]
