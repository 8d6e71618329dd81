"""Number, time and size formatting shared by the app's widgets and the headless view."""

from __future__ import annotations

import json
import math
import re
import time

from boltring.cluster.config.schema import Node
from boltring.cluster.states import StoppedBy


def fmt_num(v: float | None) -> str:
    if v is None:
        return "—"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_si(v: float | None) -> str:
    """3 significant figures with a k/M suffix: 1234 → "1.23k", 71.3 → "71.3"."""
    if v is None:
        return "—"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def fmt_bytes(n: float | None) -> str:
    """A byte count (or rate) in at most 4 cells: "12M", "830k", "1.2G", "96"."""
    if n is None:
        return "—"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            v = n / div
            return f"{v:.1f}{suffix}" if v < 10 else f"{v:.0f}{suffix}"
    return f"{n:.0f}"


def fmt_loss(v: float | None, width: int | None = None) -> str:
    """The loss; with `width`, as precise as fits in it. A cut number reads as another one: the
    rank row's 7 columns showed 2.005e-07 as "2.005e-" and 123.4567 as "123.456"."""
    if v is None:
        return "—"
    if width is None:
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3e}"
        return f"{v:.4f}"
    if v == 0 or 1e-3 <= abs(v) < 1e5:
        for decimals in (4, 3, 2, 1, 0):
            text = f"{v:.{decimals}f}"
            if len(text) <= width:
                return text
    for decimals in (3, 2, 1, 0):
        text = f"{v:.{decimals}e}"
        if len(text) <= width:
            return text
    return f"{v:.0e}"


def fmt_age(s: float) -> str:
    s = max(0, int(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fmt_elapsed(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def fmt_mem(mb: float | None) -> str:
    if mb is None:
        return "—"
    if mb >= 1024:
        return f"{mb / 1024:.1f} GB"
    return f"{mb:.0f} MB"


def fmt_clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def node_address(node: Node) -> str:
    where = "local" if node.local else f"ssh {node.ssh or node.name}"
    return f"{node.ring_ip} · {where}"


_WHO = {
    StoppedBy.USER_KILL: "you (boltring kill)",
    StoppedBy.APP: "you",
    StoppedBy.CTRL_C: "you (Ctrl-C)",
    StoppedBy.SIGTERM: "you (SIGTERM)",
    StoppedBy.OUTPUT_CLOSED: "you (output closed)",
    StoppedBy.BOLTRING: "boltring",
}


def stopped_text(by: StoppedBy | str | None, step: int | None) -> str:
    """ "stopped by you at step 143": who ended a job, in words, never as an exit code."""
    try:
        who = "you" if by is None else _WHO[StoppedBy(by)]
    except ValueError:
        who = str(by)
    at = f" at step {step}" if step is not None else ""
    return f"stopped by {who}{at}"


_RAW_EXIT = (
    (re.compile(r"\bexited with (?:code |status )?-?\d+"), "failed"),
    (re.compile(r"\b(?:was )?(?:stopped|killed|terminated) by SIG[A-Z]+"), "was stopped"),
    (re.compile(r"\s*\((?:code|exit code|rc) -?\d+\)"), ""),
    (re.compile(r"^SIG[A-Z]+$"), "stopped"),
)


def in_words(reason: str | None) -> str | None:
    """A reason as the UI says it: exit codes and signal names become words ("exited with
    code 1" → "failed"), whatever the text around them says."""
    if not reason:
        return reason
    for pattern, words in _RAW_EXIT:
        reason = pattern.sub(words, reason)
    return reason


SPARK_BARS = "▁▂▃▄▅▆▇█"


def spark(values: list[float], width: int, ref: float | None = None) -> str:
    """One cell per sample (the last `width` samples), never stretched; scaled to 0..max(ref,
    samples). A lone sample with no reference is drawn at mid height, not as a full bar."""
    if width <= 0 or not values:
        return ""
    vals = values[-width:]
    top = max(max(vals), ref or 0.0)
    if top <= 0:
        return SPARK_BARS[0] * len(vals)
    if len(vals) == 1 and ref is None:
        return SPARK_BARS[3]
    last = len(SPARK_BARS) - 1
    return "".join(SPARK_BARS[max(0, min(last, round(v / top * last)))] for v in vals)


def json_line(d: dict) -> str:
    """One event as strict JSON: a NaN or infinite figure (a loss with job.allow_nonfinite, a
    script's own `accuracy=float("inf")`) is null, as JSON has no NaN; json.dumps would write
    `NaN`/`Infinity`, which jq, JavaScript and other strict readers refuse, line and all."""
    return json.dumps(_finite_or_null(d), default=str)


def _finite_or_null(v):
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite_or_null(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite_or_null(x) for x in v]
    return v
