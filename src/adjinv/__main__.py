"""``python -m adjinv``: the command line (what ``torchrun -m adjinv`` starts on every rank)."""

import sys

from .cli import main

sys.exit(main())
