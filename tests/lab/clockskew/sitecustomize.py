"""Imported by every Python started in an SSH session of a lab host whose clock a test set off
(Lab.skew_clock puts this directory on PYTHONPATH there): time.time() and time.time_ns() run
BOLTRING_LAB_CLOCK_SKEW_S seconds ahead (negative: behind), while the monotonic clocks run true,
as on a Mac that drifted without network time. Every boltring process on a node (the spawn
agent, the rank's keeper, the rank) is Python and reads the wall clock only through these.

Why not the real thing: a Linux time namespace can offset the monotonic and boot clocks but not
the wall clock, and libfaketime 0.9.10 (Debian 12's) makes every time.sleep fail with EINVAL
once it leaves the monotonic clocks alone (a rank retrying its connect died of it)."""

import os
import time

_SKEW_S = float(os.environ.get("BOLTRING_LAB_CLOCK_SKEW_S") or 0)

if _SKEW_S:
    _time, _time_ns, _skew_ns = time.time, time.time_ns, round(_SKEW_S * 1e9)

    def _skewed_time() -> float:
        return _time() + _SKEW_S

    def _skewed_time_ns() -> int:
        return _time_ns() + _skew_ns

    time.time, time.time_ns = _skewed_time, _skewed_time_ns
