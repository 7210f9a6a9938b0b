"""``python -m protrnn`` runs the console script (the pipeline uses this form to pin the interpreter)."""

import sys

from protrnn.cli import main

sys.exit(main())
