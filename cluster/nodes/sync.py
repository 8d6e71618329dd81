"""Workspace sync: what a job needs goes to every node before launch, and only when it changed.

What is synced (the "roots"), each to `<node workdir>/workspace/<name>`:
- the user's script's whole folder (name: the folder's name), minus what its `.boltringignore`
  excludes (gitignore syntax; `.git/`, `__pycache__/`, `*.pyc`, `.DS_Store`, `.venv/` always);
- `job.data` (`--data`) when it is a local file or folder;
- every `job.sync` path (relative ones are taken from the config file's folder).
A path inside another root travels with that root, and goes even when that root's
.boltringignore leaves it out: the script, job.data and job.sync name what the job needs
(SyncRoot.explicit). Two roots with the same name are an error. Symlinks inside a root are
followed, to files and to folders; a link to a folder that holds it (a loop) is an error naming
the link.

How: the laptop hashes its files (sha256, size), the node reports its own with the stdlib-only
agent/manifest.py (sent as `python -c PROGRAM`, so it works before boltring is installed there),
and only files whose size or hash differ are uploaded, over SFTP, each written to a temp file with
its final mode and renamed into place (Transport.upload); a file whose permissions alone changed
gets them by chmod. Temp files an interrupted upload left behind are removed. So are files
deleted or renamed on the laptop, but only those boltring sent (sent_record.py: the node keeps a
list of what each root's syncs sent, written before the uploads so that an interrupted sync
loses none) and the node still holds as sent: what the job wrote there, or changed since, stays.
A file replaced by a folder here, or the reverse, replaces the node's copy by the same rule, and
is one error naming the node and the path when that copy is not boltring's to remove. Setup's
wheelhouse is a mirror instead (`prune=True`): whatever the laptop's copy lacks goes.

The job sees the same layout on every node: plan.runner_argv rewrites the script path, `--data`
and any argument that names a synced path to `~/…/workspace/<name>/…` (spawn expands "~/"), by
the names the files were sent under (a symlinked folder's own name, not its target's).
Local nodes (`local: true`) are not synced: their ranks read the laptop's files directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from boltring.cluster.config.schema import Config, Node
from boltring.cluster.errors import BoltringError, raise_per_node
from boltring.cluster.nodes import sent_record
from boltring.cluster.nodes.ignore import IGNORE_FILE, IgnoreRules
from boltring.cluster.nodes.transport import CommandResult, Transport

MAX_FILES = 20000  # a script folder with more than this is most likely a home directory
PROGRESS_MIN_BYTES = 8 << 20  # files at least this large report byte progress
PROGRESS_EVERY_S = 0.2
PATHS_PER_COMMAND = 1000  # paths per rm, rmdir or chmod command line
AGENT_SOURCE = Path(__file__).resolve().parent.parent / "agent" / "manifest.py"


class SyncError(BoltringError):
    title = "workspace sync failed"


# -- what is synced ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncRoot:
    local: Path  # absolute, resolved
    name: str  # the entry under the workspace folder on every node
    why: str  # "script folder", "--data", "job.sync"
    # paths under `local` the job names itself (the script, job.data, job.sync): sent even where
    # .boltringignore leaves them out, since naming a path is asking for it (relative, posix)
    explicit: tuple[str, ...] = ()


@dataclass(frozen=True)
class LocalFile:
    path: Path
    size: int
    sha256: str
    mode: int


def workspace_dir(node: Node) -> str:
    return f"{node.workdir.rstrip('/')}/workspace"


def _base_dir(config: Config) -> Path:
    src = config.source
    if src and not src.startswith("<") and Path(src).is_file():
        return Path(src).resolve().parent
    return Path.cwd()


def _sync_item_where(config: Config, index: int) -> str:
    """ "FILE:LINE: " of job.sync's item `index` in the config file, as config errors name a
    value; "" when the config is not a readable YAML file (the embedded default, an import)."""
    src = config.source
    if not src or src.startswith("<") or not src.endswith((".yaml", ".yml")):
        return ""
    try:
        from boltring.cluster.config.located import line_of, parse_yaml

        sync = parse_yaml(Path(src).read_text(), src)["job"]["sync"]
        line = line_of(sync, index)
    except Exception:  # it loaded once; if it cannot be read again, the message goes without
        return ""
    return f"{src}:{line}: " if line else f"{src}: "


def sync_roots(config: Config) -> list[SyncRoot]:
    """The local paths this job needs on the nodes, outermost first; SyncError on clashes."""
    job = config.job
    wanted: list[tuple[Path, str]] = []
    named: list[Path] = []  # what the job names itself, for SyncRoot.explicit
    if job.script:
        script = Path(job.script).expanduser().resolve()
        wanted.append((script.parent, "script folder"))
        named.append(script)
    if job.data and Path(job.data).expanduser().exists():
        wanted.append((Path(job.data).expanduser().resolve(), "--data"))
    base = _base_dir(config)
    for i, p in enumerate(job.sync):
        path = Path(p).expanduser()
        path = (path if path.is_absolute() else base / path).resolve()
        if not path.exists():
            raise SyncError(
                f"{_sync_item_where(config, i)}job.sync names {p}, which does not exist here ({path})",
                hint="fix the path in job.sync (relative paths are taken from the config file's folder)",
            )
        wanted.append((path, "job.sync"))
    named += [path for path, why in wanted if why != "script folder"]
    roots: list[SyncRoot] = []
    for path, why in sorted(wanted, key=lambda w: len(w[0].parts)):
        if any(path == r.local or path.is_relative_to(r.local) for r in roots):
            continue  # travels with the root that holds it
        if path == Path(path.anchor) or path == Path.home():
            raise SyncError(
                f"the {why} is {path}: syncing all of it to every node is surely not meant",
                hint="put the script in its own folder, or name what to send in job.sync",
            )
        clash = next((r for r in roots if r.name == path.name), None)
        if clash is not None:
            raise SyncError(
                f"{path} ({why}) and {clash.local} ({clash.why}) would both be "
                f"workspace/{path.name} on the nodes",
                hint="rename one of them",
            )
        inside = {n.relative_to(path).as_posix() for n in named if n != path and n.is_relative_to(path)}
        roots.append(SyncRoot(local=path, name=path.name, why=why, explicit=tuple(sorted(inside))))
    return roots


def _place(local: str, roots: list[SyncRoot]) -> tuple[SyncRoot, str] | None:
    """The root holding a local path, and the path under it as the sync names it (None when no
    root holds it). Through a symlinked folder inside the root that is the link's name, as the
    walk sends its files (proj/dataset/… for `ln -s ~/datasets/foo proj/dataset`): resolving the
    link first would name a folder no root holds."""
    p = Path(local).expanduser()
    if not p.is_absolute() and not p.exists():
        return None
    spelled = Path(os.path.abspath(p))
    for above in (spelled, *spelled.parents):  # deepest first: a root inside a linked folder wins
        real = above.resolve()
        for r in roots:
            if real == r.local:
                return r, spelled.relative_to(above).as_posix()
    real = p.resolve()  # reached through a link outside every root
    for r in roots:
        if real == r.local or real.is_relative_to(r.local):
            return r, real.relative_to(r.local).as_posix()
    return None


def remote_path(node: Node, local: str, roots: list[SyncRoot]) -> str | None:
    """Where a local path is on the node after sync (None when no root holds it). A path the
    root's .boltringignore leaves out is mapped too (an output folder the job writes there);
    whether it is sent is sent_path's question."""
    place = _place(local, roots)
    if place is None:
        return None
    r, rel = place
    tail = f"/{rel}" if rel != "." else ""
    return f"{workspace_dir(node)}/{r.name}{tail}"


