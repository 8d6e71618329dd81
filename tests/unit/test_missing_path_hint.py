"""A path the job names that a node cannot read: a remote node is told to get it (copy it, or
job.sync); a local node, which is never synced, is told the path is wrong on this machine."""

from __future__ import annotations

from boltring.cluster.config.load import load_config_text
from boltring.cluster.nodes.checks.hints import missing_job_path_hint

LOCAL = "name: t\nnodes:\n  - {name: here, local: true, ring_ip: 127.0.0.1}\n"
REMOTE = "name: t\nnodes:\n  - {name: h1, ssh: h1, ring_ip: 198.18.0.1}\n  - {name: h2, ssh: h2, ring_ip: 198.18.0.2}\n"


def test_a_local_node_is_not_told_to_sync():
    (here,) = load_config_text(LOCAL).nodes
    _, h2 = load_config_text(REMOTE).nodes
    local = missing_job_path_hint(here)
    assert "job.sync" not in local and "copy it" not in local, local
    assert "this machine" in local and "spelling" in local and "folder you started boltring in" in local
    assert missing_job_path_hint(h2) == (
        "copy it to the same path on the node, or add it to job.sync so boltring sends it"
    )
