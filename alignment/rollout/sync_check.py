"""Is the rollout engine sampling from the weights being trained? Checked after every
weight sync, for every backend, on a fixed probe sentence: the engine's log-probs of its
tokens against the trainer model's own.

Two tests, because one alone misses a sync that is one optimizer step late:

  gap       mean |engine − trainer| over the probe's tokens. Above `tolerance` the engine
            holds other weights (a stale or garbled load). Engine and trainer kernels
            differ, by ~1e-6 nats in fp32 but a few hundredths in bf16 (the mean, not the
            max: single unlikely tokens differ by up to ~1 nat), so the tolerance is 0.15
            in bf16 — and one bf16 optimizer step moves the probe by only ~0.03 (AdamW,
            lr 1e-6 or 1e-7, SmolLM2-135M): a one-step-stale engine passes this test.
  followed  since the last good sync the trainer's probe moved by `moved`, the engine's
            by `followed`. Each side is compared with ITSELF, so kernel differences cancel
            and an engine that kept its old weights has `followed` = 0 exactly (the same
            weights and input give the same numbers). Stale: `moved` is conclusive
            (>= tolerance / 10) and `followed` < moved / 10. Synced engines follow with
            `followed` ≈ `moved`. A move under tolerance / 10 is not judged (e.g. a LoRA
            update so small that merging it into bf16 weights rounds it away): no false
            alarm from rounding, and the next sync compares again. A skipped step moves
            nothing and is not judged either.
"""

from __future__ import annotations

import torch

from alignment.errors import TrainingError
from alignment.model_logps import forward_hidden, labels_logps

PROBE_TEXT = ("The quick brown fox jumps over the lazy dog. Question: what is 12 + 35? "
              "Answer: 12 + 35 = 47, so the answer is 47.")


class StaleWeightsError(TrainingError):
    """The engine's weights do not match the trainer's after a sync (the run stops; the CLI
    prints it as a message)."""


def default_tolerance(dtype) -> float:
    full = str(dtype).removeprefix("torch.") in ("float32", "float64")
    return 1e-3 if full else 0.15


class SyncCheck:
    FOLLOW = 0.1      # a synced engine's probe moves about as much as the trainer's
    CONCLUSIVE = 0.1  # of the tolerance: smaller moves are not judged

    def __init__(self, tokenizer, tolerance: float):
        self.probe = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
        self.tolerance = tolerance
        self.last_gap: float | None = None
        self.last_moves: tuple[float, float] | None = None   # (moved, followed): see above
        self._synced: tuple[torch.Tensor, torch.Tensor] | None = None   # (engine, trainer)

    @torch.no_grad()
    def trainer_logps(self, model) -> torch.Tensor:
        """(probe tokens − 1,) log-probs of the probe's tokens under `model` (fp32, CPU)."""
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            ids = torch.tensor([self.probe], device=device)
            _, hidden = forward_hidden(model, input_ids=ids)
            return labels_logps(model, hidden[0, :-1], ids[0, 1:]).float().cpu()
        finally:
            model.train(was_training)

    def verify(self, engine: torch.Tensor, model) -> float:
        """Compare the engine's probe log-probs with `model`'s; raise StaleWeightsError if
        the engine is not sampling from `model`'s weights; return the mean gap."""
        engine = engine.float().cpu()
        trainer = self.trainer_logps(model)
        mean = lambda x: float(x.abs().mean())  # noqa: E731
        self.last_gap = gap = mean(engine - trainer)
        problem = None
        if gap > self.tolerance:
            problem = f"differ from the trainer's by {gap:.3f} nats per token"
        elif self._synced is not None:
            old_engine, old_trainer = self._synced
            moved, followed = mean(trainer - old_trainer), mean(engine - old_engine)
            self.last_moves = (moved, followed)
            if moved > self.tolerance and mean(engine - old_trainer) < gap:
                problem = (f"are closer to the previous sync's weights than to the new ones "
                           f"(gap {gap:.3f} nats per token)")
            elif moved >= self.CONCLUSIVE * self.tolerance and followed < self.FOLLOW * moved:
                problem = (f"moved by {followed:.2e} nats per token since the last sync while "
                           f"the trainer's moved by {moved:.2e}: the new weights did not arrive")
        if problem:
            raise StaleWeightsError(
                f"the engine's log-probs on the probe {problem} (tolerance {self.tolerance}): "
                "the engine is not sampling from the weights being trained")
        self._synced = (engine, trainer)
        return gap
