"""What every format reader shares: the boltring document it is writing, and the report of
what it carried over and what it left behind (printed by the CLI)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from boltring.cluster.config.located import LineList, LineMap, Where, line_of
from boltring.cluster.config.schema import Config
from boltring.cluster.config.validate import config_from_data
from boltring.cluster.config.values import describe, to_name


@dataclass
class ImportReport:
    source_format: str
    mapped: list[str] = field(default_factory=list)  # "host_ip.mini2 → nodes[1].ring_ip 10.10.0.2"
    ignored: list[str] = field(default_factory=list)  # "timeout: ignored (...why...)"

    def summary(self) -> str:
        lines = [f"Imported from {self.source_format}:"]
        lines += [f"  {m}" for m in self.mapped] + [f"  {i}" for i in self.ignored]
        return "\n".join(lines)


class Draft:
    """The boltring document a reader is writing, and the report of how it got there."""

    def __init__(self, source_format: str, source: str, data: Any):
        self.source = source
        self.report = ImportReport(source_format)
        self.doc = LineMap(line_of(data))  # plain data (not read from a file) has no lines
        self.nodes = self.doc.put("nodes", LineList(line_of(data)))
        self.names: set[str] = set()

    def add_node(self, where: Where) -> int:
        self.nodes.add(LineMap(where.line), where.line, where.path)
        return len(self.nodes) - 1

    def put(self, target: int | str, key: str, value: Any, where: Where, note: str = "") -> None:
        """Set nodes[target].key (or section.key) and report where the value came from."""
        if isinstance(target, int):
            mapping, path = self.nodes[target], f"nodes[{target}].{key}"
        else:
            if target not in self.doc:
                self.doc.put(target, LineMap(where.line))
            mapping, path = self.doc[target], f"{target}.{key}"
        mapping.put(key, value, where.line, where.path)
        self.report.mapped.append(f"{where.path} → {path} {show(value)}{note}")

    def ignore(self, label: str, why: str) -> None:
        self.report.ignored.append(f"{label}: ignored ({why})")

    def unique_name(self, text: str, fallback: str) -> str:
        base = to_name(text) or fallback
        name, n = base, 2
        while name in self.names:
            name, n = f"{base}-{n}", n + 1
        self.names.add(name)
        return name

    def finish(self) -> tuple[Config, ImportReport]:
        if any(not node.get("local") for node in self.nodes):
            self.report.mapped.append(
                "(default) → nodes[*].python python3 (set python: to the "
                "interpreter on each node that can import mlx)"
            )
        return config_from_data(self.doc, self.source), self.report


# mlx.launch's --backend names (mlx/_distributed_utils/launch.py, mlx 0.32), which MLX hostfiles
# and jupiter's cluster.yaml carry, as boltring's ring.backend where boltring runs the same thing.
_MLX_BACKENDS = {
    "ring": (
        "mlx-ring",
        " (MLX's TCP ring, as mlx.launch runs it; --backend boltring for boltring's own ring)",
    ),
    "jaccl": ("jaccl", " (MLX's RDMA over Thunderbolt 5; it needs --rdma-devices FILE)"),
}
_MLX_BACKENDS_UNRUN = {
    "mpi": "boltring does not launch through MPI; ring.backend stays boltring, or pass --backend mlx-ring",
    "nccl": "NCCL is MLX's CUDA backend, which boltring does not launch; ring.backend stays boltring",
    "jaccl-ring": "boltring's jaccl backend links every pair of nodes, not only ring neighbours; "
    "ring.backend stays boltring, or pass --backend jaccl with every pair's RDMA device",
}


def put_mlx_backend(d: Draft, value: Any, where: Where) -> None:
    """An MLX backend name as ring.backend when boltring has that backend; else said why not."""
    if isinstance(value, str) and value in _MLX_BACKENDS:
        backend, note = _MLX_BACKENDS[value]
        d.put("ring", "backend", backend, where, note)
    elif value in ("", None):  # mlx.launch then picks its own default; boltring keeps its own
        d.ignore(where.path, "not set; ring.backend stays boltring")
    elif isinstance(value, str) and value in _MLX_BACKENDS_UNRUN:
        d.ignore(where.path, _MLX_BACKENDS_UNRUN[value])
    else:
        what = repr(value) if isinstance(value, str) else describe(value)
        known = "ring, jaccl, jaccl-ring, mpi or nccl"
        d.ignore(where.path, f"{what} is not an MLX backend ({known}); ring.backend stays boltring")


def show(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def need(container: Any, key: str, at: Where, expected: str) -> tuple[Any, Where]:
    if not isinstance(container, dict) or key not in container:
        at.fail(f"there is no {key!r}", expected)
    return container[key], at.child(container, key)


def text(value: Any, at: Where, expected: str) -> str:
    if not isinstance(value, str) or not value.strip():
        at.fail(describe(value), expected)
    return value.strip()


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False
