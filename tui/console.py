"""The rich Console every command prints through.

On a terminal it is rich's own: the terminal's width, long lines wrapped to it. Piped into a
file or another program (`boltring bench | tee bench.txt`, a CI log), rich would assume 80
columns: it wrapped messages mid-sentence and cut table cells short ("boltri…"). There, lines
are never wrapped and tables get PIPED_WIDTH columns, so a log keeps one message per line and
every id, path and figure whole.
"""

from __future__ import annotations

import errno
import json
import sys
import time

from rich.console import Console

PIPED_WIDTH = 200


class PipeConsole(Console):
    """rich's Console, except that a reader who closed the pipe is a BrokenPipeError for the
    caller to handle. rich ends the whole process instead, raising SystemExit(1) from inside
    print(): under `--run | head -n 1` that came out of the controller's own task, past every
    handler, and left the ranks running."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more is written to it
        raise BrokenPipeError(errno.EPIPE, "the output was closed by its reader")


def cli_console(*, stderr: bool = False) -> Console:
    """The console of a command: a PipeConsole, so that a reader who leaves early is a
    BrokenPipeError that the view decides about (--run stops the job) or cli.main ends
    quietly with SIGPIPE's exit code."""
    console = PipeConsole(highlight=False, stderr=stderr)
    if console.is_terminal:
        return console
    return PipeConsole(highlight=False, stderr=stderr, width=PIPED_WIDTH, soft_wrap=True)


def say_error(text: str, *, json_event: bool) -> None:
    """Why nothing (more) happens, each line of `text`: an `error` event on stdout for scripts
    that read `--json` events there, and `boltring: …` on stderr for people."""
    for line in text.splitlines():
        if json_event:
            print(json.dumps({"event": "error", "text": line, "t": time.time()}), flush=True)
        print(f"boltring: {line}", file=sys.stderr)
