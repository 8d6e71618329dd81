"""The `boltring` console script.

Ctrl-C in the first few hundred milliseconds, while Python imports the CLI and loads the config
(before the app or `--run` handle it themselves), printed a KeyboardInterrupt traceback from
deep inside an import and exited -2. Nothing has started then: it is a user's stop, exit 130.
This module imports nothing at its top, so the handler is in place before any of that work.
"""

from __future__ import annotations


def main() -> int:
    import sys

    try:
        from .cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        print("boltring: interrupted", file=sys.stderr)
        return 130
