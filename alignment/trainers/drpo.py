"""DR-PO, Dataset Reset Policy Optimization (Chang et al. 2024, Algorithm 1; reference code
Cornell-RL/drpo with tril's `RollinProcessor`; ALGORITHMS.md §7).

PPO whose rollouts may start inside a reference response of the data: with probability
`reset_prob` a sample's first k tokens (k uniform on 1..L−1, L the reference's length with
its EOS) are forced to the reference, and the policy continues from that state. The forced
tokens are context, not actions: they are off the mask for the policy loss (as in the
code), and also for the KL penalty, the value loss and whitening (the paper's Algorithm 1
records only the steps from the reset on; the code still runs those over forced tokens).
The critic's value at the first generated token is the value of the reset state.
"""

from __future__ import annotations

from alignment.data import DataError
from alignment.rollout import Rollouts, sample_resets
from alignment.rollout.types import sample_seed
from alignment.trainers.online import PromptExample
from alignment.trainers.ppo import PPOTrainer


class DRPOTrainer(PPOTrainer):
    def load_examples(self, path: str, limit: int | None, split: str) -> list[PromptExample]:
        examples = super().load_examples(path, limit, split)
        if split != "train":
            return examples
        column = self.algo.reset_column
        examples = list(examples)   # each keeps its tokenised reset
        for ex in examples:
            value = ex.row.get(column)
            if value is None or not str(value).strip():
                raise DataError(f"{ex.where}: no reference response in column '{column}' "
                                f"(drpo.reset_column) to reset into; columns: "
                                f"{', '.join(sorted(ex.row)) or 'none besides prompt'}")
            ids = self.tokenizer(str(value), add_special_tokens=False)["input_ids"]
            ex.reset_ids = ids + [self.tokenizer.eos_token_id]   # generation's EOS convention
        return examples

    def rollout_batch(self) -> tuple[int, int]:
        sequences, tokens = super().rollout_batch()   # + the longest forced prefix
        return sequences, tokens + max(len(e.reset_ids) for e in self.train_set) - 1

    def generate_rollouts(self, prompts: list[PromptExample], round_: int
                          ) -> tuple[list[PromptExample], Rollouts]:
        """One reset per sample. The engine takes one prefix per request, so each prompt
        goes in once per sample; the samples are then regrouped under their prompt (a
        completion holds its forced prefix), so a prompt's samples still share one forward
        of the prompt in training."""
        n = self.samples_per_prompt
        prefixes, seeds = [], []
        for prompt, seed in zip(prompts, self._prompt_seeds(prompts, round_), strict=True):
            resets = sample_resets([len(prompt.reset_ids)] * n, self.algo.reset_prob, seed)
            prefixes += [prompt.reset_ids[:k] for k in resets]
            seeds += [sample_seed(seed, j) for j in range(n)]
        rollouts = self.engine.generate([p.prompt_ids for p in prompts for _ in range(n)], n=1,
                                        sampling=self.sampling, prefixes=prefixes, seeds=seeds)
        rollouts.prompt_ids = [p.prompt_ids for p in prompts]
        rollouts.prompt_index = [i // n for i in range(len(rollouts))]
        return prompts, rollouts
