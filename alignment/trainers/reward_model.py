"""Reward model — a Bradley-Terry scorer trained on preference pairs.

    r_φ(x, y) = a linear head on the last token's hidden state of prompt + response
    minimise  − E log σ( r_φ(x, y_w) − r_φ(x, y_l) )        (Stiennon et al. 2020, Eq. 1)

The model is the bundled (or any) causal LM with a one-output classification head
(`AutoModelForSequenceClassification`, LoRA optional). Rows are prompt + response exactly as
the chat template renders them, right-padded with a token that never occurs in them, so
the head reads the last real token. Held-out pairwise accuracy is `eval/rewards/accuracy`.
The result in `output_dir/final` is what `alignment score --reward-model` and the
`reward_model` scorer load.
"""

from __future__ import annotations

import torch

from alignment.losses import bradley_terry_loss
from alignment.trainers.base import Trainer
from alignment.trainers.preference import Pair, PairData


class RewardModelTrainer(PairData, Trainer):
    def build_policy(self):
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            self.model_path, num_labels=1, dtype=self.dtype)
        # pad with a token absent from the data so the head pools the last real token
        endoftext = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        self.pool_pad_id = endoftext if isinstance(endoftext, int) and endoftext != \
            self.tokenizer.eos_token_id else self.tokenizer.pad_token_id
        model.config.pad_token_id = self.pool_pad_id
        lora = self.recipe.model.lora
        if lora.r > 0:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                target_modules=lora.target_modules, task_type="SEQ_CLS",
                modules_to_save=["score"]))
        return model

    def collate(self, pairs: list[Pair], split: str = "train") -> dict:
        rows = [p.prompt_ids + p.chosen_ids for p in pairs] + \
               [p.prompt_ids + p.rejected_ids for p in pairs]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pool_pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for i, r in enumerate(rows):                      # right padding
            input_ids[i, :len(r)] = torch.tensor(r)
            attention_mask[i, :len(r)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "n_pairs": len(pairs), "n_tokens": int(attention_mask.sum())}

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        n = batch["n_pairs"]
        device = next(self.model.parameters()).device
        rewards = self.model(input_ids=batch["input_ids"].to(device),
                             attention_mask=batch["attention_mask"].to(device)
                             ).logits[:, 0].float()        # (2B,): chosen rows, then rejected
        return bradley_terry_loss(rewards[:n], rewards[n:],
                                  center_weight=self.recipe.reward_model.center_weight)

    def generation_eval(self, tag: str) -> None:
        return None   # a reward model does not generate; its metric is eval/rewards/accuracy
