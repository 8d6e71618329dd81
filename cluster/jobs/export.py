"""Export a run's metrics: CSV (every rank's step lines), TensorBoard event files (through
tensorboardX, a maintained writer, not a hand-made encoder), and the loss curve as SVG.

The metrics come from the ranks' metrics.jsonl files of a run directory on this machine
(history.RunRecord.metrics_file); a run on remote nodes has to be copied back first.

A file is written into a folder that exists, never one made for it: a mistyped folder is
refused (OSError, which the caller names in one line), as `boltring hostfile -o` does.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from boltring.cluster.agent.spawn import write_atomic
from boltring.cluster.jobs.history import HistoryError, RunRecord, read_steps

CSV_FIELDS = (
    "step",
    "rank",
    "wall",
    "loss",
    "val_loss",
    "steps_per_s",
    "samples_per_s",
    "tokens_per_s",
    "allreduce_s",
    "allreduce_gbps",
    "bytes_sent",
    "bytes_recv",
    "mem_mb",
)
# What goes to TensorBoard: loss curves once (rank 0), throughput per rank.
TB_JOB_SCALARS = ("loss", "val_loss")
TB_RANK_SCALARS = ("samples_per_s", "tokens_per_s", "allreduce_gbps", "allreduce_s", "mem_mb")


def run_metrics(run: RunRecord) -> dict[int, list[dict[str, Any]]]:
    """rank -> its step records, with every rate per rank as the app and `--run` show it;
    HistoryError when no rank's file is on this machine."""
    out: dict[int, list[dict[str, Any]]] = {}
    for r in run.ranks:
        rank = int(r.get("rank", -1))
        path = run.metrics_file(rank)
        if path is not None:
            out[rank] = [per_rank(rec, len(run.ranks)) for rec in read_steps(path)]
    if not out:
        raise no_metrics(run)
    return out


def per_rank(rec: dict[str, Any], world_size: int) -> dict[str, Any]:
    """A worker reports the global batch as its `samples` (netio.Group.report), so its line's
    samples_per_s is the whole job's; a rank did 1/N of it, as follow.py shows it. Exported as
    written, rank<N>/samples_per_s was N times the figure the app and `--run` showed."""
    if rec.get("samples_per_s") is None:
        return rec
    return {**rec, "samples_per_s": rec["samples_per_s"] / max(world_size, 1)}


def no_metrics(run: RunRecord) -> HistoryError:
    """Why a run has no metrics here: it never ran (nothing to copy), or it ran elsewhere."""
    if run.never_started:
        why = f"{run.state}: {run.reason}" if run.reason else run.state
        return HistoryError(
            f"job {run.job_id} ended before all its ranks were running ({why}), so it has no "
            "metrics to export",
            hint="`boltring runs` shows which jobs ran",
        )
    # A rank folder that is here (a local node's, or one copied back) with no metrics file in it:
    # the ranks never reported a step. Nothing is missing, so there is nothing to copy.
    here = [r for r in run.ranks if r.get("run_dir") and Path(str(r["run_dir"])).expanduser().is_dir()]
    if here and len(here) == len(run.ranks):
        return HistoryError(
            f"job {run.job_id} ({run.state}) reported no step, so it has no metrics to export",
            hint=f"its ranks' logs are in {run.run_dir}"
            if run.run_dir
            else "`boltring runs` shows which jobs ran",
        )
    where = ", ".join(sorted({str(r.get("node")) for r in run.ranks})) or "?"
    return HistoryError(
        f"job {run.job_id}: no metrics file on this machine (its ranks ran on {where})",
        hint=f"copy {run.run_dir} from the node to the same path here, then export again",
    )


def write_csv(run: RunRecord, path: str | Path) -> int:
    """One row per rank and step, sorted by step then rank; the number of rows."""
    rows = [rec for recs in run_metrics(run).values() for rec in recs]
    rows.sort(key=lambda r: (int(r.get("step", 0)), int(r.get("rank", 0))))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for rec in rows:
        writer.writerow({k: rec.get(k) for k in CSV_FIELDS})
    write_atomic(Path(path), text.getvalue())  # an interrupted export leaves the old file whole
    return len(rows)


def write_tensorboard(run: RunRecord, logdir: str | Path) -> int:
    """Scalars under logdir/<job id> (loss from rank 0; rank<N>/<metric> for every rank), with
    each line's wall time; the number of scalars written."""
    try:  # optional: only `export --tensorboard` needs it
        from tensorboardX import SummaryWriter
    except ImportError:
        raise HistoryError(
            "--tensorboard writes through tensorboardX, which is not installed",
            hint="pip install 'boltring[export]'",
        ) from None
    metrics = run_metrics(run)
    written = 0
    writer = SummaryWriter(logdir=str(Path(logdir) / run.job_id))
    try:
        for rank, recs in sorted(metrics.items()):
            for rec in recs:
                step, wall = int(rec.get("step", 0)), rec.get("wall")
                names = [(f"rank{rank}/{k}", rec.get(k)) for k in TB_RANK_SCALARS]
                if rank == min(metrics):
                    names += [(k, rec.get(k)) for k in TB_JOB_SCALARS]
                for tag, value in names:
                    if value is not None:
                        writer.add_scalar(tag, float(value), step, walltime=wall)
                        written += 1
    finally:
        writer.close()
    return written


def loss_svg(points: Sequence[tuple[int, float]], title: str, width: int = 800, height: int = 400) -> str:
    """The loss curve as a standalone SVG (axes, 5 ticks each way, one polyline)."""
    left, right, top, bottom = 64, 16, 32, 40
    pw, ph = width - left - right, height - top - bottom
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<text x="{left}" y="20" font-size="14">{escape(title)}</text>'
    )
    if not points:
        return head + f'<text x="{left}" y="{top + ph // 2}">no steps</text></svg>\n'
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    parts = [head]
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    for i in range(5):
        xv = x0 + (x1 - x0) * i / 4
        yv = y0 + (y1 - y0) * i / 4
        parts.append(f'<text x="{sx(xv):.1f}" y="{top + ph + 16}" text-anchor="middle">{xv:.0f}</text>')
        parts.append(f'<text x="{left - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.4g}</text>')
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{sy(yv):.1f}" y2="{sy(yv):.1f}" stroke="#eee"/>'
        )
    parts.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">step</text>')
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    parts.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{path}"/>')
    parts.append("</svg>\n")
    return "".join(parts)


def write_loss_svg(points: Sequence[tuple[int, float]], title: str, path: str | Path) -> Path:
    target = Path(path)
    write_atomic(target, loss_svg(points, title))
    return target
