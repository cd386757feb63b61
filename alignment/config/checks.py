"""Rules between recipe keys, checked after every key is valid on its own: which sections
and keys apply to the chosen algorithm and mode, and values that only make sense together.
Each problem is one line naming the dotted key(s) (collected, not raised: the loader
reports them all at once)."""

from __future__ import annotations

from alignment.config.schema import (
    CRITIC,
    PAIRS_ONLINE,
    Recipe,
    is_online,
    uses_rewards,
    uses_rollout,
)
from alignment.config.stages import inside_pending


def check_cross_fields(recipe: Recipe, problems: list[str],
                       pending: tuple[str, ...] = ()) -> None:
    """`pending`: folders an earlier stage of the pipeline has yet to write (a reward model
    inside one is checked once that stage has run)."""
    d = recipe.data
    if d.max_prompt_length >= d.max_length:
        problems.append(f"data.max_prompt_length ({d.max_prompt_length}) must be smaller than "
                        f"data.max_length ({d.max_length}) to leave room for the completion")
    if uses_rewards(recipe):
        from reward_models.registry import check_specs

        problems.extend(check_specs(recipe.rewards,
                                    deferred=lambda value: inside_pending(value, pending)))
    if recipe.algorithm in CRITIC:
        _check_critic(recipe, problems)
        _check_ppo_max(recipe, problems)
    if recipe.algorithm == "spin":
        _check_spin(recipe, problems)
    if recipe.algorithm == "reward_model":
        _check_reward_model(recipe, problems)
    _check_trackers(recipe, problems)
    if recipe.model.lora.r == 0 and recipe.model.lora.dropout > 0:
        problems.append("model.lora.dropout is set but LoRA is off (model.lora.r = 0)")
    if is_online(recipe) and recipe.environment.name is not None:
        _check_environment(recipe, problems)
    elif recipe.environment.first_turn_kl > 0:
        problems.append("environment.first_turn_kl needs an environment (environment.name): "
                        "without one every completion is a single turn; use grpo.beta")
    if is_online(recipe):
        cache = getattr(recipe, recipe.algorithm).overlong_cache
        budget = recipe.rollout.max_new_tokens
        if cache > budget:   # the penalty ramps over the last `cache` tokens of the budget
            problems.append(f"{recipe.algorithm}.overlong_cache ({cache}) must be at most "
                            f"rollout.max_new_tokens ({budget}): the overlong penalty ramps "
                            "over the last overlong_cache tokens of the completion budget")


def _check_environment(recipe: Recipe, problems: list[str]) -> None:
    """The environment's name and options (built once to check them: a sandbox this machine
    cannot give fails here), and a token budget that holds at least a turn."""
    from alignment.environments import environment_factory

    env = recipe.environment
    try:
        environment_factory(env.name, dict(env.options))
    except ValueError as exc:
        problems.append(f"environment: {exc}")
    if env.first_turn_kl > 0 and recipe.algorithm != "grpo":
        problems.append(f"environment.first_turn_kl applies to grpo (its KL term is per token), "
                        f"not '{recipe.algorithm}'")
    if env.max_episode_tokens < recipe.rollout.max_new_tokens:
        problems.append(f"environment.max_episode_tokens ({env.max_episode_tokens}) must be at "
                        f"least rollout.max_new_tokens ({recipe.rollout.max_new_tokens}): the "
                        "first turn alone may take that many")


# keys of a pair loss's section that only its online mode reads (offline-only: the rest)
PAIRS_ONLINE_KEYS = ("prompts_per_step", "num_generations", "max_sampling_rounds",
                     "overlong_cache", "mask_truncated", "layout")
PAIRS_OFFLINE_KEYS = ("reference", "rewards_from", "reward_columns")


def check_sections(recipe: Recipe, raw: dict, problems: list[str]) -> None:
    """Sections and keys that the chosen algorithm (and mode) would silently ignore."""
    name = recipe.algorithm
    mode = f"'{name}'" + (" (offline)" if name in PAIRS_ONLINE and not is_online(recipe) else "")
    if "rollout" in raw and not uses_rollout(recipe):
        problems.append(f"section 'rollout' applies to runs that generate (online algorithms, "
                        f"spin, {'/'.join(PAIRS_ONLINE)} with online: true), not {mode}")
    if "environment" in raw and not is_online(recipe):
        problems.append(f"section 'environment' applies to runs that learn from their own "
                        f"samples (online algorithms, {'/'.join(PAIRS_ONLINE)} with online: "
                        f"true), not {mode}")
    if "rewards" in raw and not uses_rewards(recipe):
        hint = (" (copg scores its pairs with it only with copg.rewards_from: scorer)"
                if name == "copg" else "")
        problems.append(f"section 'rewards' applies to runs that score samples, not "
                        f"{mode}{hint}")
    if name not in PAIRS_ONLINE:
        return
    section = raw.get(name) or {}
    if is_online(recipe):
        if "rewards" not in raw:
            problems.append(f"{name}.online is true but the recipe has no 'rewards:' section: "
                            "say how samples are scored (e.g. rewards: [{name: exact_answer}])")
        for key in PAIRS_OFFLINE_KEYS:
            if key in section:
                problems.append(f"{name}.{key} applies to offline {name} only "
                                f"({name}.online is true)")
    else:
        for key in PAIRS_ONLINE_KEYS:
            if key in section:
                problems.append(f"{name}.{key} applies only with {name}.online: true")
    if name == "copg" and len(recipe.copg.reward_columns) != 2:
        problems.append(f"copg.reward_columns must name 2 columns (one per completion), got "
                        f"{recipe.copg.reward_columns}")
    if name == "copg" and is_online(recipe) and recipe.copg.num_generations % 2:
        problems.append(f"copg.num_generations must be even (samples are paired), got "
                        f"{recipe.copg.num_generations}")


