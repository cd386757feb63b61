"""MkDocs hook: the benchmark plots live in bench/ beside the results that cite them
(bench/RESULTS.md, bench/COMPARISON.md); the Benchmarks pages include those files, so the
plots are served next to them, under benchmarks/."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]


def on_files(files, config):
    for image in sorted((ROOT / "bench").glob("*.png")):
        files.append(File.generated(config, f"benchmarks/{image.name}",
                                    abs_src_path=str(image)))
    return files
