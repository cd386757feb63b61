"""Write docs/reference/recipe-keys.md from the recipe schema (alignment/config/schema.py).

    python scripts/recipe_reference.py           # (re)write the page
    python scripts/recipe_reference.py --check   # exit 1 if the committed page is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PAGE = ROOT / "docs" / "reference" / "recipe-keys.md"


def main() -> int:
    from alignment import atomic
    from alignment.config.reference import reference_markdown

    text = reference_markdown()
    if "--check" in sys.argv[1:]:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(f"{PAGE} is out of date: run python scripts/recipe_reference.py",
                  file=sys.stderr)
            return 1
        return 0
    atomic.write_text(PAGE, text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
