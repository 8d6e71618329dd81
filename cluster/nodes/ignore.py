"""`.boltringignore`: which files of a synced folder stay on the laptop, in gitignore syntax.

Only the file at the top of the synced folder is read (not one per subfolder). Some names are
always left out (DEFAULT_IGNORES): version control, caches, virtual environments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

IGNORE_FILE = ".boltringignore"
DEFAULT_IGNORES = (".git/", "__pycache__/", "*.pyc", ".DS_Store", ".venv/", IGNORE_FILE)


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool
    anchored: bool  # matched against the whole relative path, not just the name


def _translate(pat: str) -> str:
    out, i = "", 0
    while i < len(pat):
        if pat.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pat.startswith("/**", i) and i + 3 == len(pat):
            out, i = out + "/.*", i + 3
        elif pat.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pat[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pat[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pat[i] == "[" and "]" in pat[i + 2 :]:
            end = pat.index("]", i + 2)
            body = pat[i + 1 : end]
            body = "^" + body[1:] if body.startswith("!") else body
            out, i = out + "[" + body.replace("\\", "\\\\") + "]", end + 1
        elif pat[i] == "\\" and i + 1 < len(pat):
            out, i = out + re.escape(pat[i + 1]), i + 2
        else:
            out, i = out + re.escape(pat[i]), i + 1
    return out


class IgnoreRules:
    """gitignore rules of one folder: later rules win, `!` re-includes, `dir/` only matches
    folders, a pattern with a "/" is relative to the folder, one without matches at any depth."""

    def __init__(self, lines: list[str] | tuple[str, ...]):
        self.rules: list[_Rule] = []
        for raw in lines:
            line = raw.rstrip("\n").rstrip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            line = line[1:] if negate else line
            if line.startswith("\\"):
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            if not line:
                continue
            anchored = "/" in line
            body = _translate(line.lstrip("/"))
            self.rules.append(_Rule(re.compile(f"^{body}$"), negate, dir_only, anchored))

    @classmethod
    def for_folder(cls, folder: Path) -> IgnoreRules:
        lines = list(DEFAULT_IGNORES)
        try:
            lines += (folder / IGNORE_FILE).read_text().splitlines()
        except FileNotFoundError:
            pass
        return cls(lines)

    def ignored(self, rel: str, is_dir: bool) -> bool:
        result = False
        name = rel.rsplit("/", 1)[-1]
        for r in self.rules:
            if r.dir_only and not is_dir:
                continue
            if r.regex.match(rel if r.anchored else name):
                result = not r.negate
        return result
