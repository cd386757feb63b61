"""The `alignment` command line.

  alignment check RECIPE [key=value ...]     validate, print the resolved recipe (no model)
  alignment train RECIPE [key=value ...]     run it (also: accelerate launch RECIPE); with
                                             launch.num_processes > 1 it starts them
  alignment eval --model M --data FILE       greedy exact-answer accuracy, JSON + table
  alignment eval --reward-model DIR --data PAIRS [--json F]
                                             a reward model's pairwise accuracy and margin
  alignment generate --model M --data F --n 8 --reward-model DIR --output F
                                             best-of-N: sample N, keep the best-scored one
  alignment score --scorer NAME | --reward-model DIR --input F --output F
                                             add rewards to a jsonl file (streaming)
  alignment model NAME                       resolve a model name to a local folder

User errors (bad recipe, bad data, unknown model, a full disk, an output_dir another run
is using) print one clear message and exit 2; a rollout engine that died or hung exits 3
after saving what it could (run the same command to resume).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        print(f"error: no command given (one of: {', '.join(parser.command_names)})",
              file=sys.stderr)
        return EXIT_USAGE
    from alignment.config import ConfigError
    from alignment.data import DataError
    from alignment.disk import is_disk_full
    from alignment.errors import TrainingError
    from alignment.launch import LaunchError
    from alignment.models import ModelNotFoundError
    from alignment.rollout.guard import EXIT_ENGINE, EngineFailure
    from reward_models.base import ScorerError
    from reward_models.reward_model import RewardModelError
    from reward_models.sandbox import IsolationError

    # user errors, found up front or mid-run (TrainingError covers an engine that stopped
    # taking the trainer's weights; ScorerError a reward function failing with
    # on_error: raise): one message each, no traceback
    try:
        return args.run(args)
    except EngineFailure as exc:   # resumable: its own status, for a supervisor to retry
        print(f"{_rank_prefix()}error: {exc}", file=sys.stderr)
        return EXIT_ENGINE
    except (ConfigError, DataError, ModelNotFoundError, LaunchError, TrainingError,
            ScorerError, RewardModelError, IsolationError) as exc:
        print(f"{_rank_prefix()}error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:   # a full disk met by any other write (logs, data cache)
        if not is_disk_full(exc):
            raise
        print(f"{_rank_prefix()}error: disk full: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _rank_prefix() -> str:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return f"[rank {os.environ.get('RANK', '0')}] " if world > 1 else ""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alignment", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command")

    check = sub.add_parser("check", help="validate a recipe and print it resolved")
    check.add_argument("recipe", nargs="?", help="recipes/<name>.yaml")
    check.add_argument("overrides", nargs="*", help="key=value, e.g. trainer.lr=1e-5")
    check.add_argument("--keys", action="store_true", help="list every recipe key and exit")
    check.set_defaults(run=_check)

    train = sub.add_parser("train", help="run a recipe")
    train.add_argument("recipe")
    train.add_argument("overrides", nargs="*", help="key=value, e.g. model.lora.r=16")
    train.set_defaults(run=_train)

    ev = sub.add_parser("eval", help="greedy exact-answer accuracy on prompt/answer data, "
                        "or a reward model's pairwise accuracy on preference pairs")
    what = ev.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="model name, folder or training output dir")
    what.add_argument("--reward-model", help="reward-model folder or training output dir "
                      "(ours or TRL's RewardTrainer): pairwise accuracy on --data pairs")
    ev.add_argument("--data", required=True, help="prompt/answer rows (--model) or "
                    "prompt/chosen/rejected pairs (--reward-model)")
    ev.add_argument("--by", default="task", help="--reward-model: comma-separated category "
                    "columns to break the accuracy down by, when the data has them")
    ev.add_argument("--n", type=int, default=None, help="evaluate only the first N rows")
    ev.add_argument("--max-new-tokens", type=int, default=64)
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    ev.add_argument("--system-prompt", default=None)
    ev.add_argument("--environment", default=None, help="--model: play each prompt as a "
                    "greedy multi-turn episode with this environment (python_tool, "
                    "self_correction or package.module:Name); the last turn is the answer")
    ev.add_argument("--environment-options", default="{}", help="the environment's options "
                    "as JSON, e.g. '{\"timeout_s\": 5}'")
    ev.add_argument("--max-turns", type=int, default=2, help="--environment: model turns")
    ev.add_argument("--max-episode-tokens", type=int, default=256,
                    help="--environment: tokens after the prompt, replies included")
    ev.add_argument("--output", "--json", dest="output", default=None,
                    help="JSON result path (--model default: <model dir>/eval.json or "
                    "eval.json; --reward-model: only when given)")
    ev.set_defaults(run=_eval)

    sc = sub.add_parser("score", help="add rewards to a jsonl file of prompt/completion rows")
    which = sc.add_mutually_exclusive_group(required=True)
    which.add_argument("--scorer", help="built-in name (exact_answer, math_equiv, regex, "
                       "python_tests) or package.module:Name")
    which.add_argument("--reward-model", help="folder of a trained reward model")
    sc.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="scorer option, e.g. --set pattern='#### \\d+'")
    sc.add_argument("--input", required=True)
    sc.add_argument("--output", required=True)
    sc.add_argument("--batch-size", type=int, default=32)
    sc.add_argument("--prompt-column", default="prompt")
    sc.add_argument("--completion-column", default="completion")
    sc.set_defaults(run=_score)

    gen = sub.add_parser("generate", help="best-of-N: sample N completions per prompt, keep "
                         "the one the reward model (or scorer) scores highest")
    gen.add_argument("--model", required=True, help="policy: name, folder or output dir")
    gen.add_argument("--data", required=True, help="file with a prompt column")
    gen.add_argument("--output", required=True, help="jsonl: each row + completion + reward")
    gen.add_argument("--n", type=int, default=8, help="samples per prompt (default 8)")
    judge = gen.add_mutually_exclusive_group(required=True)
    judge.add_argument("--reward-model", help="reward-model folder or training output dir")
    judge.add_argument("--scorer", help="a built-in scorer name or package.module:Name")
    gen.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="scorer option, e.g. --set dtype=bfloat16")
    gen.add_argument("--backend", default="auto", choices=["auto", "vllm", "hf"])
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    gen.add_argument("--prompts-per-batch", type=int, default=16)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    gen.add_argument("--keep-all", action="store_true", help="also write every candidate")
    gen.add_argument("--system-prompt", default=None, help="the policy's system prompt "
                     "(the reward model renders the prompt its own way)")
    gen.set_defaults(run=_generate)

    model = sub.add_parser("model", help="resolve (and if bundled, convert) a model name")
    model.add_argument("name", nargs="?", default="smollm2-135m")
    model.set_defaults(run=_model)
    p.command_names = tuple(sub.choices)
    return p


def _check(args) -> int:
    from alignment.config import describe_keys, dump_recipe, load_recipe

    if args.keys:
        for key, tp, help_text in describe_keys():
            print(f"{key:<32} {tp:<28} {help_text}")
        return 0
    if not args.recipe:
        print("error: alignment check needs a RECIPE (or --keys)", file=sys.stderr)
        return EXIT_USAGE
    recipe = load_recipe(args.recipe, args.overrides)
    print(dump_recipe(recipe), end="")
    if recipe.first_stage is not None:
        from alignment.pipeline import plan

        print(plan(recipe, args.recipe), file=sys.stderr)
    return 0


def _train(args) -> int:
    from alignment import launch
    from alignment.config import load_recipe
    from alignment.trainers import run_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.first_stage is not None:   # a pipeline: its earlier stages first
        from alignment.pipeline import StageError, run_first_stages

        try:
            run_first_stages(recipe, launched=launch.inside_launched_process())
        except StageError as exc:
            print(f"{_rank_prefix()}error: {exc}", file=sys.stderr)
            return exc.status
        recipe = load_recipe(args.recipe, args.overrides)   # now with stage one's paths
    if not launch.inside_launched_process() or os.environ.get("RANK", "0") == "0":
        from alignment.preflight import preflight

        preflight(recipe)   # seconds: output folder, disk space, data and its columns
    if not launch.inside_launched_process():
        plan = launch.plan(recipe)
        if plan.needs_launcher:   # start the processes; each runs this command again
            return launch.launch(args.recipe, args.overrides, plan)
        launch.check_single_process_start()
    run_recipe(recipe, recipe_path=args.recipe)
    return 0


def _eval(args) -> int:
    from alignment import atomic
    from alignment.evaluation import EvalSettings, evaluate, format_table

    if args.n is not None and args.n <= 0:
        print(f"error: --n must be positive, got {args.n}", file=sys.stderr)
        return EXIT_USAGE
    for flag, value in (("--batch-size", args.batch_size),
                        ("--max-new-tokens", args.max_new_tokens)):
        if value <= 0:
            print(f"error: {flag} must be positive, got {value}", file=sys.stderr)
            return EXIT_USAGE
    problem = args.output and _output_problem(args.output)
    if problem:
        print(f"error: --output '{args.output}' {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.reward_model:
        return _eval_reward_model(args)
    try:
        options = json.loads(args.environment_options)
        if not isinstance(options, dict):
            raise ValueError("not a JSON object")
        if args.environment is not None:
            from alignment.environments import environment_factory

            environment_factory(args.environment, options)   # name and options checked now
    except ValueError as exc:
        print(f"error: --environment: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.max_turns <= 0 or args.max_episode_tokens <= 0:
        print("error: --max-turns and --max-episode-tokens must be positive", file=sys.stderr)
        return EXIT_USAGE
    settings = EvalSettings(limit=args.n, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size, dtype=args.dtype,
                            system_prompt=args.system_prompt, environment=args.environment,
                            environment_options=options, max_turns=args.max_turns,
                            max_episode_tokens=args.max_episode_tokens)
    result = evaluate(args.model, args.data, settings, progress=sys.stderr.isatty())
    print(format_table(result))
    output = args.output
    if output is None:
        output = Path(args.model) / "eval.json" if Path(args.model).is_dir() else "eval.json"
    atomic.write_json(output, result)
    print(f"wrote {output}")
    return 0


def _eval_reward_model(args) -> int:
    from alignment import atomic
    from alignment.models import resolve_dtype, resolve_model
    from alignment.rm_eval import evaluate_reward_model, format_table

    by = tuple(c.strip() for c in args.by.split(",") if c.strip())
    # auto: bf16 where native, the dtype the trainer evaluates in (its eval/rewards/accuracy)
    dtype = str(resolve_dtype(args.dtype)).removeprefix("torch.")
    try:
        result = evaluate_reward_model(resolve_model(args.reward_model), args.data, by=by,
                                       limit=args.n, batch_size=args.batch_size, dtype=dtype,
                                       progress=sys.stderr.isatty())
    except ValueError as exc:   # not a reward model, no chat template, nothing scorable
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(format_table(result))
    if args.output:
        atomic.write_json(args.output, result)
        print(f"wrote {args.output}")
    return 0


def _scorer_options(items: list[str]) -> dict:
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set '{item}' is not KEY=VALUE")
        loaded = yaml.safe_load(value) if value.strip() else ""
        # YAML reads '#...' as a comment (None): keep such text as the string it is
        options[key] = value if loaded is None and value.strip() not in ("null", "~") else loaded
    return options


def _build_scorer(args, **defaults):
    from alignment.models import resolve_model
    from reward_models import build_scorer

    options = _scorer_options(args.set)
    if args.reward_model:
        return build_scorer("reward_model", path=resolve_model(args.reward_model),
                            **{**defaults, **options})
    return build_scorer(args.scorer, **options)


def _generate(args) -> int:
    from alignment.best_of_n import best_of_n
    from alignment.rollout import SamplingParams

    for flag, value in (("--n", args.n), ("--prompts-per-batch", args.prompts_per_batch),
                        ("--max-new-tokens", args.max_new_tokens)):
        if value <= 0:
            print(f"error: {flag} must be positive, got {value}", file=sys.stderr)
            return EXIT_USAGE
    if args.limit is not None and args.limit <= 0:
        print(f"error: --limit must be positive, got {args.limit}", file=sys.stderr)
        return EXIT_USAGE
    problem = _output_problem(args.output)
    if problem:
        print(f"error: --output '{args.output}' {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        sampling = SamplingParams(temperature=args.temperature, top_p=args.top_p,
                                  top_k=args.top_k, max_new_tokens=args.max_new_tokens)
        scorer = _build_scorer(args)
        summary = best_of_n(args.model, args.data, args.output, scorer, n=args.n,
                            backend=args.backend, sampling=sampling,
                            prompts_per_batch=args.prompts_per_batch, limit=args.limit,
                            seed=args.seed, dtype=args.dtype, keep_all=args.keep_all,
                            system_prompt=args.system_prompt, progress=sys.stderr.isatty())
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for key, value in summary.items():
        print(f"{key:<22}{value:.1%}" if key.startswith("accuracy") else f"{key:<22}{value}")
    return 0


def _score(args) -> int:
    from alignment.scoring import report, score_file

    if args.batch_size <= 0:
        print(f"error: --batch-size must be positive, got {args.batch_size}", file=sys.stderr)
        return EXIT_USAGE
    problem = _output_problem(args.output)
    if problem:
        print(f"error: --output '{args.output}' {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        scorer = _build_scorer(args, batch_size=args.batch_size)
        stats = score_file(scorer, args.input, args.output, batch_size=args.batch_size,
                           prompt_column=args.prompt_column,
                           completion_column=args.completion_column,
                           progress=sys.stderr.isatty())
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report(stats, args.output)
    return 0


def _output_problem(output: str) -> str | None:
    """Why a file cannot be written at `output` (checked before any work is done)."""
    path = Path(output)
    if path.is_dir():
        return "is a folder; give a file name"
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else (f"cannot be created: '{parent}' is a file, "
                                                 "not a folder")
    return None


def _model(args) -> int:
    from alignment.models import resolve_model

    print(resolve_model(args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