def sent_path(local: str, roots: list[SyncRoot]) -> bool:
    """Whether the sync sends this local path: a root holds it and neither that root's
    .boltringignore nor the defaults leave it out (a path the job names itself always goes).
    A path under a root that sync leaves out is not on the nodes: the checks must look for it."""
    place = _place(local, roots)
    if place is None or not Path(local).expanduser().exists():
        return False
    r, rel = place
    if rel == ".":
        return True
    # the rules that decide it are the innermost named path's own, as local_manifest walks it
    base = max((e for e in r.explicit if rel == e or rel.startswith(e + "/")), key=len, default="")
    if base == rel:
        return True
    below = rel[len(base) + 1 :] if base else rel
    rules = IgnoreRules.for_folder(r.local / base)
    parts = below.split("/")
    is_dir = Path(local).expanduser().is_dir()
    # as _walk decides: every folder on the way, then the path itself
    return not any(
        rules.ignored("/".join(parts[:i]), i < len(parts) or is_dir) for i in range(1, len(parts) + 1)
    )


def map_args(node: Node, args: list[str] | tuple[str, ...], roots: list[SyncRoot]) -> list[str]:
    """Job arguments with every word naming a synced path replaced by its node path
    (`--model=DIR` becomes `--model NODE_DIR`, so spawn can expand the "~/")."""
    out: list[str] = []
    for a in args:
        flag, eq, value = a.partition("=")
        if eq and flag.startswith("--") and (mapped := remote_path(node, value, roots)):
            out += [flag, mapped]
        else:
            out.append(remote_path(node, a, roots) or a if not a.startswith("-") else a)
    return out


