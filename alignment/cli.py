"""The `alignment` command line.

  alignment check RECIPE [key=value ...]     validate, print the resolved recipe (no model)
  alignment train RECIPE [key=value ...]     run it (also: accelerate launch RECIPE); with
                                             launch.num_processes > 1 it starts them
  alignment eval --model M --data FILE       greedy exact-answer accuracy, JSON + table
  alignment score --scorer NAME | --reward-model DIR --input F --output F
                                             add rewards to a jsonl file (streaming)
  alignment model NAME                       resolve a model name to a local folder

User errors (bad recipe, bad data, unknown model) print one clear message and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    from alignment.config import ConfigError
    from alignment.data import DataError
    from alignment.errors import TrainingError
    from alignment.launch import LaunchError
    from alignment.models import ModelNotFoundError

    try:
        return args.run(args)
    except (ConfigError, DataError, ModelNotFoundError, LaunchError, TrainingError) as exc:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        where = f"[rank {os.environ.get('RANK', '0')}] " if world > 1 else ""
        print(f"{where}error: {exc}", file=sys.stderr)
        return EXIT_USAGE


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

    ev = sub.add_parser("eval", help="greedy exact-answer accuracy on prompt/answer data")
    ev.add_argument("--model", required=True, help="model name, folder or training output dir")
    ev.add_argument("--data", required=True, help="file with prompt and answer columns")
    ev.add_argument("--n", type=int, default=None, help="evaluate only the first N rows")
    ev.add_argument("--max-new-tokens", type=int, default=64)
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    ev.add_argument("--system-prompt", default=None)
    ev.add_argument("--output", default=None,
                    help="JSON result path (default: <model dir>/eval.json or eval.json)")
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

    model = sub.add_parser("model", help="resolve (and if bundled, convert) a model name")
    model.add_argument("name", nargs="?", default="smollm2-135m")
    model.set_defaults(run=_model)
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
    return 0


def _train(args) -> int:
    from alignment import launch
    from alignment.config import load_recipe
    from alignment.trainers import run_recipe

    recipe = load_recipe(args.recipe, args.overrides)
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
    settings = EvalSettings(limit=args.n, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size, dtype=args.dtype,
                            system_prompt=args.system_prompt)
    result = evaluate(args.model, args.data, settings, progress=sys.stderr.isatty())
    print(format_table(result))
    output = args.output
    if output is None:
        output = Path(args.model) / "eval.json" if Path(args.model).is_dir() else "eval.json"
    atomic.write_json(output, result)
    print(f"wrote {output}")
    return 0


def _score(args) -> int:
    import yaml

    from alignment.scoring import report, score_file
    from reward_models import build_scorer

    if args.batch_size <= 0:
        print(f"error: --batch-size must be positive, got {args.batch_size}", file=sys.stderr)
        return EXIT_USAGE
    options = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --set '{item}' is not KEY=VALUE", file=sys.stderr)
            return EXIT_USAGE
        loaded = yaml.safe_load(value) if value.strip() else ""
        # YAML reads '#...' as a comment (None): keep such text as the string it is
        options[key] = value if loaded is None and value.strip() not in ("null", "~") else loaded
    try:
        if args.reward_model:
            from alignment.models import resolve_model

            scorer = build_scorer("reward_model", path=resolve_model(args.reward_model),
                                  batch_size=args.batch_size, **options)
        else:
            scorer = build_scorer(args.scorer, **options)
        stats = score_file(scorer, args.input, args.output, batch_size=args.batch_size,
                           prompt_column=args.prompt_column,
                           completion_column=args.completion_column,
                           progress=sys.stderr.isatty())
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report(stats, args.output)
    return 0


def _model(args) -> int:
    from alignment.models import resolve_model

    print(resolve_model(args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
