"""The loop every trainer shares; an algorithm supplies only its batches and its loss.

    for step in range(start, total):                      # resumable at any checkpoint
        micro-batches <- plan(epoch, step)                # seeded, length-grouped, sharded
        for each micro-batch:                             # gradient accumulation
            loss, metrics = algorithm.compute_loss(batch)
            backward(loss * weight / global weight)       # exact mean over the whole step
        clip, optimiser step on fp32 master weights, LR schedule
        log / eval / checkpoint

Accelerate places the model and wraps it for data parallelism (DDP, or a DeepSpeed ZeRO
engine: see `distributed.py`); only the main process writes files. Subclasses implement
`load_examples`, `example_length`, `collate`, `batch_weight` and `compute_loss`, and may
override `before_training`.
"""

from __future__ import annotations

import abc
import contextlib
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch

from alignment import atomic
from alignment.config import Recipe, recipe_to_dict
from alignment.errors import TrainingError
from alignment.models import (
    load_causal_lm,
    load_tokenizer,
    resolve_model,
    training_dtype,
)
from alignment.trainers import batching, distributed
from alignment.trainers.logger import MetricsLogger
from alignment.trainers.optim import MasterWeightOptimizer, build_optimizer, build_scheduler
from alignment.trainers.saving import Checkpointing


