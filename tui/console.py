"""The rich Console every command prints through.

On a terminal it is rich's own: the terminal's width, long lines wrapped to it. Piped into a
file or another program (`boltring bench | tee bench.txt`, a CI log), rich would assume 80
columns: it wrapped messages mid-sentence and cut table cells short ("boltri…"). There, lines
are never wrapped and tables get PIPED_WIDTH columns, so a log keeps one message per line and
every id, path and figure whole.
"""

from __future__ import annotations

import json
import sys
import time

from rich.console import Console

PIPED_WIDTH = 200


def cli_console(*, stderr: bool = False) -> Console:
    console = Console(highlight=False, stderr=stderr)
    if console.is_terminal:
        return console
    return Console(highlight=False, stderr=stderr, width=PIPED_WIDTH, soft_wrap=True)


def say_error(text: str, *, json_event: bool) -> None:
    """Why nothing (more) happens, each line of `text`: an `error` event on stdout for scripts
    that read `--json` events there, and `boltring: …` on stderr for people."""
    for line in text.splitlines():
        if json_event:
            print(json.dumps({"event": "error", "text": line, "t": time.time()}), flush=True)
        print(f"boltring: {line}", file=sys.stderr)
