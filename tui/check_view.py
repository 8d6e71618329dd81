"""`boltring check`: the node checks as tables (or JSON lines), and an exit code."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from boltring.cluster.jobs.controller import JobController

MARKS = {
    "ok": "[green]✔ ok[/]",
    "warn": "[yellow]! warn[/]",
    "fail": "[red]✘ fail[/]",
    "skipped": "[dim]- skipped[/]",
}


async def run_check(controller: JobController, *, json_out: bool = False, bandwidth: bool = True) -> int:
    console = Console(highlight=False)
    config = controller.config
    try:
        results = await controller.run_checks(bandwidth=bandwidth)
    finally:
        await controller.close()
    if json_out:
        for r in results:
            print(json.dumps(r.to_dict()))
    else:
        nodes = Table(title=f"cluster {config.name} ({config.source})", title_justify="left")
        for col in ("node", "ssh", "ring address", "ranks", "chip", "memory"):
            nodes.add_column(col)
        total_mem = 0.0
        facts = {(r.node, r.name): r for r in results}
        for n in config.nodes:
            mem = facts.get((n.name, "memory"))
            chip = facts.get((n.name, "chip"))
            if n.memory_gb:
                total_mem += n.memory_gb
            nodes.add_row(
                n.name,
                "local" if n.local else (n.ssh or ""),
                n.ring_ip,
                str(n.ranks),
                n.chip or (chip.value if chip else "") or "",
                f"{n.memory_gb:g} GB" if n.memory_gb else (mem.value if mem else "") or "",
            )
        console.print(nodes)
        if total_mem:
            console.print(f"total memory (configured): {total_mem:g} GB over {len(config.nodes)} nodes")
        table = Table(title="checks", title_justify="left")
        for col in ("node", "check", "status", "value", "what to do"):
            table.add_column(col, overflow="fold")
        for r in results:
            table.add_row(r.node, r.name, MARKS.get(r.status, r.status), r.value or "", r.hint or "")
        console.print(table)
    fails = sum(r.status == "fail" for r in results)
    warns = sum(r.status == "warn" for r in results)
    if not json_out:
        console.print(f"{len(results)} checks: {fails} failed, {warns} warnings")
    return 1 if fails else 0
