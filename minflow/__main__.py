"""``python -m minflow``: see minflow/cli.py.

A Ctrl-C that arrives after ``main`` has returned (its work done and written) still exits
with one line and code 130, not a traceback.
"""

import sys

from .cli import main

try:
    code = main()
except KeyboardInterrupt:
    sys.stderr.write("python -m minflow: interrupted (Ctrl-C) after the command had finished\n")
    code = 130
sys.exit(code)
