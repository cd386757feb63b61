"""Trainers: one small class per algorithm on one shared base (`alignment.trainers.base`)."""

from __future__ import annotations

from alignment.config import ConfigError, Recipe

# algorithm name -> "module:Class"; a name in the recipe schema without an entry here is
# reported as not available in this version instead of failing deep inside.
TRAINERS: dict[str, str] = {
    "dpo": "alignment.trainers.dpo:DPOTrainer",
    "ipo": "alignment.trainers.ipo:IPOTrainer",
    "copg": "alignment.trainers.copg:CoPGTrainer",
    "spin": "alignment.trainers.spin:SPINTrainer",
    "sft": "alignment.trainers.sft:SFTTrainer",
    "dpo+online": "alignment.trainers.dpo:OnlineDPOTrainer",
    "ipo+online": "alignment.trainers.ipo:OnlineIPOTrainer",
    "copg+online": "alignment.trainers.copg:OnlineCoPGTrainer",
    "reward_model": "alignment.trainers.reward_model:RewardModelTrainer",
    "grpo": "alignment.trainers.grpo:GRPOTrainer",
    "ppo": "alignment.trainers.ppo:PPOTrainer",
    "apa": "alignment.trainers.apa:APATrainer",
    "drpo": "alignment.trainers.drpo:DRPOTrainer",
}


def trainer_key(recipe: Recipe) -> str:
    """The TRAINERS entry of a recipe: its algorithm, `+online` for a pair loss's online mode."""
    from alignment.config.schema import PAIRS_ONLINE, is_online

    online = recipe.algorithm in PAIRS_ONLINE and is_online(recipe)
    return recipe.algorithm + ("+online" if online else "")


def run_recipe(recipe: Recipe, recipe_path: str | None = None) -> None:
    target = TRAINERS.get(trainer_key(recipe))
    if target is None:
        raise ConfigError([f"algorithm '{recipe.algorithm}' has no trainer in this version "
                           f"(available: {', '.join(TRAINERS) or 'none yet'})"], recipe_path)
    import importlib

    module, _, cls = target.partition(":")
    trainer = getattr(importlib.import_module(module), cls)(recipe, recipe_path=recipe_path)
    trainer.train()
