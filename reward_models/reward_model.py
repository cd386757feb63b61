"""A trained reward model: a Hugging Face sequence classifier with one output.

The prompt and completion are rendered with the tokenizer's chat template (as the reward
model saw them in training) and the score is the single logit at the last real token.
Batches are right-padded; the model is loaded once, in eval mode, without gradients.
"""

from __future__ import annotations

from reward_models.base import Scorer, ScoreResult, check_batch


class RewardModelScorer(Scorer):
    name = "reward_model"

    def __init__(self, path: str, batch_size: int = 16, max_length: int = 1024,
                 dtype: str = "float32", chat_template: bool = True):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=getattr(torch, dtype)).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"{path}: a reward model has one output, this one has "
                             f"{self.model.config.num_labels} labels")
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_length = batch_size, max_length
        self.chat_template = chat_template and bool(self.tokenizer.chat_template)

    def render(self, prompt: str, completion: str) -> str:
        if not self.chat_template:
            return prompt + completion
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
            tokenize=False)

    def score(self, prompts, completions, rows=None) -> ScoreResult:
        import torch

        check_batch(self.name, prompts, completions, rows)
        texts = [self.render(p, c) for p, c in zip(prompts, completions, strict=True)]
        rewards: list[float] = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt",
                                     padding=True, truncation=True, max_length=self.max_length,
                                     add_special_tokens=False)
                logits = self.model(**enc).logits[:, 0]          # (batch,)
                rewards.extend(logits.float().tolist())
        return ScoreResult(rewards, {self.name: list(rewards)}, [None] * len(rewards))