def set_threads(threads: int | None) -> int:
    """torch CPU threads for this process: `threads`, or this machine's cores shared among
    its processes. Always set explicitly: `accelerate launch` exports OMP_NUM_THREADS=1,
    which would otherwise leave a single-process CPU run on one core (half the speed on 2)."""
    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(1, (cores or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)   # for engines started later (vLLM CPU)
    return threads


class Trainer(Checkpointing, abc.ABC):
    def __init__(self, recipe: Recipe, recipe_path: str | None = None):
        from accelerate.utils import set_seed

        self.recipe, self.cfg = recipe, recipe.trainer
        self.recipe_path = recipe_path
        self.threads = set_threads(self.cfg.threads)
        self.accelerator = distributed.make_accelerator()
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        self.is_main = self.accelerator.is_main_process
        self.output_dir = Path(recipe.output_dir)
        self._lock_output_dir()
        self.zero_stage = distributed.zero_stage(self.accelerator)   # 0: no DeepSpeed
        self.fsdp_plugin = distributed.fsdp_plugin()
        self.fsdp = self.fsdp_plugin is not None
        # weights split over the processes: every forward is collective, so processes
        # run the same number of them (equal shares, lockstep decoding)
        self.sharded = self.zero_stage == 3 or self.fsdp
        set_seed(self.cfg.seed)
        self.dtype = training_dtype(recipe.model.dtype, deepspeed=bool(self.zero_stage))
        self.model_path = resolve_model(recipe.model.name)
        self.tokenizer = load_tokenizer(self.model_path)
        self.train_set = self.load_examples(recipe.data.train, recipe.data.train_limit, "train")
        self.eval_set = (self.load_examples(recipe.data.eval, recipe.data.eval_limit, "eval")
                         if recipe.data.eval else [])
        self.check_distributed_support()
        if self.zero_stage:   # before loading: ZeRO-3 shards the weights as they load, in
            distributed.configure_deepspeed(self.accelerator, self.cfg, self.dtype)  # its dtype
        self.policy = self.build_policy()
        self.trainable = self.build_trainable()   # what the engine wraps and the optimizer steps
        if self.zero_stage:
            if self.cfg.optimizer == "adamw_kahan":   # DeepSpeed keeps its own fp32 copy
                raise TrainingError("trainer.optimizer: adamw_kahan is for runs without "
                                    "DeepSpeed (ZeRO keeps fp32 master weights itself); use "
                                    "adamw")
            adamw = build_optimizer(self.param_groups(), self.cfg)
            self.model, _ = self.accelerator.prepare(self.trainable, adamw)
            self.optim = distributed.DeepSpeedOptimizer(self.model, adamw)
        else:
            # (FSDP2 shards in place: the parameters the optimizer gets are the shards)
            self.model = (distributed.shard_fsdp2(self.trainable, self.fsdp_plugin,
                                                  self.called_directly(), self.accelerator.device)
                          if self.fsdp else self.accelerator.prepare_model(self.trainable))
            self.optim = MasterWeightOptimizer(self.param_groups(), self.cfg)
        self.steps_per_epoch = self._steps_per_epoch()
        self.total_steps = self.planned_steps()
        self.scheduler = build_scheduler(self.optim.optimizer, self.cfg, self.total_steps)
        self.step = 0
        self.nan_streak = 0

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def load_examples(self, path: str, limit: int | None, split: str) -> list:
        """Read, validate and tokenise a data file."""

    @abc.abstractmethod
    def example_length(self, example) -> int:
        """Tokens the example occupies (for length-grouped batching)."""

    @abc.abstractmethod
    def collate(self, examples: list, split: str = "train") -> dict:
        """Tensors for one micro-batch; must include `n_tokens` (for throughput logs)."""

    @abc.abstractmethod
    def batch_weight(self, batch: dict) -> float:
        """How much this micro-batch counts in the step's mean (pairs, sequences, tokens)."""

    @abc.abstractmethod
    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """(0-dim loss averaged over the micro-batch, metrics)."""

    def read_data(self, source, kind: str, limit: int | None, split: str, *,
                  answer_column: str | None = "answer"):
        """`source` validated and tokenised as `kind` rows under the recipe's data settings
        (`alignment.data.prepare`: cached, kept in Arrow); skips reported, none left is an
        error. The main process tokenises first, the others then read its cache."""
        from alignment.data import DataError
        from alignment.data.prepare import TokenizeSettings, tokenize_source

        d = self.recipe.data
        settings = TokenizeSettings(d.max_length, d.max_prompt_length, d.too_long,
                                    d.chat_template, d.system_prompt, self.prompt_tools())
        with self.accelerator.main_process_first():
            rows = tokenize_source(self.tokenizer, source, kind, settings, limit=limit,
                                   role=split, answer_column=answer_column)
        if rows.report.summary():
            self._say(f"{rows.label}: {rows.report.summary()}")
        if not len(rows):
            what = {"preference": "preference pairs", "sft": "SFT rows"}.get(kind, "prompts")
            raise DataError(f"{rows.label}: no usable {what} left "
                            f"({rows.report.summary() or 'empty'})")
        return rows

    def prompt_tools(self) -> str | None:
        """Function schemas (JSON) the chat template renders into every prompt: an
        environment's tools (`EpisodeParts`); none by default."""
        return None

    def before_training(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Work done once before the first step (e.g. reference log-probs)."""

    def check_distributed_support(self) -> None:
        """Refuse, in one clear sentence, what this trainer cannot run under."""
        kind = str(self.accelerator.distributed_type).rsplit(".", 1)[-1]
        if self.fsdp and self.fsdp_plugin.fsdp_version != 2:
            raise TrainingError("FSDP version 1 is not supported: set fsdp_config.fsdp_version"
                                ": 2 in the Accelerate config (launch/fsdp.yaml)")
        if self.fsdp and self.fsdp_plugin.activation_checkpointing:
            raise TrainingError("fsdp_activation_checkpointing is not used: set the recipe's "
                                "model.gradient_checkpointing: true instead")
        if kind not in ("NO", "MULTI_CPU", "MULTI_GPU", "DEEPSPEED", "FSDP"):
            raise TrainingError(f"distributed type {kind} is not supported in this version: "
                                "use DDP (launch/multi_gpu.yaml), DeepSpeed "
                                "(launch/deepspeed_zero*.yaml) or FSDP2 (launch/fsdp.yaml)")

    # ------------------------------------------------------------------ model
    def build_policy(self):
        model = load_causal_lm(self.model_path, self.dtype)
        lora = self.recipe.model.lora
        if lora.r > 0:
            from peft import LoraConfig, get_peft_model

            # FSDP2 gathers a block's tensors as one buffer: one dtype for all of them
            model = get_peft_model(model, LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                target_modules=lora.target_modules, task_type="CAUSAL_LM"),
                autocast_adapter_dtype=not self.fsdp)
        if self.recipe.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            if lora.r > 0:
                model.enable_input_require_grads()
        return model

    def load_frozen(self, name: str) -> torch.nn.Module:
        """A frozen copy of model `name` (π_ref) in the run's dtype, on this process's
        device; under ZeRO-3 sharded like the policy (`distributed.sharded_inference`)."""
        model = load_causal_lm(resolve_model(name), self.dtype).eval()
        model.requires_grad_(False)
        if self.zero_stage == 3:
            return distributed.sharded_inference(model, self.accelerator)
        return model.to(self.accelerator.device)

    def build_trainable(self) -> torch.nn.Module:
        """The one module trained in this run: the policy (actor-critic trainers: policy and
        critic together)."""
        return self.policy

    def called_directly(self) -> list[torch.nn.Module]:
        """Submodules of `trainable` run on their own, not through its forward (FSDP2
        makes each a unit: `distributed.shard_fsdp2`)."""
        return []

    def param_groups(self) -> list[dict]:
        return [{"params": [p for p in self.trainable.parameters() if p.requires_grad]}]

    def extra_models(self) -> dict[str, torch.nn.Module]:
        """Models saved next to the policy in checkpoints and `final/` (e.g. "critic")."""
        return {}

    def extra_state(self) -> dict:
        """Algorithm state kept in every checkpoint (e.g. an adaptive KL coefficient)."""
        return {}

    def load_extra_state(self, state: dict) -> None:  # noqa: B027 - optional hook
        """Restore `extra_state()` on resume."""

    def run_info(self) -> dict:
        """Set-up facts for summary.json (e.g. the rollout engine's KV cache)."""
        return {}

    def _module_state(self, weights: dict | None, name: str) -> dict | None:
        """A gathered state dict of `trainable` cut down to one of its models."""
        if weights is None or self.trainable is self.policy:
            return weights
        from alignment.value_model import split_state

        return split_state(weights, name)

    @property
    def uses_lora(self) -> bool:
        return self.recipe.model.lora.r > 0

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict:
        """Run to the end (resuming from the newest intact checkpoint). A rollout engine
        that fails stops it with the state saved where possible (`saving.save_for_resume`)."""
        from alignment.rollout.guard import EngineFailure

        try:
            return self._train()
        except EngineFailure as exc:
            raise EngineFailure(f"{exc}; {self.save_for_resume()}", exc.call) from exc
        finally:
            self.run_lock.release()

    def _train(self) -> dict:
        self._resume()
        self.before_training()
        if self.step == 0:
            self.generation_eval("before")
        log = self.recipe.logging
        self.logger = logger = MetricsLogger(
            self.output_dir, enabled=self.is_main, total_steps=self.total_steps,
            start_step=self.step, report_to=log.report_to, run_name=log.run_name,
            project=log.project, config=recipe_to_dict(self.recipe),
            progress_bar=log.progress_bar)
        self._say(f"training {self.recipe.algorithm} for {self.total_steps} steps "
                  f"({self.steps_per_epoch}/epoch, {len(self.train_set)} examples, "
                  f"{self.world} process(es), {next(self.policy.parameters()).dtype}"
                  f"{f', ZeRO-{self.zero_stage}' if self.zero_stage else ''}"
                  f"{', FSDP2' if self.fsdp else ''}) -> "
                  f"{self.output_dir}")
        initial = self.evaluate_loss() if self.step == 0 and self.cfg.eval_every else {}
        if initial:
            logger.log(0, initial)   # the curves start from the base model
        start = time.perf_counter()
        tokens_seen = 0
        while self.step < self.total_steps:
            self.mark_step_start()
            metrics = self._train_step()
            tokens_seen += metrics.get("tokens", 0)
            self.step += 1
            logger.advance()
            if self.cfg.eval_every and self.step % self.cfg.eval_every == 0:
                metrics.update(self.evaluate_loss())
            if self.step % self.cfg.log_every == 0 or self.step == self.total_steps:
                logger.log(self.step, metrics)
            if self.cfg.save_every and self.step % self.cfg.save_every == 0:
                self.save_checkpoint(logger.history)
        elapsed = time.perf_counter() - start
        final_eval = self.evaluate_loss()
        if final_eval:
            logger.log(self.step, final_eval)
        self.save_checkpoint(logger.history)
        summary = {"algorithm": self.recipe.algorithm, "steps": self.step,
                   "train_seconds": round(elapsed, 1),
                   "tokens_per_s": round(tokens_seen / max(elapsed, 1e-9), 1),
                   "final_eval": final_eval, "output_dir": str(self.output_dir)}
        summary["generation_eval"] = self.generation_eval("after")
        summary.update(self.run_info())
        self.export_final()
        logger.close(summary)
        self.accelerator.wait_for_everyone()
        self.run_lock.release()
        return summary

    def planned_steps(self) -> int:
        """Optimizer steps of the whole run."""
        return self.cfg.max_steps or self.cfg.epochs * self.steps_per_epoch

    def epoch_position(self) -> tuple[int, int, float]:
        """(epoch, step within it, epochs done after it) of the current step; the epoch
        seeds the data order."""
        epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
        return epoch, in_epoch, epoch + (in_epoch + 1) / self.steps_per_epoch

    def _train_step(self) -> dict:
        t0 = time.perf_counter()
        epoch, in_epoch, progress = self.epoch_position()
        micro = batching.step_batches(self._plan(epoch), in_epoch, grad_accum=self.cfg.grad_accum,
                                      processes=self.world, rank=self.rank)
        batches = [self.collate([self.train_set[i] for i in mb]) for mb in micro]
        metrics = self.update(batches)
        self.advance_schedule()
        seconds = time.perf_counter() - t0
        tokens = int(self._sum_across_processes(sum(b["n_tokens"] for b in batches)))
        metrics.update({"epoch": progress, "step_seconds": seconds, "tokens": tokens,
                        "tokens_per_s": tokens / seconds})
        return metrics

    def update(self, batches: list[dict]) -> dict:
        """One optimizer step over `batches` (gradient accumulation): the loss is the exact
        weighted mean over all micro-batches of all processes. A non-finite loss, or a
        non-finite gradient norm (after all micro-batches: one inf anywhere), skips the step
        (counted; `trainer.max_nan_steps` in a row stop the run)."""
        # a "stand_in" batch only keeps a process without data in step with the others
        weights = [0.0 if b.get("stand_in") else float(self.batch_weight(b)) for b in batches]
        # a batch of an added `term` (PPO-ptx's demonstrations) is averaged over that term's
        # batches alone and added: L = mean(the step's batches) + Σ_term mean(its batches).
        # Every process holds the same terms (their sums are collective).
        kinds = [b.get("term") for b in batches]
        groups = [None, *sorted({k for k in kinds if k})]
        total = dict(zip(groups, self._sum_vector(
            [sum(w for w, k in zip(weights, kinds, strict=True) if k == g) for g in groups]),
            strict=True))
        if min(total.values()) <= 0:
            raise TrainingError(f"step {self.step + 1}: the batch has nothing to train on "
                                "(zero weight on every process)")
        sums: dict[tuple[str | None, str], float] = {}
        self.model.train()
        self.updated_this_step = True   # (from here on the state is no longer step's start)
        for i, (batch, weight) in enumerate(zip(batches, weights, strict=True)):
            last = i == len(batches) - 1
            sync = (contextlib.nullcontext() if last or self.zero_stage
                    else distributed.gradient_sync(self.model, False) if self.fsdp
                    else self.accelerator.no_sync(self.model))
            with sync:
                loss, metrics = self.compute_loss(batch)
                # weight/total makes the step's loss the mean over all its examples (or
                # tokens), whatever the micro-batch sizes; x world undoes the averaging
                # of gradients over processes (DDP and DeepSpeed both average).
                scaled = loss * (weight * self.world / total[kinds[i]])
                if self.zero_stage:
                    self.optim.backward(scaled)
                else:
                    self.accelerator.backward(scaled)
            for key, value in {"loss": loss.detach(), **metrics}.items():
                sums[kinds[i], key] = sums.get((kinds[i], key), 0.0) + float(value) * weight
        keys = sorted(sums, key=lambda k: (k[0] or "", k[1]))
        metrics = {}   # the weighted mean over every process's examples; a term's loss adds
        for (kind, key), value in zip(keys, self._sum_vector([sums[k] for k in keys]),
                                      strict=True):
            mean = value / total[kind]
            metrics[key] = metrics.get(key, 0.0) + mean if key == "loss" else mean
        if not math.isfinite(metrics.get("loss", 0.0)):
            return self._skip_step(metrics, "loss")
        metrics["grad_norm"] = self.optim.step()   # (steps nothing if the norm is not finite)
        if self.optim.skipped:
            # DeepSpeed fp16: its loss scaler overflowing is routine (the scale then drops),
            # counted but no reason to stop
            routine = self.zero_stage and self.dtype == torch.float16
            return self._skip_step(metrics, "gradient", streak=not routine)
        self.nan_streak = 0
        self.nan_kinds = set()
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        return metrics

    def advance_schedule(self) -> None:
        with warnings.catch_warnings():  # the schedule follows the step count, stepped or not
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()

    def _skip_step(self, metrics: dict, what: str, streak: bool = True) -> dict:
        """Drop this step's gradients; count it (`what`: "loss" or "gradient")."""
        self.optim.zero_grad()
        self.nan_streak += int(streak)
        self.nan_kinds = getattr(self, "nan_kinds", set()) | {what}
        self.skipped_steps = getattr(self, "skipped_steps", 0) + 1
        norm = f" (norm {metrics['grad_norm']})" if what == "gradient" else ""
        self._say(f"step {self.step + 1}: non-finite {what}{norm}, step skipped "
                  f"({self.nan_streak} in a row, {self.skipped_steps} in total)")
        if self.nan_streak >= self.cfg.max_nan_steps:
            kinds = " or ".join(sorted(k + ("es" if k == "loss" else "s") for k in self.nan_kinds))
            raise TrainingError(f"{self.nan_streak} non-finite {kinds} in a row (trainer."
                                f"max_nan_steps={self.cfg.max_nan_steps}); last metrics: "
                                f"{metrics}. Try a lower trainer.lr or model.dtype=float32.")
        return {**metrics, "skipped": 1.0}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate_loss(self) -> dict:
        """Mean loss and metrics over data.eval (every process takes a share)."""
        if not self.eval_set:
            return {}
        self.model.eval()
        lengths = [self.example_length(e) for e in self.eval_set]
        sums: dict[str, float] = {}
        count = 0.0
        for idx, counted in self.eval_share(batching.eval_batches(lengths, self.cfg.batch_size)):
            batch = self.collate([self.eval_set[i] for i in idx], split="eval")
            loss, metrics = self.compute_loss(batch)
            weight = float(self.batch_weight(batch)) if counted else 0.0
            for key, value in {"loss": loss, **metrics}.items():
                sums[key] = sums.get(key, 0.0) + float(value) * weight
            count += weight
        keys = sorted(sums)
        totals = self._sum_vector([sums[k] for k in keys] + [count])
        self.model.train()
        return {f"eval/{k}": v / totals[-1] for k, v in zip(keys, totals, strict=False)}

    def generation_eval(self, tag: str) -> dict | None:
        """Greedy exact-answer accuracy on recipe.eval.data, before and after training."""
        ev = self.recipe.eval
        if not ev.before_after:
            return None
        if self.sharded:   # the weights are sharded: one process cannot generate
            self._say(f"generation eval ({tag} training) skipped with sharded weights (ZeRO-3"
                      f" / FSDP2): run `alignment "
                      f"eval --model {self.output_dir} --data {ev.data}` afterwards")
            return None
        path = self.output_dir / f"eval_{tag}.json"
        result = None
        if self.is_main:
            from alignment.evaluation import EvalSettings, evaluate, format_table

            self._say(f"generation eval ({tag} training) on {ev.data} ...")
            env = self.recipe.environment if getattr(self, "episodic", False) else None
            settings = EvalSettings(limit=ev.limit, max_new_tokens=ev.max_new_tokens,
                                    batch_size=ev.batch_size,
                                    chat_template=self.recipe.data.chat_template,
                                    system_prompt=self.recipe.data.system_prompt,
                                    **({} if env is None else {
                                        "environment": env.name,
                                        "environment_options": dict(env.options),
                                        "max_turns": env.max_turns,
                                        "max_episode_tokens": env.max_episode_tokens}))
            was_training = self.policy.training
            self.policy.config.use_cache = True
            result = evaluate(self.recipe.model.name if tag == "before" else str(self.output_dir),
                              ev.data, settings, loaded=(self.policy, self.tokenizer))
            self.policy.config.use_cache = False
            self.policy.train(was_training)
            atomic.write_json(path, result)
            self._say(f"accuracy {tag} training:\n{format_table(result)}")
        self.accelerator.wait_for_everyone()
        return result

    # ------------------------------------------------------------------ helpers
    def _lock_output_dir(self) -> None:
        """One run per output_dir (`alignment.run_lock`): the main process takes it before
        anything heavy loads; every process stops if it could not."""
        from alignment.run_lock import RunLock, RunLockedError

        self.run_lock = RunLock(self.output_dir)
        refused = None
        if self.is_main:
            try:
                note = self.run_lock.acquire()
            except RunLockedError as exc:
                refused = exc
            else:
                if note:
                    self._say(note)
        if not self._all_processes(refused is None):
            raise refused or RunLockedError(f"output_dir {self.output_dir} is in use by "
                                            "another run (rank 0 says which)")

    def _steps_per_epoch(self) -> int:
        n = len(batching.epoch_plan(self._lengths(), batch_size=self.cfg.batch_size,
                                    seed=self.cfg.seed, epoch=0))
        steps = batching.steps_per_epoch(n, self.cfg.grad_accum, self.world)
        if steps == 0:
            need = self.cfg.batch_size * self.cfg.grad_accum * self.world
            raise TrainingError(f"{self.recipe.data.train}: {len(self.train_set)} usable "
                                f"examples, fewer than one optimiser step needs ({need} = "
                                "batch_size x grad_accum x processes)")
        return steps

    def _lengths(self) -> list[int]:
        if not hasattr(self, "_length_cache"):   # a set kept in Arrow has them as a column
            lengths = getattr(self.train_set, "lengths", None)
            self._length_cache = (list(lengths) if lengths is not None else
                                  [self.example_length(e) for e in self.train_set])
        return self._length_cache

    def _plan(self, epoch: int) -> list[list[int]]:
        if getattr(self, "_plan_epoch", None) != epoch:
            self._plan_cache = batching.epoch_plan(self._lengths(),
                                                   batch_size=self.cfg.batch_size,
                                                   seed=self.cfg.seed, epoch=epoch)
            self._plan_epoch = epoch
        return self._plan_cache

    def eval_share(self, batches: list[list[int]]) -> list[tuple[list[int], bool]]:
        """This process's share of evaluation batches, (indices, counted) pairs; under
        ZeRO-3 / FSDP2 padded to equal counts (see `distributed.equal_share`)."""
        if self.sharded:
            return distributed.equal_share(batches, self.world, self.rank)
        return [(b, True) for b in batches[self.rank::self.world]]

    def _sum_vector(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        if self.world > 1:
            tensor = self.accelerator.reduce(tensor, reduction="sum")
        return tensor.tolist()

    def _sum_across_processes(self, value: float) -> float:
        return self._sum_vector([value])[0]

    def _max_across_processes(self, value: float) -> float:
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.accelerator.device)
        if self.world > 1:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return float(tensor.item())

    def _all_processes(self, flag: bool) -> bool:
        """True when `flag` holds on every process (a collective: all must call it)."""
        return self._sum_across_processes(float(flag)) == self.world

    def _say(self, text: str) -> None:
        if self.is_main:
            print(text, file=sys.stderr, flush=True)
