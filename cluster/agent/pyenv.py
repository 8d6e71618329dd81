"""What a Python on the node is and has, as one JSON line. Standard library only.

    PYTHON -c "$(cat pyenv.py)" [DIST ...]   (how the laptop runs it: before boltring is installed)

prints {"executable", "version": [3, 12, 4], "prefix", "base_prefix", "in_venv", "base_python",
"platform", "machine", "macos", "glibc", "pip", "dists": {DIST: version or null}, "setup": the
venv's boltring-setup.json (what `boltring setup` installed there) or null}.
`boltring setup` runs it with each candidate interpreter (to find a Python 3.11+), with the venv's
python (to see whether it is already up to date), and to learn the platform tags for
`--download-wheelhouse`.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata

SETUP_RECORD = "boltring-setup.json"  # in the venv: {"boltring": version, "source": digest or null}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
    except Exception:  # a broken install must not hide the rest of the answer
        return None


def _glibc() -> str | None:
    try:
        value = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):
        return None
    return value.split()[-1] if value and value.startswith("glibc") else None


def _base_python() -> str:
    """The interpreter this one was made from (itself when it is not a venv's)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return base


def _setup_record() -> dict | None:
    """What `boltring setup` last installed into this venv (SETUP_RECORD), if anything."""
    try:
        with open(os.path.join(sys.prefix, SETUP_RECORD)) as f:
            value = json.load(f)
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None


def describe(dists: list[str]) -> dict:
    return {
        "executable": sys.executable,
        "version": list(sys.version_info[:3]),
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "in_venv": sys.prefix != sys.base_prefix,
        "base_python": _base_python(),
        "platform": sys.platform,
        "machine": platform.machine(),
        "macos": platform.mac_ver()[0] or None,
        "glibc": _glibc(),
        "pip": _version("pip"),
        "dists": {d: _version(d) for d in dists},
        "setup": _setup_record(),
    }


def main(argv: list[str]) -> int:
    print(json.dumps(describe(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
