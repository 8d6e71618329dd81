"""The `job_paths` check: can every node read the model and data folders the job names?

`--example lm -- --model DIR --data DIR` (and `job.data`) may name folders that exist on each
node rather than on the laptop. A node that lacks one would fail only after launch, in the
rank's traceback; this check says it first, naming the node and the path. A path under a
`job.sync` root is sent before launch, so it is not looked for; a Hugging Face repo id
("mlx-community/Llama-3.2-1B-Instruct") is not a path and is left to the node to download.
"""

from __future__ import annotations

from pathlib import Path

from boltring.cluster.config.schema import Config, Node
from boltring.cluster.jobs.events import CheckResult
from boltring.cluster.nodes.sync import PATH_FLAGS, SyncError, remote_path, sync_roots
from boltring.cluster.nodes.transport import Transport, TransportError
from boltring.cluster.states import CheckStatus

NAME = "job_paths"


def named_paths(config: Config) -> list[str]:
    """Paths the job reads: job.data, and the values of --model/--data among its arguments that
    look like paths (absolute, ~, ./, or existing here), not repo ids."""
    words = [config.job.data] if config.job.data else []
    args = list(config.job.args)
    for i, a in enumerate(args):
        flag, eq, value = a.partition("=")
        if flag in PATH_FLAGS:
            words.append(value if eq else (args[i + 1] if i + 1 < len(args) else ""))
    return [w for w in words if w and (w.startswith(("/", "~", ".")) or Path(w).expanduser().exists())]


async def job_paths_result(config: Config, node: Node, transport: Transport) -> CheckResult | None:
    """ok when the node can read every path the job names, fail naming the ones it cannot;
    None when the job names no path."""
    paths = named_paths(config)
    if not paths:
        return None
    try:
        roots = sync_roots(config)
    except SyncError:
        roots = []
    synced = [p for p in paths if remote_path(node, p, roots)]
    missing = []
    for p in (p for p in paths if p not in synced):
        try:
            res = await transport.run(["test", "-r", p], timeout=30)
        except TransportError:
            return None  # the ssh check already says why the node cannot be asked
        if not res.ok:
            missing.append(p)
    if missing:
        return CheckResult(
            node=node.name,
            name=NAME,
            status=CheckStatus.FAIL,
            value=f"cannot read {', '.join(missing)}",
            hint="copy it to the same path on the node, or add it to job.sync so boltring sends it",
        )
    value = f"{len(paths)} path{'s' if len(paths) != 1 else ''} readable" + (
        f" ({len(synced)} sent by job.sync)" if synced else ""
    )
    return CheckResult(node=node.name, name=NAME, status=CheckStatus.OK, value=value)
