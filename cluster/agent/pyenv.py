"""What a Python on the node is and has, as one JSON line. Standard library only.

    PYTHON -c "$(cat pyenv.py)" [DIST ...]   (how the laptop runs it: before boltring is installed)

prints {"executable", "version": [3, 12, 4], "prefix", "base_prefix", "in_venv", "base_python",
"platform", "machine", "macos", "glibc", "pip" (null when pip cannot be imported), "dists": {DIST:
version or null}, "broken": {DIST: {"error", "reinstall": {DIST: version}}} for boltring and mlx
when their metadata is there but their code is not (a moved or half-deleted folder: the version
alone called such a venv up to date while `boltring check` failed to import mlx), "setup": the
venv's boltring-setup.json (what `boltring setup` last finished there) or null, "source": the
digest of the source tree the installed boltring was built from (read from its own files, see
SOURCE_FILE) or null}.
`boltring setup` runs it with each candidate interpreter (to find a Python 3.11+), with the venv's
python (to see whether it is already up to date), and to learn the platform tags for
`--download-wheelhouse`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import platform
import re
import sys
from importlib import metadata

SETUP_RECORD = "boltring-setup.json"  # in the venv: {"boltring": version, "source": digest or null}
# A wheel built from a source tree (nodes/wheels.py) carries that tree's digest in this module of
# boltring.cluster, as `SOURCE = "<digest>"`: the version stays 0.1.0 while the tree changes, so
# only the installed files themselves can say which code a node runs. Release wheels have none.
SOURCE_FILE = "_source.py"
_SOURCE_LINE = re.compile(r'^SOURCE = "([0-9a-f]+)"$', re.MULTILINE)

# What must import for a distribution to count as installed, and how it is tried: mlx.core is
# imported for real, as `boltring check` does (a compiled module can be there and still fail to
# load); boltring's package is only found (importing it would run its code for nothing).
IMPORT_CHECKS = {"boltring": ("boltring.cluster", False), "mlx": ("mlx.core", True)}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
    except Exception:  # a broken install must not hide the rest of the answer
        return None


def _import_error(module: str, really: bool) -> str | None:
    """Why `module` cannot be imported, or None when it can."""
    try:
        if really:
            importlib.import_module(module)
        elif importlib.util.find_spec(module) is None:
            return f"ModuleNotFoundError: No module named {module!r}"
    except Exception as e:  # ImportError, or whatever a half-deleted package raises on import
        return f"{type(e).__name__}: {e}"
    return None


def _owners(package: str) -> dict[str, str]:
    """Every installed distribution with files in the top-level `package` folder, with its
    version: what must be reinstalled to bring that folder back (mlx's folder also holds
    mlx-cpu's or mlx-metal's libraries)."""
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        try:
            name, files = dist.metadata["Name"], dist.files or []
        except Exception:
            continue
        if name and any(str(f).startswith(package + "/") for f in files):
            out[name] = dist.version
    return out


def _broken(dists: list[str], versions: dict[str, str | None]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for dist in dists:
        if dist not in IMPORT_CHECKS or versions.get(dist) is None:
            continue
        module, really = IMPORT_CHECKS[dist]
        error = _import_error(module, really)
        if error is not None:
            reinstall = {dist: versions[dist], **_owners(module.split(".")[0])}
            out[dist] = {"error": error, "reinstall": reinstall}
    return out


def _pip() -> str | None:
    """pip's version when pip can be imported (a venv made --without-pip, or whose ensurepip
    ran out of disk space, has none)."""
    try:
        if importlib.util.find_spec("pip") is None:
            return None
    except Exception:
        return None
    return _version("pip")


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


def source_digest(text: str) -> str | None:
    """The digest in a SOURCE_FILE's text, or None."""
    m = _SOURCE_LINE.search(text)
    return m.group(1) if m else None


def _installed_source() -> str | None:
    """The digest of the tree the installed boltring was built from, from its own SOURCE_FILE."""
    try:
        spec = importlib.util.find_spec("boltring.cluster")
        if spec is None or not spec.origin:
            return None
        with open(os.path.join(os.path.dirname(spec.origin), SOURCE_FILE)) as f:
            return source_digest(f.read(4096))
    except Exception:  # no boltring, or a broken one: no digest, and the rest still answered
        return None


def describe(dists: list[str]) -> dict:
    versions = {d: _version(d) for d in dists}
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
        "pip": _pip(),
        "dists": versions,
        "broken": _broken(dists, versions),
        "setup": _setup_record(),
        "source": _installed_source(),
    }


def main(argv: list[str]) -> int:
    # Run as `python -c`, the first path entry is the current folder (the node user's home):
    # a ~/mlx checkout or ~/boltring folder there must not pass for the installed package.
    if sys.path and sys.path[0] == "":
        del sys.path[0]
    print(json.dumps(describe(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
