"""`alignment score`: add rewards to a jsonl file of (prompt, completion[, answer ...]) rows.

Streams the input in batches (constant memory for any file size), writes every input row
back with `reward` and one `reward_<part>` field per named part added, into a temporary
file renamed over `--output` at the end (never a half-written output). A row that cannot
be scored (bad JSON, a missing or non-string prompt/completion) is kept, with
`"reward": null` and an `"error"`, and reported by line number; the rest still get scored.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from alignment.data.io import DataError
from alignment.errors import not_utf8
from reward_models import Scorer


def score_file(scorer: Scorer, input_path: str, output_path: str, *, batch_size: int = 32,
               prompt_column: str = "prompt", completion_column: str = "completion",
               progress: bool = False) -> dict:
    src = Path(input_path)
    if src.is_dir():
        raise DataError(f"{src}: a folder, not a jsonl file")
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    stats = {"rows": 0, "scored": 0, "unscorable": [], "scorer_errors": 0,
             "lengths": [], "rewards": []}   # (for the length-bias diagnostic)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit="row", desc="scoring")
    try:
        with src.open("rb") as f, os.fdopen(fd, "w", encoding="utf-8") as dst:
            batch: list[tuple[int, dict, str | None]] = []   # input order is kept
            for n, raw in enumerate(f, start=1):
                line = _decode(raw, src, n)
                if not line.strip():
                    continue
                stats["rows"] += 1
                row, problem = _parse(line, n, prompt_column, completion_column)
                if problem:
                    stats["unscorable"].append(problem)
                batch.append((n, row, problem))
                if len(batch) == batch_size:
                    _flush(scorer, batch, dst, stats, prompt_column, completion_column)
                    if bar is not None:
                        bar.update(len(batch))
                    batch = []
            if batch:
                _flush(scorer, batch, dst, stats, prompt_column, completion_column)
                if bar is not None:
                    bar.update(len(batch))
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, out)
    finally:
        if bar is not None:
            bar.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    return stats


def _decode(raw: bytes, src: Path, n: int) -> str:
    """A line as text; a file that is not UTF-8 (or not text) stops here, naming the line
    (the temporary output is removed: nothing half-written is left)."""
    try:
        return (raw.removeprefix(b"\xef\xbb\xbf") if n == 1 else raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{src} line {n}: {not_utf8(raw, exc, line=n)}; alignment score "
                        "reads UTF-8 jsonl") from None


def _parse(line: str, n: int, prompt_column: str, completion_column: str):
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return {"line": line.rstrip("\n")}, f"line {n}: not valid JSON ({exc.msg})"
    if not isinstance(row, dict):
        return {"value": row}, f"line {n}: expected a JSON object"
    for column in (prompt_column, completion_column):
        if not isinstance(row.get(column), str):
            got = "missing" if column not in row else type(row[column]).__name__
            return row, f"line {n}: column '{column}' must be a string ({got})"
    return row, None


def _flush(scorer: Scorer, batch, dst, stats, prompt_column, completion_column) -> None:
    good = [(n, row) for n, row, problem in batch if problem is None]
    result = None
    if good:
        rows = [row for _, row in good]
        result = scorer.score([r[prompt_column] for r in rows],
                              [r[completion_column] for r in rows], rows)
        stats["scored"] += len(rows)
    k = 0
    for n, row, problem in batch:
        if problem is not None:
            dst.write(json.dumps({**row, "reward": None, "error": problem},
                                 ensure_ascii=False) + "\n")
            continue
        scored = {**row, "reward": result.rewards[k]}
        for part, values in result.parts.items():
            scored[f"reward_{part}"] = values[k]
        error = result.errors[k] if result.errors else None
        if error is not None:
            scored["error"] = f"line {n}: {error}"
            stats["scorer_errors"] += 1
        else:
            stats["rewards"].append(result.rewards[k])
            stats["lengths"].append(len(row[completion_column]))
        dst.write(json.dumps(scored, ensure_ascii=False) + "\n")
        k += 1


def report(stats: dict, output: str) -> None:
    from reward_models.diagnostics import describe, spearman

    print(f"scored {stats['scored']} of {stats['rows']} rows -> {output}")
    rho = spearman(stats["rewards"], stats["lengths"]) if stats["rewards"] else None
    print(describe({"n": len(stats["rewards"]), "spearman": rho}))
    if stats["scorer_errors"]:
        print(f"{stats['scorer_errors']} rows scored 0 because the scorer failed on them "
              "(see their 'error' field)", file=sys.stderr)
    if stats["unscorable"]:
        shown = "\n  ".join(stats["unscorable"][:20])
        more = len(stats["unscorable"]) - 20
        print(f"{len(stats['unscorable'])} rows could not be scored (kept with reward null):"
              f"\n  {shown}" + (f"\n  ... and {more} more" if more > 0 else ""),
              file=sys.stderr)
