"""Reward model — a Bradley-Terry scorer trained on preference pairs.

    r_φ(x, y) = a linear head on the last token's hidden state of prompt + response
    minimise  − E log σ( r_φ(x, y_w) − r_φ(x, y_l) )        (Stiennon et al. 2020, Eq. 1)

The model is the bundled (or any) causal LM with a one-output classification head
(`AutoModelForSequenceClassification`, LoRA optional). Each sequence is prompt + response
exactly as the chat template renders them, and the reward is the head at its last token.
A pair is ONE row: the prompt and the start the two responses share are computed once, the
two different endings side by side under a 4-D attention mask (`collate_pairs`, as DPO
does). On pairs that differ only in a result that is most of the tokens: the same
numbers as two separate sequences (tested), ~1.7x fewer tokens through the model.
The saved model is a plain `AutoModelForSequenceClassification` whose `pad_token_id` is a
token absent from the data, so HF's last-non-pad pooling reads the last real token; it is
what `alignment score --reward-model` and the `reward_model` scorer load (`output_dir/final`).
Held-out pairwise accuracy is `eval/rewards/accuracy`.

With `reward_model.token_weight` > 0 the head is also trained at every completion token from
where chosen and rejected first differ (Cobbe et al. 2021's token-level verifier,
`token_verifier_loss`): at the result's digits, where the model can compare what it would
have written with what it reads, instead of only at the last token. The saved model is the
same plain sequence classifier (the reward is still the last token's score).

With `reward_model.lm_weight` > 0 the network also keeps a language-model objective on the
chosen completion (Yang et al. 2024, "Regularizing Hidden States Enables Learning
Generalizable Reward Model for LLMs", Eq. 5: the SFT term beside the BT loss), read through
the tied input embeddings, so no second head is trained or saved. On these pairs the
tokens where chosen and rejected differ are the result's digits: the term teaches the
network to compute the result at the position that writes it, where the classifier can then
compare it with what was written.

With `reward_model.kind: likelihood` the reward model is the causal LM itself:

    r_φ(x, y) = β · log π_φ(y | x)         (summed over the completion's tokens)

trained with the same Bradley-Terry loss — DPO's loss without the reference term
(Rafailov et al. 2023, Eq. 7 with π_ref = 1; their §5 reads any LM as a reward model this
way). The LM head compares the result it would write with the result it reads at the
result's own position, a comparison the classifier must learn to route to the last token:
on add2 pairs the untrained model already ranks 77% of held-out pairs by likelihood, the
trained classifier 70%. In a pair row only the tokens after the completions' common start
are scored: the shared tokens add the same log-prob to both, so margins and accuracy are
those of the whole completions. Its batches are prefix trees (`collate_pair_tree`): the
chat template's system prompt and the words prompts share are computed once per tree too,
50 tokens per add2 pair instead of 83 in pair rows. The saved folder is the merged causal LM; its
`recipe.yaml` (reward_model.kind, .beta, .reference) tells `RewardModelScorer` to score it so.

With `reward_model.reference: true` the likelihood reward is measured against the model
training starts from,

    r_φ(x, y) = β · log π_φ(y | x) / π_ref(y | x)

— DPO's implicit reward (Rafailov et al. 2023, Eq. 5), so the loss is DPO's (Eq. 7). A sum
of log-probs charges every token of a completion, so the reward model prefers short text
whatever it says; the ratio is ~0 on text training did not touch and moves only where
training taught it something (here: the result), so a long right answer can beat a short
wrong one. π_ref's log-probs come from the adapters switched off (LoRA) or a frozen copy.
"""

from __future__ import annotations

import torch

from alignment.errors import TrainingError
from alignment.losses import bradley_terry_loss, token_verifier_loss
from alignment.models import honour_sliding_window, pooling_pad_id
from alignment.trainers.base import Trainer
from alignment.trainers.preference import Pair, PairData, ReferenceLogps
from alignment.trainers.prefix_tree import collate_pair_tree
from alignment.trainers.sequences import collate_pairs, pair_logps


