"""The helper that collects a CLI's output after a test has read its first lines loses nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.procs import read_to_exit

# 2000 lines of about 220 bytes: more than the pipe holds, so the child blocks while the test reads
# its first lines, and the text wrapper has read ahead well past the line the test stops at.
_CHILD = 'for i in range(2000): print(\'{"i": %d, "pad": "%s"}\' % (i, \'x\' * 200), flush=True)'


def _read_after_first_lines(finish) -> list[int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(0.5)  # the child fills the pipe, so the first read takes a full 8 KiB
    early = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        early += line
        if json.loads(line)["i"] == 3:
            break
    out, err = finish(proc)
    assert proc.returncode == 0 and err == ""
    return [json.loads(line)["i"] for line in (early + out).splitlines() if line.startswith('{"i"')]


def test_every_line_arrives_once_in_order():
    assert _read_after_first_lines(lambda p: read_to_exit(p, timeout=30)) == list(range(2000))


def test_communicate_would_have_lost_the_read_ahead():
    """Why the helper exists: communicate() with a timeout reads the raw pipe, past the buffer."""
    got = _read_after_first_lines(lambda p: p.communicate(timeout=30))
    assert got[:4] == [0, 1, 2, 3] and len(got) < 2000
