"""Checkers for config values: each returns the value to store or raises `Bad`.

They know nothing of where a value is; the validator adds the file, line and key, and the
field's own "expected" text (see `schema.setting`). `describe` says what a wrong value is,
in YAML's words.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any

from boltring.cluster.config.ssh_target import parse_ssh_target

NAME_RE = re.compile(r"[A-Za-z0-9._-]+")  # node, config and interface names


def to_name(text: str) -> str:
    """`text` made into a valid name (runs of other characters become "-"); may be empty."""
    return text if NAME_RE.fullmatch(text) else re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


Checker = Callable[[Any], Any]


class Bad(Exception):
    """A checker rejects a value; the caller knows where it is and what is expected."""

    def __init__(self, problem: str, index: int | None = None):
        super().__init__(problem)
        self.problem, self.index = problem, index


def describe(value: Any) -> str:
    """A short phrase saying what a wrong value is, in YAML's words."""
    if value is None:
        return "the value is empty (null)"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} is a boolean"
    if isinstance(value, int):
        return f"{value} is a whole number"
    if isinstance(value, float):
        return f"{value:g} is a decimal number"
    if isinstance(value, str):
        return f"{value!r} is text"
    if isinstance(value, list):
        return "got a list"
    if isinstance(value, dict):
        return "got a mapping"
    if hasattr(value, "isoformat"):  # YAML reads 2024-01-01 as a date
        return f"{value} is a date (quote it to keep it as text)"
    return f"got {type(value).__name__} {value!r}"


def text(v: Any) -> str:
    if not isinstance(v, str):
        raise Bad(describe(v))
    if not v.strip():
        raise Bad("the text is empty")
    return v


def opt_text(v: Any) -> str | None:
    return None if v is None else text(v)


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise Bad(describe(v))
    return v


def auto_or_int(choices: tuple[int, ...]) -> Callable[[Any], int]:
    """`auto` (stored as 0) or one of `choices` (whole numbers above 0; quoted ones too)."""

    def check(v: Any) -> int:
        if v == "auto":
            return 0
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise Bad(describe(v))
        if v not in choices:
            raise Bad(f"{v} is not auto or {' or '.join(map(str, choices))}")
        return v

    return check


def int_min(minimum: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):  # True is an int to Python, not to us
            raise Bad(describe(v))
        if v < minimum:
            raise Bad(f"{v} is less than {minimum}")
        return v

    return check


def positive(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Bad(describe(v))
    if not math.isfinite(v) or v <= 0:
        raise Bad(f"{v:g} is not a positive number")
    return float(v)


def positive_at_most(limit: float) -> Callable[[Any], float]:
    """A positive number no larger than `limit`."""

    def check(v: Any) -> float:
        value = positive(v)
        if value > limit:
            raise Bad(f"{v:g} is over {limit:g}")
        return value

    return check


def port(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise Bad(describe(v))
    if not 1024 <= v <= 65535:  # below 1024 needs root on macOS and Linux
        raise Bad(f"{v} is outside 1024-65535")
    return v


def text_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise Bad(describe(v))
    for i, item in enumerate(v):
        if not isinstance(item, str):
            raise Bad(describe(item) + " (quote it to pass it as text)", index=i)
    return tuple(v)


def name(v: Any) -> str:
    v = text(v)
    if not NAME_RE.fullmatch(v):
        raise Bad(f"{v!r} has characters other than letters, digits, '.', '_' and '-'")
    return v


def ip(v: Any) -> str:
    if not isinstance(v, str):
        raise Bad(describe(v))
    try:
        address = ipaddress.ip_address(v.strip())
    except ValueError:
        raise Bad(f"{v!r} is not an IPv4/IPv6 address") from None
    if address.is_unspecified or address.is_multicast:  # nobody can connect to these
        raise Bad(f"{v!r} is {'the unspecified' if address.is_unspecified else 'a multicast'} address")
    return str(address)


def ssh_target(v: Any) -> str:
    v = text(v)
    try:
        parse_ssh_target(v)
    except ValueError as e:
        raise Bad(str(e)) from None
    return v.strip()


def iface(v: Any) -> str:
    v = text(v)
    if not NAME_RE.fullmatch(v):
        raise Bad(f"{v!r} is not an interface name")
    return v


def choice(what: str, choices: tuple[str, ...], *, suggest: bool = True) -> Callable[[Any], str]:
    """One of `choices`; a near miss gets "did you mean" (unless the expected text lists them)."""

    def check(v: Any) -> str:
        v = text(v)
        if v not in choices:
            close = difflib.get_close_matches(v, choices, n=1, cutoff=0.5) if suggest else []
            raise Bad(f"{v!r} is not {what}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return v

    return check
