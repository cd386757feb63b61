"""`python -m alignment ...` (also what `accelerate launch -m alignment train RECIPE` runs)."""

import sys

from alignment.cli import main

sys.exit(main())