def _check_spin(recipe: Recipe, problems: list[str]) -> None:
    if recipe.trainer.epochs != 1:
        problems.append(f"trainer.epochs ({recipe.trainer.epochs}) does not apply to spin: set "
                        "spin.epochs (passes per iteration) and spin.iterations")
    lam = recipe.spin.lam
    if not lam or not all(v > 0 for v in lam):
        problems.append(f"spin.lam must be a non-empty list of values > 0, got {lam}")
    elif len(lam) > recipe.spin.iterations:
        problems.append(f"spin.lam has {len(lam)} values for spin.iterations="
                        f"{recipe.spin.iterations}")


def _check_reward_model(recipe: Recipe, problems: list[str]) -> None:
    rm = recipe.reward_model
    if rm.kind == "likelihood":
        for key in ("token_weight", "lm_weight", "center_weight"):
            if getattr(rm, key) > 0:
                problems.append(f"reward_model.{key} applies to kind 'classifier' only "
                                "(reward_model.kind is 'likelihood')")
        if rm.lm_layer is not None:
            problems.append("reward_model.lm_layer applies to kind 'classifier' only "
                            "(reward_model.kind is 'likelihood')")
    elif rm.reference:
        problems.append("reward_model.reference applies to kind 'likelihood' only "
                        "(reward_model.kind is 'classifier': its head has no reference)")


def _check_trackers(recipe: Recipe, problems: list[str]) -> None:
    """Each tracker in logging.report_to is installed: refused here, not after the model
    has loaded."""
    import importlib.metadata
    import importlib.util
    import os

    names = recipe.logging.report_to
    if "none" in names and len(names) > 1:
        problems.append(f"logging.report_to: 'none' cannot be combined with trackers {names}")
    for name in names:   # (each tracker's package has its module's name)
        if name != "none" and importlib.util.find_spec(name) is None:
            problems.append(f"logging.report_to: '{name}' is not installed: pip install {name}")
    if ("mlflow" in names and not os.environ.get("MLFLOW_TRACKING_URI")
            and importlib.util.find_spec("mlflow") is not None):
        try:   # mlflow's default store (sqlite:///mlflow.db) needs the full package
            importlib.metadata.distribution("mlflow")
        except importlib.metadata.PackageNotFoundError:   # only mlflow-skinny
            problems.append("logging.report_to: mlflow-skinny has no local store: set "
                            "MLFLOW_TRACKING_URI (an http(s):// server, or file:DIR with "
                            "MLFLOW_ALLOW_FILE_STORE=true) or pip install mlflow")


def _check_critic(recipe: Recipe, problems: list[str]) -> None:
    c = recipe.critic
    if c.init == "reward_model" and not c.path:
        problems.append("critic.init is 'reward_model' but critic.path is not set (a "
                        "sequence-classification folder, e.g. runs/reward_model)")
    if c.init == "policy" and c.path:
        problems.append(f"critic.path ({c.path}) is only read with critic.init: reward_model")
    if c.lora.r == 0 and c.lora.dropout > 0:
        problems.append("critic.lora.dropout is set but critic LoRA is off (critic.lora.r = 0)")
    for key, lora in (("model", recipe.model.lora), ("critic", c.lora)):
        if lora.r > 0 and lora.dropout > 0:   # ratio != 1 at the first update (§1.5)
            problems.append(f"{key}.lora.dropout must be 0 for {recipe.algorithm}: dropout makes "
                            "the policy/critic differ between rollout and update")


def _check_ppo_max(recipe: Recipe, problems: list[str]) -> None:
    name = recipe.algorithm
    algo = getattr(recipe, name)
    if algo.ptx_coef > 0 and algo.ptx_data is None:
        problems.append(f"{name}.ptx_coef is {algo.ptx_coef} but {name}.ptx_data is not set "
                        "(prompt/completion demonstrations, e.g. "
                        "data/arithmetic/add2_sft_plain/train.jsonl)")
    if algo.ptx_coef == 0 and (algo.ptx_data is not None or algo.ptx_batch_size is not None):
        key = "ptx_data" if algo.ptx_data is not None else "ptx_batch_size"
        problems.append(f"{name}.{key} is only read with {name}.ptx_coef > 0")
    steps = recipe.trainer.max_steps
    if steps is not None and algo.critic_warmup_steps >= steps:
        problems.append(f"{name}.critic_warmup_steps ({algo.critic_warmup_steps}) must be "
                        f"smaller than trainer.max_steps ({steps}): the policy would never "
                        "be trained")
