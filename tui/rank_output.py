"""Which of the ranks' own output lines plain `boltring --run` shows (`rank N: line`).

A script or module job is the user's own program: as under mlx.launch, every line its ranks
print is shown (a script that prints its progress and reports no metrics showed nothing at
all). A built-in example's ranks print boltring's routine lines (their progress, checkpoints,
the start), which the progress line already says: only rank 0's other lines are shown, such
as mlx-lm's notes, where the lm example wrote its adapters, or why W&B got nothing.

Never shown: boltring's own lines on a rank (`boltring-train: …`, the keeper's `boltring: …`:
its error line is the job's one failure line, which the controller says), and a Python
traceback, so that a failure stays one line; the summary says where each rank's whole output
is (its rank.log). `--json` carries every line, as `log` events.
"""

from __future__ import annotations

import re

# boltring's own lines on a rank: the runner's and its keeper's (cluster/train/runner.py,
# cluster/agent/spawn.py)
OWN = ("boltring-train: ", "boltring: ")
# The built-in examples' routine lines (cluster/train/loop.py, lm.py): "[rank 0/2] mlp: steps
# 1..300, …", "[rank 0] step 30/300 loss …", "[rank 0] checkpoint …", "[rank 0] done: 300 steps
# in …" (the summary's), and the resume notes that the start line or the controller's own line
# say already ("resume from step 200 (…)", "resume: no checkpoint in …; started from step 0").
ROUTINE = re.compile(
    r"\[rank \d+/\d+\] |\[rank \d+\] (step |checkpoint |removed old checkpoint|done: |nothing to do"
    r"|resume: no checkpoint in |resume: using |resumed from step )"
)
RANK_TAG = re.compile(r"\[rank (\d+)\] ")  # "[rank 0] adapters: …": the prefix says it already
TRACEBACK = "Traceback (most recent call last):"
GROUP_TRACEBACK = "Exception Group Traceback (most recent call last):"
CHAINED = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(: |$)")  # "ValueError: bad", "KeyboardInterrupt"


class RankOutput:
    """Decides line by line; a traceback is followed rank by rank."""

    def __init__(self) -> None:
        self.user_program = False  # a script or a module: every line of every rank
        self._in_traceback: set[int] = set()
        self.held: set[int] = set()  # ranks whose traceback was held back

    def start(self, job_label: str) -> None:
        """The job's label from its start event: "script train.py", "module m", "example mlp"."""
        self.user_program = job_label.startswith(("script ", "module "))

    def shown(self, rank: int, text: str) -> str | None:
        """The line to show for `rank` (its own "[rank N] " tag taken off), or None."""
        if self._traceback_line(rank, text) or text.startswith(OWN):
            return None
        if not self.user_program:
            if rank != 0 or ROUTINE.match(text):
                return None
            tag = RANK_TAG.match(text)
            if tag and int(tag[1]) == rank:
                text = text[tag.end() :]
        return text

    def _traceback_line(self, rank: int, text: str) -> bool:
        """True for a line of a traceback: from its first line through its indented frames to
        the exception's own line (chained tracebacks included)."""
        if text.startswith((TRACEBACK, *CHAINED)) or text.lstrip(" +|").startswith(GROUP_TRACEBACK):
            self._in_traceback.add(rank)
            self.held.add(rank)
            return True
        if rank not in self._in_traceback:
            return False
        if text[:1].isspace():
            return True
        self._in_traceback.discard(rank)
        return bool(EXCEPTION_LINE.match(text))  # a line that is not the exception's is shown
