"""Recipes: YAML files mapped onto typed dataclasses, validated before anything is loaded."""

from alignment.config.loader import (
    ConfigError,
    all_keys,
    describe_keys,
    dump_recipe,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
)
from alignment.config.schema import Recipe

__all__ = ["ConfigError", "Recipe", "all_keys", "describe_keys", "dump_recipe", "load_recipe",
           "recipe_from_dict", "recipe_to_dict"]
