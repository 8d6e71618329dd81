"""The one parser of SSH targets ("alias", "user@host", "user@host:port", "[v6]:port").

The config validates `ssh:` with it and the SSH transport connects with what it returns, so a
target the config accepts is one the transport can use, and the other way round.
"""

from __future__ import annotations

import ipaddress
import re

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")  # ssh targets that mean "this machine"

_SSH_RE = re.compile(
    r"(?:(?P<user>[A-Za-z0-9._-]+)@)?"
    r"(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9._-]+)?\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


def _bare_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def parse_ssh_target(target: str) -> tuple[str | None, str, int | None]:
    """Split "alias", "host", "user@host" or "user@host:port" into (user, host, port).

    IPv6 hosts are written in brackets when a port follows ("user@[fe80::1%bridge0]:22") and
    returned without them; a bare IPv6 address ("fe80::1", "me@fe80::1") is a host with no
    port, as ssh(1) reads it. Raises ValueError for anything else, including names that start
    with "-" (they would read as options to an ssh command line).
    """
    if not isinstance(target, str):
        raise ValueError(f"{target!r} is neither an ssh alias nor user@host[:port]")
    text = target.strip()
    user, at, rest = text.rpartition("@")
    if _bare_ipv6(rest) and (not at or re.fullmatch(r"[A-Za-z0-9._-]+", user)):
        return user or None, rest, None
    m = _SSH_RE.fullmatch(text)
    if not m or text.startswith("-") or (m["host"] or "").startswith("-"):
        raise ValueError(f"{target!r} is neither an ssh alias nor user@host[:port]")
    host = m["host"]
    if host.startswith("["):
        host = host[1:-1]
        if not _is_ip(host):
            raise ValueError(f"{target!r} has {host!r} in brackets, which is not an IPv6 address")
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{target!r} has port {port}, outside 1-65535")
    return m["user"], host, port


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def format_ssh_target(user: str | None, host: str, port: int | None) -> str:
    """The target parse_ssh_target reads back as (user, host, port): IPv6 in brackets."""
    host = f"[{host}]" if ":" in host else host
    return (f"{user}@" if user else "") + host + (f":{port}" if port else "")
