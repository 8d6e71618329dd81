"""Atomic training checkpoints, written by rank 0 and restored on every rank.

(About 600 lines, over the usual 400: the file format, the runs, the atomic write, the checksum
and the collective restore are one contract, and a change to any of them must be read with the
others.)

Layout of a checkpoint directory::

    step-000100.safetensors   model params ("model.<path>") + optimizer state ("optimizer.<path>")
    step-000200.safetensors
    latest                    one line: the file name of the newest complete checkpoint

Step, seed, stream position ("samples_seen"), task name and the RNG description live in the
safetensors metadata (strings; the structured part is JSON). Nothing is pickled.

Runs: a checkpoint's metadata names its "run": the id of the training process that wrote it,
or, after ``--resume``, of the run it restored (restore carries it on; one training per process,
as the runner starts them). A folder may hold an earlier run's checkpoints at higher steps than
this run's (a job started again without --resume): ``latest`` names the newest checkpoint this
run wrote, resume falls back only to older checkpoints of the run ``latest`` names, and prune
removes only that run's older ones. Another run's checkpoints are never taken for this run's,
nor deleted. Checkpoints written before runs were recorded count as one run. Without a
readable ``latest``, the highest step stands for it (as before).

Integrity: the metadata carries "sha256", the SHA-256 of every tensor's bytes in sorted name
order (name, dtype, shape and bytes), computed before the file is written. Loading recomputes it,
so one flipped bit is found. Resume walks from the newest checkpoint to older ones and uses the
newest that verifies, naming each one it skipped. `prune` keeps the run's newest K.

Atomicity: every file is written to a hidden temporary file in the same directory, flushed and
fsynced (``F_FULLFSYNC`` on macOS, where plain fsync does not reach the disk), renamed over the
final name with ``os.replace`` and then the directory is fsynced. The checkpoint file is
committed before ``latest`` is rewritten the same way, so a process killed at any point leaves
either the old or the new ``latest``, each naming a complete file. Left-over temporary files are
never read; the next save on the same host removes those of dead processes.

Restore: on a real cluster only rank 0 has the directory, so rank 0 reads the file and the other
ranks receive the bytes through ``group.all_sum`` where they contribute zeros (int32 words, so
adding zeros is exact for every dtype). Non-zero ranks never touch the file system, which keeps
this correct when the directory exists only on rank 0's node. One all_sum per ~64 MiB bucket is
fine for a first version; a real broadcast would halve the traffic.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_map_with_path

FORMAT = "boltring-checkpoint/1"
LATEST = "latest"
_NAME_RE = re.compile(r"^step-(\d{6,})\.safetensors$")
_TMP_RE = re.compile(r"^\.(?P<final>.+)\.(?P<host>[^.]+)\.(?P<pid>\d+)\.tmp$")
_BUCKET_BYTES = 64 << 20
_MAX_HEADER = 100 << 20  # a safetensors header longer than this is not one we wrote

# The run this process's checkpoints belong to: a new one, unless restore() continues another.
_run = uuid.uuid4().hex[:16]

# Status words of the restore header broadcast by rank 0.
_NONE, _OK, _ERROR = 1, 2, 3


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used (corrupt, other task, other seed, other shapes)."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}.safetensors"


# ---------------------------------------------------------------------------------------------
# Atomic file writes.


def _fsync_file(fd: int) -> None:
    if sys.platform == "darwin":
        import fcntl

        try:
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
            return
        except OSError:
            pass  # not supported by this file system: fall back to fsync
    os.fsync(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def atomic_write(
    path: Path, write: Callable[[Any], None], *, before_replace: Callable[[Path], None] | None = None
) -> Path:
    """Write ``path`` atomically: ``write(fileobj)`` into a temp file, fsync, rename, fsync dir.

    ``before_replace(tmp_path)`` runs after the data is durable and before the rename (a test
    hook: raising or killing the process there must leave no partial ``path``).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{_host_tag()}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            _fsync_file(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(e, OSError) and not e.filename and e.errno:
            # "No space left on device" alone does not say which file: name the one we wrote.
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    _fsync_dir(path.parent)
    return path


def _remove_stale_temps(directory: Path) -> None:
    """Remove temp files left by dead processes on this host (never another host's)."""
    host = _host_tag()
    for p in directory.iterdir():
        m = _TMP_RE.match(p.name)
        if not m or m["host"] != host:
            continue
        pid = int(m["pid"])
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # alive (or not ours to judge)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            p.unlink()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# Save / load on one process.


def tensor_digest(arrays: dict[str, mx.array]) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every array, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        h.update(f"{name}\0{a.dtype}\0{list(a.shape)}\0".encode())
        h.update(_to_bytes(a).tobytes())
    return h.hexdigest()


def _state_arrays(task: Any) -> dict[str, mx.array]:
    flat: Any = tree_flatten(task.model.parameters())  # a list of (path, array) pairs
    arrays: dict[str, mx.array] = {f"model.{k}": v for k, v in flat}
    flat = tree_flatten(task.optimizer.state)
    arrays.update({f"optimizer.{k}": v for k, v in flat})
    return arrays


def save(
    directory: str | os.PathLike,
    task: Any,
    *,
    step: int,
    samples_seen: int,
    seed: int,
    global_batch: int,
    world_size: int = 1,
    before_replace: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``step-NNNNNN.safetensors`` then ``latest``, each atomically; return the file path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(directory)
    arrays = _state_arrays(task)
    mx.eval(list(arrays.values()))
    meta = {
        "format": FORMAT,
        "run": _run,
        "task": task.name,
        "step": str(step),
        "samples_seen": str(samples_seen),
        "seed": str(seed),
        "global_batch": str(global_batch),
        "world_size": str(world_size),
        "fingerprint": str(getattr(task, "fingerprint", "")),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # Randomness is stateless (see loop.py): the data order is a pure function of the seed
        # and the stream position, per-step keys of seed and step. This is the whole RNG state;
        # a task whose randomness works otherwise says how in its ``rng_metadata`` (lm.py).
        "rng": json.dumps(
            {
                "kind": "stateless",
                "data_order": "numpy PCG64 per epoch, SeedSequence([seed, epoch, 0x0B017])",
                "seed": seed,
                "position": samples_seen,
                "step": step,
                **getattr(task, "rng_metadata", {}),
            }
        ),
    }
    meta["sha256"] = tensor_digest(arrays)
    path = directory / checkpoint_name(step)
    atomic_write(path, lambda f: mx.save_safetensors(f, arrays, metadata=meta), before_replace=before_replace)
    atomic_write(
        directory / LATEST, lambda f: f.write((path.name + "\n").encode()), before_replace=before_replace
    )
    return path


def prune(directory: str | os.PathLike, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` checkpoints of the run ``latest`` names (the one that
    saved last), never that file itself nor another run's; return the removed paths. ``keep``
    < 1 keeps everything."""
    if keep < 1:
        return []
    newest = latest_path(directory)
    removed: list[Path] = []
    for p in run_checkpoints(directory, newest)[:-keep]:
        if p == newest:
            continue
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Complete checkpoint files, oldest first (temp files are never listed)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m[1]), p) for p in directory.iterdir() if (m := _NAME_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def read_meta(path: str | os.PathLike) -> dict[str, str] | None:
    """A checkpoint's metadata from the safetensors header alone (an 8-byte length, then JSON),
    without reading its tensors; None when the header cannot be read."""
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if not 0 < length <= _MAX_HEADER:
                return None
            header = json.loads(f.read(length))
    except (OSError, ValueError):
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else None


def run_of(path: str | os.PathLike) -> str | None:
    """The run that wrote this checkpoint ("" before runs were recorded); None if unreadable."""
    meta = read_meta(path)
    if meta is None or meta.get("format") != FORMAT:
        return None
    return meta.get("run", "")


def run_checkpoints(directory: str | os.PathLike, newest: Path | None) -> list[Path]:
    """The checkpoints written by the same run as ``newest``, oldest first (``newest`` among
    them); [] when there is none, or its run cannot be read (then no other file is known to be
    of its run)."""
    run = run_of(newest) if newest is not None else None
    if run is None:
        return []
    return [p for p in list_checkpoints(directory) if p == newest or run_of(p) == run]


def latest_path(directory: str | os.PathLike) -> Path | None:
    """The checkpoint ``latest`` names; if ``latest`` is missing or bad, the highest step file."""
    directory = Path(directory)
    try:
        name = (directory / LATEST).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        name = ""
    if _NAME_RE.match(name) and (directory / name).is_file():
        return directory / name
    files = list_checkpoints(directory)
    return files[-1] if files else None


@dataclass
class Loaded:
    path: Path | None  # None on ranks that received the checkpoint over the network
    step: int
    samples_seen: int
    meta: dict[str, str]
    arrays: dict[str, mx.array]


def load_file(path: str | os.PathLike) -> Loaded:
    path = Path(path)
    try:
        loaded: Any = mx.load(str(path), return_metadata=True)
        arrays: dict[str, mx.array] = loaded[0]
        meta: dict[str, str] = loaded[1]
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a boltring checkpoint (format {meta.get('format')!r})")
    try:
        step, seen = int(meta["step"]), int(meta["samples_seen"])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: bad metadata ({e})") from e
    expected = meta.get("sha256")
    if expected is not None and tensor_digest(arrays) != expected:
        raise CheckpointError(
            f"{path.name} is corrupt: its tensors do not match the SHA-256 recorded when it was written"
        )
    return Loaded(path, step, seen, dict(meta), arrays)


def verified(path: str | os.PathLike) -> bool:
    """Does this checkpoint load and match its recorded checksum?"""
    try:
        load_file(path)
        return True
    except CheckpointError:
        return False


def newest_verified(directory: str | os.PathLike) -> tuple[Loaded | None, list[str]]:
    """The newest checkpoint that loads and verifies, and one line for each newer one that did
    not (newest first): the one ``latest`` names, then the older ones of its run by step, never
    another run's, even at a higher step (that run's state is not this run's past)."""
    directory = Path(directory)
    newest = latest_path(directory)
    if newest is None:
        return None, []
    older = [p for p in reversed(run_checkpoints(directory, newest)) if p != newest]
    candidates = [newest, *older]
    skipped: list[str] = []
    for path in candidates:
        try:
            return load_file(path), skipped
        except CheckpointError as e:
            skipped.append(str(e))
    return None, skipped


def _move_away(directory: str | os.PathLike | None) -> str:
    """What to do with checkpoints this job cannot use. boltring gives each job of a config its
    own directory (<workdir>/checkpoints/<config>/<job>), so they are this job's and only moving
    them away starts it afresh (a user of boltring has no --checkpoint-dir to pass)."""
    where = directory if directory is not None else "this job's checkpoint directory"
    return f"move the checkpoints in {where} away (or delete them) to start this job from step 0"


def _fingerprint(text: str | None) -> dict[str, Any]:
    """A fingerprint as a dict (mlp, charlm: {"args": {...}, "text_sha256": ...}); {} otherwise."""
    try:
        value = json.loads(text or "")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _args_differ(written: str | None, now: str | None) -> str:
    """' (it was written with --hidden 64 after `--`, this run has --hidden 8)' for the
    example options that differ between two fingerprints, and ' (it was written from another
    --data text)' when the text does; '' when neither can be told."""
    old, new = _fingerprint(written), _fingerprint(now)
    said = []
    a, b = old.get("args"), new.get("args")
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
        if keys:

            def opts(values: dict[str, Any]) -> str:
                return " ".join(f"--{k.replace('_', '-')} {values[k]}" for k in keys)

            said.append(f"it was written with {opts(a)} after `--`, this run has {opts(b)}")
    if old.get("text_sha256") and new.get("text_sha256") and old["text_sha256"] != new["text_sha256"]:
        said.append("it was written from another --data text")
    return f" ({'; '.join(said)})" if said else ""


def _dtype(a: mx.array) -> str:
    return str(a.dtype).removeprefix("mlx.core.")  # "float32", not "mlx.core.float32"


def _check_against(
    loaded: Loaded,
    template: dict[str, mx.array] | None,
    task_name: str,
    seed: int,
    fingerprint: str | None = None,
) -> None:
    """Can this run continue from ``loaded``? Raises CheckpointError naming the file, what
    differs and what to do. ``template``: the run's model and optimizer arrays (their names,
    shapes and dtypes are compared); None compares only the example and the seed."""
    where = loaded.path or "checkpoint"
    directory = loaded.path.parent if loaded.path else None
    if loaded.meta.get("task") != task_name:
        raise CheckpointError(
            f"{where} was written by example {loaded.meta.get('task')!r}, not {task_name!r}: "
            f"it belongs to another job; {_move_away(directory)}"
        )
    if loaded.meta.get("seed") != str(seed):
        raise CheckpointError(
            f"{where} was written with --seed {loaded.meta.get('seed')}, this run has --seed "
            f"{seed}: resume with --seed {loaded.meta.get('seed')}, or {_move_away(directory)}"
        )
    if template is None:
        return
    differ = _args_differ(loaded.meta.get("fingerprint"), fingerprint)
    missing = sorted(set(template) - set(loaded.arrays))
    extra = sorted(set(loaded.arrays) - set(template))
    if missing or extra:
        raise CheckpointError(
            f"{where} does not match the model: missing {missing[:5]}, unexpected {extra[:5]}{differ}; "
            f"{_move_away(directory)}"
        )
    for k, t in template.items():
        a = loaded.arrays[k]
        if a.shape != t.shape or a.dtype != t.dtype:
            raise CheckpointError(
                f"{where}: {k} is {_dtype(a)}{list(a.shape)}, the model has {_dtype(t)}{list(t.shape)}"
                f"{differ}; {_move_away(directory)}"
            )


def resume_template(task: Any) -> dict[str, mx.array]:
    """The arrays a checkpoint must hold for ``task``: its model and optimizer state, by name.
    The optimizer state must be initialised first (loop.train does it before restoring)."""
    return _state_arrays(task)


def choose(
    directory: str | os.PathLike,
    task_name: str,
    seed: int,
    template: dict[str, mx.array] | None,
    fingerprint: str | None = None,
) -> tuple[Loaded | None, list[str]]:
    """What ``--resume`` continues from: the newest checkpoint in ``directory`` that verifies,
    checked against this run (see _check_against), and one line for each newer one that did not
    verify; (None, []) when there is no checkpoint. Raises CheckpointError when there are
    checkpoints and this run cannot use them. The one check: rank 0's restore calls it, and so
    does ``runner --check-resume``, which the controller runs on rank 0's node before it
    announces a resume point and starts any rank."""
    loaded, skipped = newest_verified(directory)
    if loaded is None:
        if skipped:
            raise CheckpointError(
                f"no checkpoint in {directory} verifies: {skipped[0]}; {_move_away(directory)}"
            )
        return None, skipped
    _check_against(loaded, template, task_name, seed, fingerprint)
    return loaded, skipped


def apply(task: Any, arrays: dict[str, mx.array]) -> None:
    """Put checkpoint arrays into the task's model and optimizer (structures must match)."""
    task.model.update(tree_map_with_path(lambda p, _: arrays[f"model.{p}"], task.model.parameters()))
    task.optimizer.state = tree_map_with_path(lambda p, _: arrays[f"optimizer.{p}"], task.optimizer.state)
    mx.eval(task.model.parameters(), task.optimizer.state)


# ---------------------------------------------------------------------------------------------
# Restore on every rank (rank 0 reads, the others receive).


def _to_bytes(a: mx.array) -> np.ndarray:
    return np.frombuffer(memoryview(mx.contiguous(a)), dtype=np.uint8) if a.size else np.zeros(0, np.uint8)  # type: ignore[arg-type]


def _from_bytes(b: np.ndarray, like: mx.array) -> mx.array:
    if like.size == 0:
        return mx.zeros(like.shape, like.dtype)
    return mx.array(np.ascontiguousarray(b)).view(like.dtype).reshape(like.shape)


def _broadcast_bytes(group: Any, data: np.ndarray | None, nbytes: int) -> np.ndarray:
    """Rank 0's ``nbytes`` bytes on every rank: all_sum of int32 words, others send zeros."""
    if group.size == 1:
        assert data is not None
        return data
    words = (nbytes + 3) // 4
    buf = np.zeros(words * 4, dtype=np.uint8)
    if group.rank == 0:
        assert data is not None
        buf[:nbytes] = data
    out = group.all_sum(mx.array(buf.view(np.int32)))
    return np.frombuffer(memoryview(out), dtype=np.uint8)[:nbytes].copy()


def _broadcast_arrays(
    group: Any, arrays: dict[str, mx.array] | None, template: dict[str, mx.array]
) -> dict[str, mx.array]:
    """Rank 0's arrays (shaped like ``template``) on every rank, in buckets of ~64 MiB."""
    if group.size == 1:
        assert arrays is not None
        return arrays
    keys = sorted(template)
    out: dict[str, mx.array] = {}
    i = 0
    while i < len(keys):
        bucket: list[str] = []
        size = 0
        while i < len(keys) and (not bucket or size + template[keys[i]].nbytes <= _BUCKET_BYTES):
            bucket.append(keys[i])
            size += template[keys[i]].nbytes
            i += 1
        data = None
        if group.rank == 0:
            assert arrays is not None
            data = np.concatenate([_to_bytes(arrays[k]) for k in bucket]) if size else np.zeros(0, np.uint8)
        got = _broadcast_bytes(group, data, size) if size else np.zeros(0, np.uint8)
        off = 0
        for k in bucket:
            n = template[k].nbytes
            out[k] = _from_bytes(got[off : off + n], template[k])
            off += n
    return out


@dataclass
class ResumeInfo:
    step: int
    samples_seen: int
    path: Path | None  # the file rank 0 read (None on other ranks)
    meta: dict[str, str]
    skipped: list[str] = field(default_factory=list)  # newer checkpoints that failed to verify (rank 0)


def restore(group: Any, directory: str | os.PathLike, task: Any, *, seed: int) -> ResumeInfo | None:
    """Load the latest checkpoint into ``task`` on every rank; None if there is none.

    Collective: every rank must call it. Rank 0 reads ``directory``; errors found by rank 0
    are raised on every rank with the same message (no rank is left waiting).
    """
    template = _state_arrays(task)
    loaded: Loaded | None = None
    status, message = _NONE, ""
    skipped: list[str] = []
    if group.rank == 0:
        try:
            loaded, skipped = choose(directory, task.name, seed, template, getattr(task, "fingerprint", None))
            if loaded is not None:
                status = _OK
        except CheckpointError as e:
            status, message, loaded = _ERROR, str(e), None
        except OSError as e:
            status, message, loaded = _ERROR, f"cannot read checkpoints in {directory}: {e}", None

    # Header: status, then a JSON blob (metadata or the error message).
    if group.rank == 0:
        blob = json.dumps({"message": message, "meta": loaded.meta if loaded else {}}).encode()
        header = np.array([status, len(blob)], dtype=np.int32)
    else:
        blob, header = b"", np.zeros(2, dtype=np.int32)
    if group.size > 1:
        header = np.asarray(group.all_sum(mx.array(header))).astype(np.int64)
    status, blob_len = int(header[0]), int(header[1])
    if group.size > 1:
        data = np.frombuffer(blob, dtype=np.uint8) if group.rank == 0 else None
        blob = _broadcast_bytes(group, data, blob_len).tobytes()
    info = json.loads(blob.decode())

    if status == _NONE:
        return None
    if status == _ERROR:
        raise CheckpointError(
            info["message"] if group.rank == 0 else f"rank 0 could not resume: {info['message']}"
        )
    meta = info["meta"]
    arrays = _broadcast_arrays(group, loaded.arrays if loaded else None, template)
    apply(task, arrays)
    global _run
    _run = meta.get("run", "")  # the checkpoints written from here on continue the restored run
    return ResumeInfo(
        step=int(meta["step"]),
        samples_seen=int(meta["samples_seen"]),
        path=loaded.path if loaded else None,
        meta=meta,
        skipped=skipped,
    )