def local_manifest(
    roots: list[SyncRoot], cache: dict[tuple[str, int, int], str] | None = None
) -> dict[str, LocalFile]:
    """workspace-relative path -> LocalFile for every file the roots hold (ignores applied)."""
    files: dict[str, LocalFile] = {}
    for r in roots:
        if r.local.is_file():
            files[r.name] = _local_file(r.local, cache)
            continue
        for rel, full in _root_files(r):
            if f"{r.name}/{rel}" in files:
                continue  # a named path the root's own walk sent as well
            files[f"{r.name}/{rel}"] = _local_file(full, cache)
            if len(files) > MAX_FILES:
                raise SyncError(
                    f"{r.local} ({r.why}) holds over {MAX_FILES} files",
                    hint=f"list what the job does not need in {r.local / IGNORE_FILE} (gitignore syntax)",
                )
    return files


def _root_files(r: SyncRoot) -> Iterator[tuple[str, Path]]:
    """(path under the root, full path) of every file the root sends: its walk with its
    .boltringignore, then each path the job names inside it, as that path would be sent on its
    own (its own .boltringignore and the defaults): `job.sync: [data]` with `data/` in the
    script folder's .boltringignore was rewritten into the workspace and never sent."""
    yield from _walk(r, IgnoreRules.for_folder(r.local), "", r.local, (r.local,))
    for rel in r.explicit:
        full = r.local / rel
        if full.is_dir():
            named = SyncRoot(local=full, name=r.name, why=r.why)  # its hints name its own ignore file
            for sub, f in _walk(named, IgnoreRules.for_folder(full), "", full, (full,)):
                yield f"{rel}/{sub}", f
        elif full.is_file():
            yield rel, full


