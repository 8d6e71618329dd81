"""The `job_paths` check: can every node read the model and data folders the job names?

`--example lm -- --model DIR --data DIR` (and `job.data`) may name folders that exist on each
node rather than on the laptop. A node that lacks one would fail only after launch, in the
rank's traceback; this check says it first, naming the node and the path. A path the sync
sends (sync.sent_path: under a synced root, not left out by its .boltringignore) is not looked
for; a Hugging Face repo id ("mlx-community/Llama-3.2-1B-Instruct") is not a path and is left
to the node to download.

A relative path is looked for where the rank will run (plan.rank_cwd, the function the launch
uses): the launch folder on a local node; on a remote one the launch folder's workspace mirror,
or the same folder when the node has it, else the node's workdir, asked of the node as spawn
decides it there. Asked anywhere else, the check and the rank would disagree.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from boltring.cluster.config.schema import Config, Node
from boltring.cluster.jobs.events import CheckResult
from boltring.cluster.jobs.plan import rank_cwd
from boltring.cluster.nodes.checks.hints import missing_job_path_hint
from boltring.cluster.nodes.sync import PATH_FLAGS, SyncError, remote_path, sent_path, sync_roots
from boltring.cluster.nodes.transport import Transport, TransportError
from boltring.cluster.states import CheckStatus

NAME = "job_paths"


def named_paths(config: Config) -> list[str]:
    """Paths the job reads: job.data (always a file or folder), and the values of --model/--data
    among its arguments that look like paths (absolute, ~, ./, or existing here), not repo ids."""
    words = []
    args = list(config.job.args)
    for i, a in enumerate(args):
        flag, eq, value = a.partition("=")
        if flag in PATH_FLAGS:
            words.append(value if eq else (args[i + 1] if i + 1 < len(args) else ""))
    paths = [w for w in words if w and (w.startswith(("/", "~", ".")) or Path(w).expanduser().exists())]
    return ([config.job.data] if config.job.data else []) + paths


async def rank_folder(transport: Transport, cwd: tuple[str, ...]) -> str:
    """The folder a rank will run in on the node: the first of rank_cwd's candidates that is a
    folder there, else the last (spawn's own choice, working_dir, made by asking the node)."""
    for folder in cwd[:-1]:
        if (await transport.run(["test", "-d", folder], timeout=30)).ok:
            return folder
    return cwd[-1]


def path_on_node(path: str, folder: str) -> str:
    """`path` as the rank opens it: a relative one from the rank's folder (rank_folder)."""
    return path if path.startswith(("/", "~")) else posixpath.join(folder, path)


async def job_paths_result(config: Config, node: Node, transport: Transport) -> CheckResult | None:
    """ok when the node can read every path the job names, fail naming the ones it cannot;
    None when the job names no path."""
    paths = named_paths(config)
    if not paths:
        return None
    try:
        roots = [] if node.local else sync_roots(config)  # local ranks read the laptop's files
    except SyncError:
        roots = []
    synced = [p for p in paths if sent_path(p, roots)]  # not one .boltringignore leaves out
    missing = []
    try:
        folder = await rank_folder(transport, rank_cwd(config, node, roots))
        for p in (p for p in paths if p not in synced):
            where = remote_path(node, p, roots) or path_on_node(p, folder)  # as the rank is told
            if not (await transport.run(["test", "-r", where], timeout=30)).ok:
                missing.append(p)
    except TransportError:
        return None  # the ssh check already says why the node cannot be asked
    if missing:
        relative = [p for p in missing if path_on_node(p, folder) != p]
        where = f" (from {folder}, where {node.name}'s ranks run)" if relative else ""
        return CheckResult(
            node=node.name,
            name=NAME,
            status=CheckStatus.FAIL,
            value=f"cannot read {', '.join(missing)}{where}",
            hint=missing_job_path_hint(node, relative=bool(relative)),
        )
    value = f"{len(paths)} path{'s' if len(paths) != 1 else ''} readable" + (
        f" ({len(synced)} sent by job.sync)" if synced else ""
    )
    return CheckResult(node=node.name, name=NAME, status=CheckStatus.OK, value=value)
