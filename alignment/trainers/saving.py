"""Checkpoints, resume and the exported model: the `Trainer`'s half that writes to disk.

Every process takes part (sharded weights are gathered collectively); only the main process
writes. Before each write the checkpoint's size is checked against the free space, and a
disk that fills during it stops the run with one line while the earlier checkpoints stay
intact (`alignment.disk`). Resume takes the newest checkpoint whose files match its
manifest, setting damaged ones aside (`checkpoint.choose_checkpoint`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from alignment import atomic, disk
from alignment.config import dump_recipe
from alignment.errors import TrainingError
from alignment.lora_merge import merged_lora_state
from alignment.models import set_default_system_prompt
from alignment.trainers import checkpoint, distributed

# a checkpoint's bytes per trained parameter besides its weights: trainer.pt's (or
# DeepSpeed's) fp32 master copy and AdamW's two fp32 moments
OPTIMIZER_BYTES_PER_PARAM = 12
WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class Checkpointing:
    """Mixin of `Trainer` (uses its accelerator, models, optimizer, scheduler, recipe)."""

    def save_checkpoint(self, history: list[dict], rng_states: list[dict] | None = None
                        ) -> None:
        """`rng_states`: the ones to keep (default: every process's now)."""
        if self.zero_stage:
            return self._save_deepspeed_checkpoint(history, rng_states)
        rng_states = rng_states or self._rng_states()   # (collective)
        # (FSDP2: both gather whole tensors, a collective; rank 0 keeps them to write)
        optimizer_state = self.optim.state_dict(keep=self.is_main)
        weights = (distributed.full_state_dict(self.trainable, keep=self.is_main)
                   if self.fsdp else None)
        if self.is_main:
            states = None if weights is None else {
                name: self._module_state(weights, "policy" if name == "model" else name)
                for name in ("model", *self.extra_models())}
            checkpoint.save_checkpoint(
                self.output_dir, self.step, model=self.policy, tokenizer=self.tokenizer,
                extra_models=self.extra_models(), state_dicts=states,
                trainer_state=self._trainer_state(history), optimizer_state=optimizer_state,
                scheduler_state=self.scheduler.state_dict(), rng_states=rng_states,
                recipe_yaml=dump_recipe(self.recipe), keep=self.cfg.keep_checkpoints,
                need=self.checkpoint_bytes())
        self.accelerator.wait_for_everyone()

    def checkpoint_bytes(self) -> int:
        """What the next checkpoint will take on disk: the last one's size when there is
        one, else weights as saved (LoRA: the trained tensors) plus 12 bytes per trained
        parameter of optimizer state. Every checkpoint is written whole before an old one
        is pruned, so this much must be free."""
        last = checkpoint.latest_checkpoint(self.output_dir)
        if last is not None:
            return sum(p.stat().st_size for p in last.rglob("*") if p.is_file())
        saved = trained = 0
        for p in self.trainable.parameters():
            n = distributed.full_numel(p)
            trained += n if p.requires_grad else 0
            if p.requires_grad or not self.uses_lora:
                saved += n * p.element_size()
        folders = 1 + len(self.extra_models())
        return saved + OPTIMIZER_BYTES_PER_PARAM * trained + self._side_files_bytes() * folders

    def _side_files_bytes(self) -> int:
        """Tokenizer and config files as saved next to each model folder: those of the
        model's own folder (3.5 MB for SmolLM2, 30 MB and more for some tokenizers)."""
        folder = Path(self.model_path)
        return 1_000_000 + sum(p.stat().st_size for p in folder.iterdir()
                               if p.is_file() and not p.name.endswith(WEIGHT_FILES))

    # ------------------------------------------------------------------ after a failure
    def mark_step_start(self) -> None:
        """Called before each step: what `save_for_resume` needs to save this step's
        starting point if the step fails before its update (one process: RNG states)."""
        self.updated_this_step = False
        self.rng_at_step_start = checkpoint.rng_state() if self.world == 1 else None

    def save_for_resume(self) -> str:
        """After a failure outside the model update (the engine died): save the state the
        current step started from, when that is still possible (one process, no update of
        this step applied yet); returns what the user can resume from, as a clause."""
        last = checkpoint.latest_checkpoint(self.output_dir)
        done = last is not None and last.name == f"step-{self.step:06d}"
        if self.step and not done and self.world == 1 \
                and not getattr(self, "updated_this_step", True) and hasattr(self, "logger"):
            try:
                self.save_checkpoint(self.logger.history, rng_states=[self.rng_at_step_start])
                last, done = checkpoint.latest_checkpoint(self.output_dir), True
            except Exception as exc:   # (e.g. the disk is full as well): say so, go on
                self._say(f"could not save a checkpoint after the failure: {exc}")
        if last is None:
            return "no checkpoint was written: the same command starts over"
        step = int(last.name.split("-")[1])
        saved = "saved" if done and step == self.step else "last"
        return (f"{saved} checkpoint {last.name} (step {step} of {self.total_steps}): run the "
                "same command to resume from it")

    def engine_hung(self, call: str, timeout_s: float) -> None:
        """The watchdog's verdict on an engine call still running after `timeout_s`
        (`rollout.guard`), in its own thread: the stuck call cannot be interrupted, so save
        what can be saved and end the process with status 3."""
        import os
        import sys

        from alignment.rollout.guard import EXIT_ENGINE

        what = self.save_for_resume()
        print(f"error: the rollout engine ({self.engine.backend}) hung: {call} did not return "
              f"within rollout.timeout_s={timeout_s:g} s at step {self.step + 1}; {what}",
              file=sys.stderr, flush=True)
        self.run_lock.release()
        os._exit(EXIT_ENGINE)

    def _rng_states(self) -> list[dict]:
        """Every process's RNG states, in rank order (a collective): their streams part
        as soon as they draw different amounts (e.g. dropout on batches of other sizes)."""
        states = [None] * self.world
        if self.world == 1:
            states[0] = checkpoint.rng_state()
        else:
            torch.distributed.all_gather_object(states, checkpoint.rng_state())
        return states

    def _trainer_state(self, history: list[dict]) -> dict:
        return {"step": self.step, "total_steps": self.total_steps,
                "epoch": self.step / self.steps_per_epoch, "world": self.world,
                "extra": self.extra_state(), "history": history[-1000:]}

    def _save_deepspeed_checkpoint(self, history: list[dict],
                                   rng_states: list[dict] | None = None) -> None:
        """The same layout plus `deepspeed/` (every process writes its optimizer shard).
        Assembled under a fixed temporary name all processes agree on, renamed by rank 0."""
        root = self.output_dir / "checkpoints"
        target = root / f"step-{self.step:06d}"
        tmp = root / f".{target.name}.tmp"
        need = self.checkpoint_bytes()
        # every process checks before any writes its shard (they stop together)
        disk.require_space(root if root.exists() else self.output_dir, need,
                           f"checkpoint {target.name}", checkpoint.kept_clause(self.output_dir))
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        with disk.disk_full_stops(root, need, f"checkpoint {target.name}",
                                  checkpoint.kept_clause(self.output_dir)):
            self.accelerator.save_state(str(tmp / "deepspeed"))         # collective
        weights = self.accelerator.get_state_dict(self.model)           # collective (ZeRO-3)
        rng_states = rng_states or self._rng_states()                   # collective
        if self.is_main:
            with checkpoint.writing(self.output_dir, target, 0, tmp=tmp):
                self.policy.save_pretrained(tmp / "model",
                                            state_dict=self._module_state(weights, "policy"))
                self.tokenizer.save_pretrained(tmp / "model")
                for name, extra in self.extra_models().items():
                    extra.save_pretrained(tmp / name,
                                          state_dict=self._module_state(weights, name))
                    self.tokenizer.save_pretrained(tmp / name)
                checkpoint.write_trainer_files(tmp, self._trainer_state(history),
                                               scheduler_state=self.scheduler.state_dict(),
                                               recipe_yaml=dump_recipe(self.recipe),
                                               rng_states=rng_states)
            checkpoint.prune(self.output_dir, self.cfg.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    def export_final(self) -> None:
        """`output_dir/final`: a plain HF model (LoRA merged; adapter also kept) in fp32,
        holding the weights the loss was computed with. Under bf16 those are the bf16
        values, upcast exactly, and not the fp32 master copy: a master differs from its
        weight by up to half a bf16 step, a residue no forward pass ever saw, and a model
        made of the masters can be far worse than the one trained (a GRPO run on add2: 64%
        greedy from its weights, 2% from its masters). fp32 makes the LoRA merge exact."""
        # ZeRO-3 and FSDP2 shard the weights: gather them (all processes take part)
        weights = (distributed.full_state_dict(self.trainable, keep=self.is_main)
                   if self.zero_stage or self.fsdp else None)
        if self.is_main:
            numel = sum(distributed.full_numel(p) for p in self.trainable.parameters())
            need = 4 * numel + self._side_files_bytes() * (1 + len(self.extra_models()))
            kept = (f"the checkpoints in {self.output_dir / 'checkpoints'} are intact: free "
                    "space, then run the same command to write final/ from the last one")
            disk.require_space(self.output_dir, need, "final/", kept)
            if any(p.dtype in (torch.bfloat16, torch.float16)
                   for p in self.trainable.parameters()):
                self.trainable.float()
            with atomic.atomic_dir(self.output_dir / "final") as tmp, \
                    disk.disk_full_stops(self.output_dir, need, "final/", kept):
                _save_merged(self.policy, tmp, self._module_state(weights, "policy"))
                self._export_tokenizer().save_pretrained(tmp)
                for name, extra in self.extra_models().items():
                    _save_merged(extra, tmp / name, self._module_state(weights, name))
                    self._export_tokenizer().save_pretrained(tmp / name)
                (tmp / "recipe.yaml").write_text(dump_recipe(self.recipe))
            self._say(f"saved {self.output_dir / 'final'}")
        self.accelerator.wait_for_everyone()

    def _export_tokenizer(self):
        """The tokenizer, its chat template carrying data.system_prompt as the default
        system message: the exported model is then prompted as it was trained."""
        d = self.recipe.data
        if not (d.system_prompt and d.chat_template and self.tokenizer.chat_template):
            return self.tokenizer
        import copy

        tokenizer = copy.deepcopy(self.tokenizer)
        set_default_system_prompt(tokenizer, d.system_prompt)
        return tokenizer

    def _resume(self) -> None:
        """Continue from the newest intact checkpoint, if any. Every process reads the same
        verdict (`choose_checkpoint` only reads); the main process then sets damaged
        checkpoints aside, saying which and why."""
        if self.is_main:
            checkpoint.remove_partial(self.output_dir)
        self.accelerator.wait_for_everyone()
        last, damaged = checkpoint.choose_checkpoint(self.output_dir)
        self.accelerator.wait_for_everyone()
        for folder, why in damaged:
            if self.is_main:
                moved = checkpoint.set_aside(folder)
                self._say(f"skipping checkpoint {folder.name}: {why}; moved to {moved.name}")
        if last is None:
            return
        checkpoint.check_recipe(last, dump_recipe(self.recipe),
                                ignore=self.cfg.resume_ignore_changes, say=self._say)
        state, blobs = checkpoint.load_checkpoint(last)
        if self.zero_stage:
            if state["world"] != self.world or not (last / "deepspeed").is_dir():
                how = "with" if (last / "deepspeed").is_dir() else "without"
                raise TrainingError(f"{last} was written by {state['world']} process(es) {how} "
                                    "DeepSpeed: resume a DeepSpeed run with the same launch "
                                    "settings")
            self.accelerator.load_state(str(last / "deepspeed"))   # collective
        elif state["world"] != self.world:
            self._say(f"note: checkpoint was written by {state['world']} process(es), now "
                      f"{self.world}: the data order continues by global step")
        self.optim.load_state_dict(blobs.get("optimizer", {}))
        self.scheduler.load_state_dict(blobs["scheduler"])
        self.load_extra_state(state.get("extra", {}))
        checkpoint.restore_rng(blobs["rng"], self.rank, self.world)
        self.step = state["step"]
        self._say(f"resuming from {last} (step {self.step} of {self.total_steps})")


def _save_merged(model, folder: Path, state_dict: dict | None) -> None:
    """A plain HF folder; a PEFT model is merged (its adapter also kept, in `adapter/`).
    `state_dict`: the gathered weights under DeepSpeed (the module's own may be shards)."""
    if hasattr(model, "merge_and_unload"):
        model.save_pretrained(folder / "adapter", state_dict=state_dict)
        if state_dict is None:
            model = model.merge_and_unload()
        else:
            state_dict = merged_lora_state(state_dict, model.peft_config["default"])
            model = model.get_base_model()
    model.save_pretrained(folder, state_dict=state_dict)