def _walk(
    root: SyncRoot, rules: IgnoreRules, prefix: str, folder: Path, chain: tuple[Path, ...]
) -> Iterator[tuple[str, Path]]:
    """(path under the root, full path) of every regular file in `folder`, sorted, following
    symlinked folders as well as file links (os.walk follows neither): a dataset linked into
    the script folder is sent like any folder. `chain` holds the real paths of the folders
    walked to get here; a link to one of them, or to a folder holding one, would never end."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        skip = f", or leave it out with a line /{prefix.rstrip('/')} in {root.local / IGNORE_FILE}"
        raise SyncError(
            f"cannot read {folder} ({root.why}): {e.strerror}",
            hint="make it readable" + (skip if prefix else ""),
        ) from None
    for entry in entries:
        rel = prefix + entry.name
        full = Path(entry.path)
        if entry.is_dir():  # follows a link
            if rules.ignored(rel, True):
                continue
            real = full.resolve()
            if entry.is_symlink() and any(c == real or c.is_relative_to(real) for c in chain):
                raise SyncError(
                    f"{root.local / rel} links to {real}, a folder that holds it: "
                    f"following the link would never end",
                    hint=f"remove the link, or leave it out with a line /{rel} in {root.local / IGNORE_FILE}",
                )
            yield from _walk(root, rules, rel + "/", full, (*chain, real))
        elif entry.is_file() and not rules.ignored(rel, False):  # a dangling link is neither
            yield rel, full


def _local_file(path: Path, cache: dict[tuple[str, int, int], str] | None) -> LocalFile:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    digest = cache.get(key) if cache is not None else None
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        digest = h.hexdigest()
        if cache is not None:
            cache[key] = digest
    return LocalFile(path=path, size=st.st_size, sha256=digest, mode=st.st_mode & 0o777)


# -- sending -------------------------------------------------------------------------------------


@dataclass
class NodeSync:
    node: str
    workspace: str
    files_sent: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    files_unchanged: int = 0
    stale_removed: int = 0
    # files removed because the laptop no longer has them: ones boltring sent before (its
    # record), or with prune=True every file the laptop's copy lacks
    files_removed: list[str] = field(default_factory=list)
    modes_set: list[str] = field(default_factory=list)  # same content, other permissions here
    seconds: float = 0.0

    def summary(self) -> str:
        """The sync line's words: "sent 1 changed file (6,000 bytes) in 0.2 s, removed 1 file
        deleted here" or "nothing changed, nothing sent"."""
        sent, modes, removed = len(self.files_sent), len(self.modes_set), len(self.files_removed)
        parts = []
        if sent:
            took = f"({self.bytes_sent:,} bytes) in {self.seconds:.1f} s"
            parts.append(f"sent {sent} changed file{_s(sent)} {took}")
        if modes:
            parts.append(f"set the mode of {modes} file{_s(modes)} as here")
        if removed:
            parts.append(f"removed {removed} file{_s(removed)} deleted here")
        if not parts:
            return "nothing changed, nothing sent"
        return ", ".join(parts if sent else [*parts, "nothing sent"])


def _s(n: int) -> str:
    return "" if n == 1 else "s"


ProgressFn = Callable[[str, str, int, int], None]  # (node, workspace-relative path, sent, total)


async def remote_manifest(
    t: Transport, node: Node, names: list[str], dest: str | None = None, python: str | None = None
) -> tuple[dict[str, list], list[str]]:
    ws = dest or workspace_dir(node)
    python = python or node.python
    res = await t.run([python, "-c", AGENT_SOURCE.read_text(), await t.resolve(ws), *names], timeout=120)
    info = res.last_json()
    if not res.ok or info is None or "files" not in info:
        why = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
        raise SyncError(
            f"{node.name}: cannot list the workspace {ws} with {python}: {why}",
            hint="run `boltring setup` so the node has a working python",
        )
    return info["files"], list(info.get("stale") or [])


