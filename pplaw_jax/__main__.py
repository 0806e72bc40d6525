"""`python -m pplaw_jax ...` is `pplaw ...`."""

import sys

from pplaw_jax.cli import main

sys.exit(main())