class RewardModelTrainer(ReferenceLogps, PairData, Trainer):
    @property
    def likelihood(self) -> bool:
        return self.recipe.reward_model.kind == "likelihood"

    def build_policy(self):
        from transformers import AutoModelForSequenceClassification

        if self.likelihood:     # the causal LM itself (LoRA, checkpointing as any policy)
            self.pool_pad_id = self.tokenizer.pad_token_id
            return super().build_policy()
        model = AutoModelForSequenceClassification.from_pretrained(
            self.model_path, num_labels=1, dtype=self.dtype)
        # pad with a token absent from the data so the head pools the last real token (the
        # saved config's pad_token_id, what the `reward_model` scorer pads with)
        self.pool_pad_id = pooling_pad_id(self.tokenizer, model.config.vocab_size)
        model.config.pad_token_id = self.pool_pad_id
        honour_sliding_window(model)      # pairs are packed under a 4-D mask
        layer = self.recipe.reward_model.lm_layer
        if layer is not None and not 1 <= layer <= model.config.num_hidden_layers:
            raise TrainingError(f"reward_model.lm_layer: {layer} is not a layer of "
                                f"{self.model_path} (1..{model.config.num_hidden_layers})")
        if self.recipe.reward_model.lm_weight > 0 and not model.config.tie_word_embeddings:
            raise TrainingError(
                f"reward_model.lm_weight needs a model whose output head is its input "
                f"embeddings (tie_word_embeddings); {self.model_path} has a separate one")
        lora = self.recipe.model.lora
        if lora.r > 0:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                target_modules=lora.target_modules, task_type="SEQ_CLS",
                modules_to_save=["score"]))
        return model

    def collate(self, pairs: list[Pair], split: str = "train") -> dict:
        """One row per pair: [prompt + the completions' common start | chosen rest |
        rejected rest] under a 4-D mask (`collate_pairs`): exactly the two sequences
        prompt+chosen and prompt+rejected, with everything they share computed once."""
        shared, chosen, rejected = [], [], []
        for p in pairs:   # keep at least the last token of each (where the score is read)
            k = min(_common_prefix(p.chosen_ids, p.rejected_ids), len(p.chosen_ids) - 1,
                    len(p.rejected_ids) - 1)
            shared.append(p.prompt_ids + p.chosen_ids[:k])
            chosen.append(p.chosen_ids[k:])
            rejected.append(p.rejected_ids[k:])
        if self.likelihood:     # log-probs only: the system prompt etc. once per tree too
            return collate_pair_tree(shared, chosen, rejected, self.pool_pad_id)
        batch = collate_pairs(shared, chosen, rejected, self.pool_pad_id)
        batch["lm_labels"] = _chosen_lm_labels(pairs, shared, chosen, batch["widths"])
        # tokens of the two whole sequences (what a trainer without sharing processes)
        batch["n_tokens"] = sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids)
                                for p in pairs)
        return batch

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        n = batch["n_pairs"]
        cfg = self.recipe.reward_model
        if self.likelihood:
            logps = pair_logps(self.model, batch).float()                 # (2n,)
            if cfg.reference:
                logps = logps - self._reference_logps(batch).float().to(logps.device)
            rewards = cfg.beta * logps
            return bradley_terry_loss(rewards[:n], rewards[n:])
        device = next(self.model.parameters()).device
        width_p, width_c, width_r = batch["widths"]
        out = self.model(input_ids=batch["input_ids"].to(device),
                         attention_mask=batch["attention_mask"].to(device),
                         position_ids=batch["position_ids"].to(device),
                         output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[-1]          # (n, L, H), after the final norm
        head = self._score_head()
        chosen_mask = batch["chosen_mask"].to(device)           # (n, C1)
        rejected_mask = batch["rejected_mask"].to(device)       # (n, C2)
        rows = torch.arange(n, device=device)
        # the reward is the head at each sequence's last token
        chosen_end = width_p + chosen_mask.sum(1) - 1
        rejected_end = width_p + width_c + rejected_mask.sum(1) - 1
        ends = torch.stack([hidden[rows, chosen_end], hidden[rows, rejected_end]])   # (2, n, H)
        rewards = head(ends)[..., 0].float()
        loss, metrics = bradley_terry_loss(rewards[0], rewards[1],
                                           center_weight=cfg.center_weight)
        if cfg.token_weight > 0:    # every token from where the two first differ
            tails = hidden[:, width_p:]                               # (n, C1 + C2, H)
            scores = head(tails)[..., 0].float()
            width = max(width_c, width_r)
            per_row = torch.zeros(2 * n, width, device=device)
            mask = torch.zeros(2 * n, width, dtype=torch.bool, device=device)
            per_row[:n, :width_c], mask[:n, :width_c] = scores[:, :width_c], chosen_mask
            per_row[n:, :width_r], mask[n:, :width_r] = scores[:, width_c:], rejected_mask
            labels = torch.cat([torch.ones(n), torch.zeros(n)]).to(device)
            token_loss, token_metrics = token_verifier_loss(per_row, labels, mask)
            loss = loss + cfg.token_weight * token_loss
            metrics.update(token_metrics, token_loss=token_loss.detach())
        if cfg.lm_weight > 0:
            # (HF's last hidden state is already normed: the last layer is `hidden` itself)
            last = cfg.lm_layer in (None, len(out.hidden_states) - 1)
            lm_hidden = hidden if last else self._final_norm()(out.hidden_states[cfg.lm_layer])
            lm_loss, lm_metrics = self._lm_loss(lm_hidden, batch["lm_labels"].to(device))
            loss = loss + cfg.lm_weight * lm_loss
            metrics.update(lm_metrics, lm_loss=lm_loss.detach())
        return loss, metrics

    def _lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Next-token cross-entropy on the chosen completion, logits = h · Eᵀ with the
        (tied) input embeddings E; only the labelled positions go through the vocabulary."""
        keep = labels >= 0                                       # (n, P + C1)
        h = hidden[:, :labels.shape[1]][keep]                    # (N, H)
        embeddings = self.accelerator.unwrap_model(self.model).get_input_embeddings().weight
        logits = (h @ embeddings.t()).float()                    # (N, V)
        target = labels[keep]
        loss = torch.nn.functional.cross_entropy(logits, target)
        with torch.no_grad():
            accuracy = (logits.argmax(-1) == target).float().mean()
        return loss, {"lm_token_accuracy": accuracy}

    def _final_norm(self):
        """The backbone's last norm (applied to a middle layer's state for `lm_layer`)."""
        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        return model.base_model.norm

    def _score_head(self):
        """The linear head (`score`), inside whatever wraps the model (DDP, PEFT)."""
        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        return model.score

    def generation_eval(self, tag: str) -> None:
        return None   # a reward model does not generate; its metric is eval/rewards/accuracy


def _chosen_lm_labels(pairs: list[Pair], shared: list[list[int]], chosen: list[list[int]],
                      widths: tuple[int, int, int]) -> torch.Tensor:
    """(n, P + C1) next-token labels over the [shared | chosen rest] columns of a
    `collate_pairs` row: column j holds the chosen-completion token at column j + 1, −100
    elsewhere (the prompt, padding). The shared segment is left-padded to width P and ends
    with the completions' common start."""
    width_p, width_c, _ = widths
    labels = torch.full((len(pairs), width_p + width_c), -100, dtype=torch.long)
    for row, (p, s, c) in enumerate(zip(pairs, shared, chosen, strict=True)):
        common = len(s) - len(p.prompt_ids)
        tokens = s[len(p.prompt_ids):] + c            # the whole chosen completion
        first = width_p - common                      # its first token's column
        labels[row, first - 1:first - 1 + len(tokens)] = torch.tensor(tokens)
    return labels


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