async def sync_node(
    t: Transport,
    node: Node,
    local: dict[str, LocalFile],
    names: list[str],
    progress: ProgressFn | None = None,
    dest: str | None = None,
    python: str | None = None,
    prune: bool = False,
    roots: list[SyncRoot] | None = None,
) -> NodeSync:
    """Send what differs from the node's copy in `dest` (default: the node's workspace). With
    `roots` (the workspace sync), what boltring sent there before and the laptop no longer has
    is removed, and what was sent is recorded for next time (sent_record.py); with `prune` (a
    mirror, as a wheelhouse must be exactly the laptop's), every file the laptop lacks."""
    started = time.monotonic()
    ws = dest or workspace_dir(node)
    result = NodeSync(node=node.name, workspace=ws)
    theirs, stale = await remote_manifest(t, node, names, ws, python)
    home_ws = await t.resolve(ws)
    record = await sent_record.read(t, ws) if roots is not None else {}
    if prune:
        gone = sorted(set(theirs) - set(local))
    else:
        gone = sent_record.gone_here(record, roots or [], local, theirs)
    send = [rel for rel, f in local.items() if theirs.get(rel, [])[:2] != [f.size, f.sha256]]
    chmod = [rel for rel, f in local.items() if rel not in send and theirs[rel][2:3] != [f.mode]]
    # before anything changes there: a file whose type changed here (a file now a folder, or
    # the reverse) must find its way clear on the node, or the upload fails on every launch
    emptied = _clear_the_way(node, ws, send, theirs, set(gone))
    if send and roots is not None:  # an interrupted sync must not lose what it sent (sent_record)
        await sent_record.write(t, ws, record, names, local, keep=True)

    def at(rel: str) -> str:
        return posixpath.join(home_ws, rel)

    # stale: an interrupted upload's temp files (never under a final name)
    await _run_paths(t, ["rm", "-f", "--"], [at(rel) for rel in [*stale, *gone]])
    # folders that held only removed files go too (rmdir leaves any other alone)
    await _run_paths(t, ["rmdir", "--"], [at(d) for d in sent_record.parents(gone) if d not in emptied])
    if emptied and await _run_paths(t, ["rmdir", "--"], [at(d) for d in emptied]):
        # something the manifest does not list (a link, an empty folder) is still in there
        raise _in_the_way(node, ws, emptied[-1], folder_there=True)
    result.stale_removed, result.files_removed = len(stale), gone
    for mode in sorted({local[rel].mode for rel in chmod}):
        paths = [at(rel) for rel in chmod if local[rel].mode == mode]
        failed = await _run_paths(t, ["chmod", f"{mode:o}", "--"], paths)
        if failed:
            why = (failed.stderr.strip().splitlines() or [f"exit {failed.returncode}"])[-1]
            raise SyncError(f"{node.name}: cannot set the mode of files in {ws}: {why}")
    result.modes_set = chmod
    result.files_unchanged = len(local) - len(send) - len(chmod)
    for rel in send:
        f = local[rel]
        report = None
        if progress is not None and f.size >= PROGRESS_MIN_BYTES:
            report = _throttled(progress, node.name, rel, f.size)
        await t.upload(f.path, f"{ws}/{rel}", mode=f.mode, progress=report)
        if report is not None:
            progress(node.name, rel, f.size, f.size)  # type: ignore[misc]
        result.files_sent.append(rel)
        result.bytes_sent += f.size
    if roots is not None:
        await sent_record.write(t, ws, record, names, local)
    result.seconds = time.monotonic() - started
    return result


def _clear_the_way(
    node: Node, ws: str, send: list[str], theirs: dict[str, list], gone: set[str]
) -> list[str]:
    """The node's folders to remove (deepest first) where a file is to be written, all of whose
    files are being removed as boltring's own. SyncError when the node holds a file where a
    folder is to be, or files in a folder where a file is to be, that are not boltring's to
    remove (the job's, or changed since sent): only the user can say they may go."""
    kept = {rel for rel in theirs if rel not in gone}
    kept_dirs = {d for rel in kept for d in _folders_of(rel)}
    node_dirs = {d for rel in theirs for d in _folders_of(rel)}
    emptied: set[str] = set()
    for rel in send:
        in_the_way = next((d for d in _folders_of(rel) if d in kept), None)
        if in_the_way is not None:
            raise _in_the_way(node, ws, in_the_way, folder_there=False)
        if rel in kept_dirs:
            raise _in_the_way(node, ws, rel, folder_there=True)
        if rel in node_dirs:
            emptied |= {d for d in node_dirs if d == rel or d.startswith(rel + "/")}
    return sorted(emptied, key=lambda d: (-d.count("/"), d))


def _folders_of(rel: str) -> list[str]:
    """The folders a workspace-relative path is in: "a/b/c" -> ["a", "a/b"]."""
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _in_the_way(node: Node, ws: str, rel: str, *, folder_there: bool) -> SyncError:
    path = f"{ws}/{rel}"
    if folder_there:
        what = "is a folder there but a file here, and holds files boltring did not send"
        hint = f"remove it on {node.name} (rm -r {path}) if nothing in it is needed, then launch again"
    else:
        what = "is a file there but a folder here, and not as boltring sent it (the job's, or changed since)"
        hint = f"remove it on {node.name} (rm {path}) if it is not needed, then launch again"
    return SyncError(f"{node.name}: {path} {what}", hint=hint)


