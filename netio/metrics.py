"""A rank's metrics: JSON lines appended to `metrics.jsonl` in its run directory.

A file, not a socket, is the only channel from workers to the laptop: it survives a controller
that quits and comes back (it resumes from a byte offset), and over SSH it is read with SFTP.
Each line is flushed whole, so a reader never sees half a line except at the very end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


def rss_mb() -> float | None:
    """Resident memory of this process in MB (current on Linux, peak on macOS)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1e6 if sys.platform == "darwin" else peak / 1e3
    except Exception:
        return None


class MetricsWriter:
    def __init__(self, run_dir: str | os.PathLike | None, rank: int):
        self.rank = rank
        self._f = None
        if run_dir is not None:
            path = Path(run_dir) / METRICS_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(path, "a", buffering=1, encoding="utf-8")
        self.path = None if run_dir is None else Path(run_dir) / METRICS_FILE

    def write(self, kind: str, **fields) -> dict:
        record = {"kind": kind, "rank": self.rank, "wall": time.time(), **fields}
        if self._f is not None:
            self._f.write(json.dumps(record, separators=(",", ":")) + "\n")
        return record

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
