"""`boltring bench` on the command line: runs each cell (cluster/jobs/bench.py measures), then
prints the table, or one JSON line per backend and cell and one per ratio with --json."""

from __future__ import annotations

import datetime
import json

from rich.table import Table

from boltring.cluster.jobs.bench import (
    BenchError,
    BenchResult,
    human_size,
    machine_line,
    parse_ranks,
    parse_size,
    run_backend,
)

from .console import cli_console


def run_bench_cli(args) -> int:
    console = cli_console(stderr=args.json)
    wire = getattr(args, "wire_dtype", "") or ""
    directions = getattr(args, "directions", "auto")
    same_host = getattr(args, "same_host", "unix")
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
        rank_counts = parse_ranks(args.ranks)
        backends = ["boltring", "mlx"] if args.backend == "both" else [args.backend]
        if wire and backends != ["boltring"]:
            raise BenchError("--wire-dtype measures boltring's average_gradients: use --backend boltring")
        results: dict[tuple[int, str], list[BenchResult]] = {
            (n, b): [] for n in rank_counts for b in backends
        }
        for n in rank_counts:
            for i, size in enumerate(sizes):
                # Both backends back to back for each cell, in alternating order (ABBA): a ratio
                # then compares two measurements seconds apart, whichever way the machine drifts
                # (a shared VM's neighbours, a laptop warming up).
                for b in backends if i % 2 == 0 else backends[::-1]:
                    console.print(
                        f"running {b}, {n} local ranks, {human_size(size)}, {args.repeat} repeats …"
                    )
                    results[n, b] += run_backend(
                        b,
                        n,
                        [size],
                        args.repeat,
                        args.dtype,
                        wire_dtype=wire,
                        directions=directions,
                        same_host=same_host,
                    )
    except BenchError as e:
        console.print(f"boltring bench: {e}")
        return 1
    machine = machine_line()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    for n in rank_counts:
        for i, size in enumerate(sizes):
            row = {b: results[n, b][i] for b in backends}
            ratio = (row["boltring"].busbw / row["mlx"].busbw) if len(row) == 2 else None
            rows.append((n, size, row, ratio))
    if args.json:
        for n, size, row, ratio in rows:
            for r in row.values():
                print(json.dumps({**r.to_dict(), "machine": machine, "date": stamp}))
            if ratio is not None:
                print(
                    json.dumps(
                        {
                            "ranks": n,
                            "bytes": size,
                            "ratio_boltring_over_mlx": ratio,
                            "machine": machine,
                            "date": stamp,
                        }
                    )
                )
        return 0
    table = Table(
        title=f"allreduce, {args.dtype}{f' as {wire} on the wire' if wire else ''}, median of {args.repeat}",
        title_justify="left",
    )
    cols = ("ranks", "size", "backend", "median ms", "algbw GB/s", "busbw GB/s", "extra MB", "boltring/mlx")
    for col in cols:
        table.add_column(col, justify="right")
    for n, size, row, ratio in rows:
        for j, (b, r) in enumerate(row.items()):
            table.add_row(
                str(n) if j == 0 else "",
                human_size(size) if j == 0 else "",
                f"{b} ({r.transport})" if r.transport else b,
                f"{r.median_s * 1e3:.2f}",
                f"{r.algbw:.2f}",
                f"{r.busbw:.2f}",
                "" if r.extra_mem_bytes is None else f"{r.extra_mem_bytes / (1 << 20):.0f}",
                f"{ratio:.2f}×" if ratio is not None and j == len(row) - 1 else "",
            )
    console.print(table)
    console.print(f"machine: {machine}; {stamp}")
    console.print(
        "extra MB: peak RSS during the timed calls minus the RSS before the first one (input "
        "allocated), on rank 0"
    )
    return 0