async def _run_paths(t: Transport, head: list[str], paths: list[str]) -> CommandResult | None:
    """`head` + paths in batches (a command line is limited: ARG_MAX is 1 MB on macOS); the
    first batch that failed, None when all succeeded."""
    failed = None
    for i in range(0, len(paths), PATHS_PER_COMMAND):
        res = await t.run([*head, *paths[i : i + PATHS_PER_COMMAND]], timeout=60)
        failed = failed or (None if res.ok else res)
    return failed


def _throttled(progress: ProgressFn, node: str, rel: str, total: int) -> Callable[[int], None]:
    last = [0.0]

    def report(sent: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            progress(node, rel, sent, total)

    return report


async def sync_workspace(
    config: Config,
    transport_of: Callable[[Node], Transport],
    progress: ProgressFn | None = None,
    nodes: list[Node] | None = None,
) -> list[NodeSync]:
    """Sync every non-local node (in parallel). Every node that failed is named, in one error
    of the first one's class (its badge and hint), as the launch names every node it cannot
    reach: two full disks were one "h1: … disk full", and h2 was found full on the next try."""
    roots = sync_roots(config)
    targets = [n for n in (nodes or list(config.nodes)) if not n.local]
    if not roots or not targets:
        return []
    local = await asyncio.to_thread(local_manifest, roots, _HASH_CACHE)
    names = [r.name for r in roots]
    results = await asyncio.gather(
        *(sync_node(transport_of(n), n, local, names, progress, roots=roots) for n in targets),
        return_exceptions=True,
    )
    raise_per_node(results)
    return [r for r in results if isinstance(r, NodeSync)]


# Local hashes by (path, size, mtime_ns): an app session that launches again does not re-read
# unchanged large files.
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


PATH_FLAGS = ("--model", "--data")  # job arguments that name a model or dataset folder (lm example)


def job_path_words(config: Config) -> list[str]:
    """Local paths the job names outside a synced root: `--data`, and `--model`/`--data` values
    among the job's arguments, when they exist on the laptop."""
    words: list[str] = [config.job.data] if config.job.data else []
    args = list(config.job.args)
    for i, a in enumerate(args):
        flag, eq, value = a.partition("=")
        if flag in PATH_FLAGS:
            if eq:
                words.append(value)
            elif i + 1 < len(args):
                words.append(args[i + 1])
    return [w for w in words if Path(w).expanduser().exists()]


async def missing_job_paths(
    config: Config, transport_of: Callable[[Node], Transport], roots: list[SyncRoot]
) -> list[SyncError]:
    """One error per path the job names that no root sends and some nodes lack (naming them):
    the pre-launch check for a model or dataset folder that is only on the laptop."""
    # imported here: plan and the job_paths check import this module
    from boltring.cluster.jobs.plan import rank_cwd
    from boltring.cluster.nodes.checks.job_paths import path_on_node, rank_folder

    words = [w for w in job_path_words(config) if not sent_path(w, roots)]
    remote = [n for n in config.nodes if not n.local]
    # a relative path is looked for where that node's ranks will run, as the job_paths check does
    asks = (rank_folder(transport_of(n), rank_cwd(config, n, roots)) for n in remote)
    folders = await asyncio.gather(*asks)
    errors: list[SyncError] = []
    for w in words:
        found = await asyncio.gather(
            *(
                # where the rank will look: the workspace when its argument is rewritten there
                transport_of(n).run(["test", "-e", remote_path(n, w, roots) or path_on_node(w, f)])
                for n, f in zip(remote, folders, strict=True)
            )
        )
        lacking = [n.name for n, res in zip(remote, found, strict=True) if not res.ok]
        if lacking:
            errors.append(
                SyncError(
                    f"{', '.join(lacking)}: {w} is on this machine but not on the node"
                    + ("s" if len(lacking) > 1 else ""),
                    hint=f"add it to job.sync in the config (job: {{sync: [{w}]}}) so boltring sends it",
                )
            )
    return errors
