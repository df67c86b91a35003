"""``python -m minflow``: see minflow/cli.py."""

import sys

from .cli import main

sys.exit(main())
