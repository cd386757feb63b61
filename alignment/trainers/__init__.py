"""Trainers: one small class per algorithm on one shared base (`alignment.trainers.base`)."""

from __future__ import annotations

from alignment.config import ConfigError, Recipe

# algorithm name -> "module:Class"; a name in the recipe schema without an entry here is
# reported as not available in this version instead of failing deep inside.
TRAINERS: dict[str, str] = {
    "dpo": "alignment.trainers.dpo:DPOTrainer",
    "ipo": "alignment.trainers.ipo:IPOTrainer",
    "reward_model": "alignment.trainers.reward_model:RewardModelTrainer",
    "grpo": "alignment.trainers.grpo:GRPOTrainer",
    "ppo": "alignment.trainers.ppo:PPOTrainer",
    "apa": "alignment.trainers.apa:APATrainer",
    "drpo": "alignment.trainers.drpo:DRPOTrainer",
}


def run_recipe(recipe: Recipe, recipe_path: str | None = None) -> None:
    target = TRAINERS.get(recipe.algorithm)
    if target is None:
        raise ConfigError([f"algorithm '{recipe.algorithm}' has no trainer in this version "
                           f"(available: {', '.join(TRAINERS) or 'none yet'})"], recipe_path)
    import importlib

    module, _, cls = target.partition(":")
    trainer = getattr(importlib.import_module(module), cls)(recipe, recipe_path=recipe_path)
    trainer.train()
