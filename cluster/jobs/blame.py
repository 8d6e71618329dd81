"""Deciding the one common cause of a failed job from what every rank left behind.

Facts, per rank: its exit record (exit.json, with the error type and, for a ring error, the
peer it lost and the direction, from the rank's own why.json), its heartbeat (when its last
metrics line arrived, and its usual interval), and its liveness (`spawn status`: alive, frozen).

In a ring, one hung rank makes its neighbours time out, and a rank waiting on a neighbour that
waits on the hung one times out too: rank 0 blames rank 2, rank 2 blames rank 1. Each ring error
is an edge "victim → peer"; following the edges ends at the rank that blames nobody: the cause.
Its own state says what happened to it (frozen, silent, killed by a signal, failed with its own
error). Every victim's error is kept as evidence, once. Pure functions: tested without ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PEER_ERRORS = ("PeerClosed", "PeerTimeout", "ConnectTimeout")
# MLX's own ring (--backend mlx-ring) says a peer went away but not which one: such a rank is a
# victim that names no peer, never the cause while another rank ended by itself.
UNNAMED_PEER_LOST = ("connection to a peer was lost",)


@dataclass
class RankFacts:
    rank: int
    node: str
    exited: bool = False
    returncode: int | None = None
    exit: dict[str, Any] = field(default_factory=dict)  # exit.json as the keeper wrote it
    alive: bool | None = None  # from `spawn status`; None when unknown
    frozen: bool = False  # a process of the rank is stopped (SIGSTOP, a debugger)
    silent_s: float | None = None  # seconds since its last heartbeat, None before the first
    stopped_by: str | None = None  # who stopped it, when someone did (boltring, boltring kill …)

    @property
    def label(self) -> str:
        return f"rank {self.rank} on {self.node}"

    @property
    def blames(self) -> int | None:
        """The peer this rank says it lost, when it failed of a ring error."""
        if self.exit.get("error") in PEER_ERRORS and isinstance(self.exit.get("peer_rank"), int):
            return int(self.exit["peer_rank"])
        return None

    @property
    def lost_unnamed_peer(self) -> bool:
        msg = str(self.exit.get("message") or "")
        return self.blames is None and any(words in msg for words in UNNAMED_PEER_LOST)

    @property
    def failed(self) -> bool:
        return self.exited and self.returncode != 0 and not self.stopped_by

    @property
    def left(self) -> bool:
        """It ended by itself with exit code 0: its program returned (a script's sys.exit(0)).
        When others then fail of a lost peer, it left while they were still in a collective."""
        return self.exited and self.returncode == 0 and not self.stopped_by and not self.exit.get("signal")


@dataclass
class Verdict:
    cause: int | None  # the rank that is the common cause, None when no rank can be named
    reason: str  # one line
    evidence: list[str] = field(default_factory=list)  # the victims' errors, once each
    certain: bool = True  # False: a best guess (waiting longer may give a better one)
    suspect_nodes: list[str] = field(default_factory=list)  # nodes whose link facts may say more
    # When the reason names the cause rank: its node, and what happened to it in words without
    # "rank N on NODE" (what its row in the app says, and the failure event's `blamed`)
    node: str | None = None
    what: str | None = None

    def text(self) -> str:
        if not self.evidence:
            return self.reason
        return f"{self.reason}; evidence: " + "; ".join(self.evidence)


def _signal_words(sig: str) -> str:
    return {
        "SIGKILL": "was killed (SIGKILL: out of memory, or killed by hand)",
        "SIGSEGV": "crashed (SIGSEGV)",
        "SIGABRT": "aborted (SIGABRT)",
        "SIGTERM": "was terminated (SIGTERM) by something other than boltring",
        "lost": "is gone and left no exit record (its whole process group was killed, or its node rebooted)",
    }.get(sig, f"was stopped by {sig}")


def describe_own_end(f: RankFacts) -> str:
    """What happened to a rank that blames nobody, in words."""
    if not f.exited:
        silent = f" (no heartbeat for {f.silent_s:.0f} s)" if f.silent_s is not None else ""
        frozen = ", its process is frozen (SIGSTOP)" if f.frozen else ""
        return f"{f.label} stopped responding{silent}{frozen}"
    sig = f.exit.get("signal")
    if sig:
        return f"{f.label} {_signal_words(str(sig))}"
    if f.left:  # a neighbour lost it, or no rank failed of its own: it did not fail, it left
        return f"{f.label} exited (code 0) while the others were still in a collective"
    err, msg = f.exit.get("error"), f.exit.get("message")
    if err and msg:
        if err == "NonFiniteLoss":
            return f"{msg.split(' (job.allow_nonfinite')[0]}"
        return f"{f.label} failed: {err}: {msg}"
    return f"{f.label} exited with an error (code {f.returncode}); see its log"


# How a ring error's peer is named, by the direction in its exit record (runner.write_why
# writes "send" or "recv"; a record without one says only which peer).
_TOWARDS = {"send": "sending to", "recv": "receiving from"}


def evidence_of(f: RankFacts) -> str:
    err = f.exit.get("error")
    peer = f"rank {f.exit.get('peer_rank')}"
    if err == "ConnectTimeout":  # the ring never came up: neither sending nor receiving yet
        return f"{f.label} could not set up its ring connection with {peer}"
    what = "timed out" if err == "PeerTimeout" else "lost the connection" if err == "PeerClosed" else str(err)
    towards = _TOWARDS.get(str(f.exit.get("direction")), "with")
    return f"{f.label} {what} {towards} {peer}"


def _naming(f: RankFacts, reason: str, evidence: list[str], **kw: Any) -> Verdict:
    """A verdict whose cause is rank `f`, said in `reason` ("rank 1 on b was killed …")."""
    return Verdict(f.rank, reason, evidence, node=f.node, what=reason.removeprefix(f"{f.label} "), **kw)


def decide(facts: list[RankFacts], *, stall_s: float | None = None) -> Verdict:
    """The common cause among `facts` (all ranks of the job). `stall_s`: how long a silent,
    still-running rank must have been silent to be named (None: any silence counts)."""
    by_rank = {f.rank: f for f in facts}
    failed = [f for f in facts if f.failed]
    if not failed:
        return Verdict(None, "no rank failed", certain=False)

    def root_of(f: RankFacts) -> RankFacts:
        seen = set()
        while f.blames is not None and f.blames in by_rank and f.rank not in seen:
            seen.add(f.rank)
            f = by_rank[f.blames]
        return f

    victims = [f for f in failed if f.blames is not None]
    roots: dict[int, RankFacts] = {}
    for f in failed:
        r = root_of(f)
        roots[r.rank] = r

    def evidence_for(root: RankFacts) -> list[str]:
        return [
            evidence_of(v)
            for v in sorted(victims, key=lambda v: v.rank)
            if root_of(v) is root and v is not root
        ]

    # A root that failed by itself (its own error, a signal) is certain. So is one that left
    # (exit code 0) while its neighbours still needed it: they name it (boltring's ring), or,
    # under MLX's ring, which names no peer, the rank that left is the only one that did
    # anything by itself. Only when neither is there is a rank that lost an unnamed peer named.
    own = [r for r in roots.values() if r.exited and r.blames is None]
    real = [r for r in own if not r.lost_unnamed_peer]
    left = [f for f in facts if f.left] if own and not real else []
    causes = real or left or own
    if causes:
        r = min(causes, key=lambda x: x.rank)
        unnamed = [
            f"{v.label} lost a ring peer"
            for v in sorted(own, key=lambda v: v.rank)
            if v is not r and v.lost_unnamed_peer
        ]
        # a rank that only lost an unnamed peer, while others still run: one of them may yet
        # be found frozen or failed (FAILURE_GRACE_S); once every rank has ended, it is all
        certain = not r.lost_unnamed_peer or all(f.exited for f in facts)
        return _naming(r, describe_own_end(r), evidence_for(r) + unnamed, certain=certain)
    # A root that is still running but frozen or silent: it stopped responding.
    live = [r for r in roots.values() if not r.exited]
    if live:
        r = min(live, key=lambda x: (not x.frozen, -(x.silent_s or 0), x.rank))
        certain = r.frozen or (stall_s is not None and (r.silent_s or 0) >= stall_s) or r.alive is False
        return _naming(r, describe_own_end(r), evidence_for(r), certain=certain)
    # A rank both of whose ring neighbours lost it, while it lost them too: its node's ring
    # link (the controller asks that node's link facts to say which).
    blamed_by: dict[int, set[int]] = {}
    for v in victims:
        if v.blames is not None:
            blamed_by.setdefault(v.blames, set()).add(v.rank)
    hub = [by_rank[r] for r, who in blamed_by.items() if len(who) >= 2 and r in by_rank]
    if hub:
        h = max(hub, key=lambda x: (len(blamed_by[x.rank]), -x.rank))
        who = sorted(blamed_by[h.rank])
        others = [evidence_of(by_rank[r]) for r in who]
        return _naming(
            h,
            f"{h.label} lost both its ring neighbours (ranks {who[0]} and {who[1]}): "
            f"{h.node}'s ring link is down or {h.node} is unreachable",
            others + ([evidence_of(h)] if h.blames is not None else []),
            suspect_nodes=[h.node],
        )
    # Two ranks blaming each other: the link between them (or one of their nodes' network).
    pair = [r for r in roots.values() if r.blames is not None]
    if pair:
        a = min(pair, key=lambda x: x.rank)
        b = by_rank.get(a.blames) if a.blames is not None else None
        if b is not None and b.blames == a.rank:
            link = f"{a.node}→{b.node}" if a.exit.get("direction") == "send" else f"{b.node}→{a.node}"
            if a.node == b.node:
                link = f"rank {a.rank}↔rank {b.rank} on {a.node}"
            return Verdict(
                None,
                f"ring link {link} is down (ranks {a.rank} and {b.rank} lost each other)",
                [evidence_of(a), evidence_of(b)],
                suspect_nodes=sorted({a.node, b.node}),
            )
    # Every rank timed out on its neighbour, round the ring: the ring stopped moving as a whole
    # (a link, or a node's network). Only link facts can say which; ask every node.
    if all(f.exited and f.blames is not None for f in facts) and len(facts) > 2:
        return Verdict(
            None,
            "the ring stopped: every rank timed out waiting for its neighbour; a ring link or a node's "
            "network is down",
            [evidence_of(f) for f in sorted(facts, key=lambda x: x.rank)],
            suspect_nodes=sorted({f.node for f in facts}),
        )
    first = min(failed, key=lambda x: x.rank)
    return _naming(
        first, describe_own_end(first) if first.blames is None else evidence_of(first), [], certain=False
    )
