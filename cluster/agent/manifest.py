"""Sizes and sha256 of the files under a folder on the node, as one JSON line. Standard library only.

    PYTHON -c "$(cat manifest.py)" ROOT NAME [NAME ...]   (how the laptop runs it: no boltring needed)
    PYTHON -m boltring.cluster.agent.manifest ROOT NAME [NAME ...]

prints {"root": ROOT, "files": {"NAME/rel/path": [size, "sha256hex", mode], ...}, "stale": [...]}
(mode: the permission bits, so that a `chmod +x` on the laptop is a change the laptop can see).
Only the entries NAME under ROOT are walked (each a file or a folder); a missing one is simply
absent. Symlinks are not followed. Files named ".<name>.boltring-<hex>" are temp files an
interrupted upload left behind: they are listed under "stale" (the laptop removes them), never
as content.

Hashing a 200 MB file takes about a second, on every launch. ROOT/.boltring_manifest.json keeps
(size, mtime_ns, sha256) per file, so an unchanged file is not read again; a file whose size or
modification time changed is hashed anew.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys

CACHE_NAME = ".boltring_manifest.json"
_TEMP = re.compile(r"^\..+\.boltring-[0-9a-f]{8}$")
CHUNK = 1 << 20


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _load_cache(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(path: str, cache: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(cache, f)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def manifest(root: str, names: list[str]) -> dict:
    cache_path = os.path.join(root, CACHE_NAME)
    cache = _load_cache(cache_path)
    new_cache: dict = {}
    files: dict[str, list] = {}
    stale: list[str] = []

    def visit(rel: str) -> None:
        full = os.path.join(root, rel)
        try:
            st = os.lstat(full)
        except OSError:
            return
        if _TEMP.match(os.path.basename(rel)):
            stale.append(rel)
            return
        if os.path.isdir(full) and not os.path.islink(full):
            for entry in sorted(os.listdir(full)):
                visit(f"{rel}/{entry}")
            return
        if not os.path.isfile(full) or os.path.islink(full):
            return
        hit = cache.get(rel)
        if isinstance(hit, list) and len(hit) == 3 and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            digest = hit[2]
        else:
            try:
                digest = sha256_file(full)
            except OSError:
                return
        new_cache[rel] = [st.st_size, st.st_mtime_ns, digest]
        files[rel] = [st.st_size, digest, st.st_mode & 0o777]  # the mode from lstat: never cached

    for name in names:
        if name and not name.startswith("/") and ".." not in name.split("/"):
            visit(name)
    # keep cache lines of entries not asked for this time (another job's sync roots)
    for rel, value in cache.items():
        if rel.split("/")[0] not in names:
            new_cache[rel] = value
    if os.path.isdir(root) and new_cache != cache:
        _save_cache(cache_path, new_cache)
    return {"root": root, "files": files, "stale": stale}


def main(argv: list[str]) -> int:
    if not argv:
        print(json.dumps({"error": "usage: manifest ROOT NAME [NAME ...]"}))
        return 2
    print(json.dumps(manifest(argv[0], argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
