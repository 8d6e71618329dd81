"""Start, stop and inspect one detached rank on the node it runs on. Standard library only.

    PYTHON -m boltring.cluster.agent.spawn start RUN_DIR   < {"argv": [...], "env": {...}, "secret": "hex",
                                                          "files": {"MLX_HOSTFILE": "content", ...},
                                                          "cwd": ["/Users/me/proj", "~/.boltring"]}
    PYTHON -m boltring.cluster.agent.spawn kill RUN_DIR [--grace S]
    PYTHON -m boltring.cluster.agent.spawn status RUN_DIR

Both transports run these same commands (locally as a subprocess, remotely over SSH), so a
rank's life is managed identically everywhere, macOS (no setsid(1) there) included.

`start` double-forks: the rank runs in its own session and process group, detached from the
SSH session or the controller, with stdout/stderr in RUN_DIR/rank.log, so a dropped
connection or a quitting controller does not stop training. A small keeper process (the
session leader, whose pid is the group id in RUN_DIR/pid) waits for the rank and records its
exit status in RUN_DIR/exit.json. The secret arrives on stdin and is written 0600 to
RUN_DIR/secret: it never appears on a command line or in an environment listing, and the keeper
removes it when the rank ends. The rank runs in the first "cwd" folder that exists on the node
(the last is made when none does: see working_dir), so relative paths mean what they meant where
boltring was started; its own files stay in RUN_DIR (BOLTRING_RUN_DIR names it).
`kill` sends SIGTERM to the whole group, then SIGKILL after a grace period. `--by WHO` first
records who asked (RUN_DIR/stop.json), so the exit record says "stopped by boltring kill" rather
than only a signal or an exit code.

exit.json is what a rank's end looks like to the controller, machine-readable:
    {"returncode": 1, "signal": null, "started": t, "ended": t,
     "error": "PeerTimeout", "message": "...", "peer_rank": 2, "direction": "recv",   <- why.json
     "stopped_by": "boltring kill"}                                                  <- stop.json
The rank writes why.json ("why I failed") itself before exiting; the keeper merges it. So that a
full disk cannot leave a rank's end unrecorded, the keeper reserves the bytes of exit.json when
the rank starts (exit.reserve, written while there was room) and overwrites them in place.

Every answer carries "clock": {"time": this node's time.time() when the command began,
"elapsed_s": seconds since by its monotonic clock}, from which the controller tells how far this
node's wall clock is from its own (facts.clock_offset) and puts exit.json's times, read on this
node's clock, on its own.

(Over 400 lines on purpose: `start`, `kill` and `status` are one agent command on the node,
and they share the run directory's file protocol (pid, exit.json, why.json, the secret, the
reserve); split apart, each file would restate it.)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from boltring.cluster.agent.proc_groups import (
    group_alive,
    group_states,
    live_groups,
    reused,
    signal_group,
    started_at,
)

PID_FILE = "pid"
# The keeper's start time (proc_groups.started_at) beside its pid, in a file of its own so that
# the pid file stays one number for whoever reads it: tells the keeper from a later process
# given its pid when no exit record exists to date the rank's end (a reboot, a SIGKILLed group).
PID_STARTED_FILE = "pid.started"
START_LOCK = "start.lock"  # held by `start` from its liveness check until the pid is written
LOG_FILE = "rank.log"
EXIT_FILE = "exit.json"
SECRET_FILE = "secret"
SPEC_FILE = "spec.json"
WHY_FILE = "why.json"  # written by the rank: its error type, message, and the peer it lost
STOP_FILE = "stop.json"  # written by `kill --by`: who stopped the rank
RESERVE_FILE = "exit.reserve"  # pre-written room for exit.json (a full disk cannot lose the record)
RESERVE_BYTES = 8192
ABORT_FILE = "abort"  # in the job directory: an interrupted launch; `start DIR…` starts no more


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Readers see the old file or the new one, never a part (temp file, fsync, rename)."""
    # A fresh name each time, created exclusively: a leftover of a dead process could have
    # another mode (a secret must never land in a 0644 file), and two threads must not share one.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, mode)
            data = memoryview(text.encode())
            while data:  # a write may take less than all
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # a half-written temp (a full disk) outlives nothing
        raise


def read_pid(run_dir: Path) -> int | None:
    try:
        return int((run_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def read_exit(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / EXIT_FILE).read_text())
    except (OSError, ValueError):
        return None


def status(run_dir: Path) -> dict:
    """Liveness of the rank: alive, and `stopped` when a process of it is frozen (SIGSTOP, a
    debugger): alive but never going to send another byte."""
    pid, _ = _own_group(run_dir)
    states = group_states(pid) if pid else []
    alive = bool(states) if states is not None else bool(pid and group_alive(pid))
    answer = {
        "pid": pid,
        "alive": alive,
        "stopped": any(s == "T" for s in states or []),
        # Read after the liveness: the keeper writes it before it exits, so a group found dead
        # always has it. Read before, a rank ending in between was "gone without a record".
        "exit": read_exit(run_dir),
    }
    if not alive and answer["exit"] is None:
        # Dead with no record yet, yet `kill` was told to stop it (stop.json is written before
        # any signal): a SIGKILLed keeper's record is written by that kill once the group has
        # gone, a moment later. Who stopped it is its end, not "lost".
        answer["stop"] = _read_small_json(run_dir / STOP_FILE) or None
    return answer


def _own_group(run_dir: Path) -> tuple[int | None, dict | None]:
    """The rank's group id, or None once that number names a process that is not its keeper
    (a stranger's, never to be signalled or reported alive); its exit record. Told by the
    keeper's start time kept at start, and for older run dirs without it, by a process born
    after the exit record says the rank ended (proc_groups.reused)."""
    pid, exit = read_pid(run_dir), read_exit(run_dir)
    if pid and _not_the_keeper(run_dir, pid):
        return None, exit
    if pid and exit is not None and reused(pid, exit.get("ended")):
        return None, exit
    return pid, exit


def _not_the_keeper(run_dir: Path, pid: int) -> bool:
    """Process `pid` started at another time than the keeper did. No such process is not
    proof: the keeper's group members outliving it keep its number as their group id, and the
    kernel gives no new process a number still used as a group id."""
    try:
        kept = float((run_dir / PID_STARTED_FILE).read_text())
    except (OSError, ValueError):
        return False  # started by an older boltring: only the exit record can tell
    began = started_at(pid)
    return began is not None and abs(began - kept) > 2.0  # one clock; /proc's boot time is whole seconds


@contextlib.contextmanager
def _start_lock(run_dir: Path):
    """One `start` at a time in a run dir: two at once (a re-attached controller restarting
    beside the one that launched) both found no rank alive, and both started one. The second
    now waits, then finds the first's rank alive and is refused. Released when the command
    ends, however it ends; the keeper closes its inherited copy at once."""
    fd = os.open(run_dir / START_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def start(run_dir: Path, spec: dict) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _start_lock(run_dir) as lock:
        return _start_locked(run_dir, spec, lock)


def _start_locked(run_dir: Path, spec: dict, lock: int) -> dict:
    current = status(run_dir)
    if current["alive"]:
        raise SystemExit(
            _fail(f"a rank is already running in {run_dir} (pid {current['pid']}); kill it first", code=3)
        )
    for stale in (EXIT_FILE, PID_FILE, PID_STARTED_FILE, WHY_FILE, STOP_FILE):
        (run_dir / stale).unlink(missing_ok=True)
    # Room for the exit record, taken now while the disk has it (see the module docstring).
    write_atomic(run_dir / RESERVE_FILE, " " * RESERVE_BYTES)
    cwd = working_dir(spec.get("cwd"), run_dir)  # before the secret: a refusal leaves none behind
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in spec.get("env", {}).items()})
    if spec.get("secret"):
        secret_path = run_dir / SECRET_FILE
        write_atomic(secret_path, spec["secret"], mode=0o600)
        env["BOLTRING_SECRET_FILE"] = str(secret_path)
    env["BOLTRING_RUN_DIR"] = str(run_dir)
    # Files a backend reads by path (MLX_HOSTFILE, MLX_IBV_DEVICES): written here, on the node,
    # and the variable set to the path, the way mlx.launch passes them.
    for var, content in (spec.get("files") or {}).items():
        if not (isinstance(var, str) and var.replace("_", "").isalnum() and var.isupper()):
            raise SystemExit(_fail(f"bad file variable name in the launch spec: {var!r}"))
        path = run_dir / f"{var.lower()}.json"
        write_atomic(path, str(content))
        env[var] = str(path)
    # Paths in a plan are written "~/…" so one plan fits every node's home; expand them here,
    # on the node, where "~" means the right user.
    argv = [os.path.expanduser(a) if a.startswith("~/") else a for a in map(str, spec["argv"])]
    public = {k: v for k, v in spec.items() if k != "secret"}
    public["cwd"] = cwd  # where it runs, as chosen here (the plan may have named several)
    write_atomic(run_dir / SPEC_FILE, json.dumps(public, indent=1))

    ready_r, ready_w = os.pipe()
    keeper = os.fork()
    if keeper == 0:  # the keeper: new session, owns the log, waits for the rank
        try:
            os.close(ready_r)
            os.close(lock)  # the start lock is the start command's, not the rank's
            os.setsid()
            log = os.open(run_dir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.write(ready_w, b"1")
            os.closerange(3, 1 << 16)  # nothing of SSH's channel or the controller survives
            _keep(run_dir, argv, env, cwd)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.read(ready_r, 1)  # the group exists before we report it, so `kill` can always find it
    os.close(ready_r)
    began = started_at(keeper)
    if began is not None:  # before the pid: a pid file is never read without its start time
        write_atomic(run_dir / PID_STARTED_FILE, repr(began))
    write_atomic(run_dir / PID_FILE, str(keeper))
    return {"pid": keeper, "run_dir": str(run_dir)}


def working_dir(cwd: str | list | None, run_dir: Path) -> str:
    """The folder the rank runs in, from the spec's "cwd": a list of candidates (plan.rank_cwd:
    the launch folder, its workspace mirror, the node's workdir), of which the first that is a
    folder here wins; when none is, the last is made (a workspace mirror that no synced file
    created). "~/" is this node's home, as in argv. No "cwd": the run directory (older plans)."""
    if not cwd:
        return str(run_dir)
    candidates = [cwd] if isinstance(cwd, str) else list(cwd)
    if not candidates or not all(isinstance(c, str) and c for c in candidates):
        raise ValueError(f"bad working folder in the launch spec: {cwd!r}")
    paths = [Path(os.path.expanduser(c)) for c in candidates]
    chosen = next((p for p in paths if p.is_dir()), paths[-1])
    chosen.mkdir(parents=True, exist_ok=True)
    return str(chosen)


def _keep(run_dir: Path, argv: list[str], env: dict, cwd: str) -> None:
    # The group gets SIGTERM on kill; the keeper ignores it so that it can still record how
    # the rank ended (SIGKILL stops it too, and `kill` then writes exit.json itself).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    started = time.time()
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        try:
            os.chdir(cwd)
        except OSError as e:
            print(
                f"boltring: cannot enter the rank's folder {cwd}: {e.strerror}", file=sys.stderr, flush=True
            )
            os._exit(127)
        try:
            os.execvpe(argv[0], argv, env)
        except OSError as e:
            print(f"boltring: cannot start {argv[0]}: {e}", file=sys.stderr, flush=True)
            os._exit(127)
    _, wstatus = os.waitpid(child, 0)
    record: dict[str, object] = {
        "returncode": os.waitstatus_to_exitcode(wstatus),
        "started": started,
        "ended": time.time(),
    }
    if os.WIFSIGNALED(wstatus):
        record["signal"] = signal.Signals(os.WTERMSIG(wstatus)).name
    (run_dir / SECRET_FILE).unlink(missing_ok=True)  # the job's secret outlives no rank
    write_exit(run_dir, record)


def _read_small_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text()[:RESERVE_BYTES])
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_exit(run_dir: Path, record: dict[str, object]) -> None:
    """exit.json = how the rank ended + why.json (the rank's own reason) + stop.json (who
    stopped it). Written into the bytes reserved at start, then renamed: no new blocks needed."""
    why = _read_small_json(run_dir / WHY_FILE)
    for key in ("error", "message", "peer", "peer_rank", "direction", "file"):
        if key in why:
            record[key] = why[key]
    stop = _read_small_json(run_dir / STOP_FILE)
    if stop.get("by"):
        record["stopped_by"] = stop["by"]
    text = json.dumps(record)
    if len(text) > RESERVE_BYTES:
        record["message"] = str(record.get("message", ""))[:2000]
        text = json.dumps(record)[:RESERVE_BYTES]
    reserve = run_dir / RESERVE_FILE
    try:
        fd = os.open(reserve, os.O_WRONLY)
        try:
            os.write(fd, text.encode().ljust(RESERVE_BYTES, b" "))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(reserve, run_dir / EXIT_FILE)
        return
    except OSError:
        pass  # no reserve (an older start): the ordinary way
    try:
        write_atomic(run_dir / EXIT_FILE, text)
    except OSError as e:
        print(f"boltring: cannot write {run_dir / EXIT_FILE}: {e.strerror or e}", file=sys.stderr, flush=True)


def kill(run_dir: Path, grace: float = 5.0, by: str | None = None) -> dict:
    return kill_many([run_dir], grace, by)[0]


def kill_many(run_dirs: list[Path], grace: float = 5.0, by: str | None = None) -> list[dict]:
    """Stop several ranks at once: SIGTERM to every group, one shared grace period, then SIGKILL
    to the survivors. One command for all of a node's ranks, so stopping 80 ranks takes one
    grace period, not 80."""
    pids = {d: _own_group(d)[0] for d in run_dirs}
    was_alive = {d: bool(pid and group_alive(pid)) for d, pid in pids.items()}
    forced: dict[Path, bool] = {d: False for d in run_dirs}
    live = [d for d in run_dirs if was_alive[d]]
    # Every rank learns who stopped it before any is signalled: the first rank's end breaks its
    # neighbours' ring connections, and a neighbour that fails of that before its own record
    # exists would say "lost the connection" when you stopped the job.
    for d in live if by else []:
        try:
            write_atomic(d / STOP_FILE, json.dumps({"by": by, "at": time.time()}))
        except OSError:
            pass  # a full disk: the controller still knows who it was
    states = {d: group_states(pid) or [] for d in live if (pid := pids[d]) is not None}
    for d in live:
        pid = pids[d]
        assert pid is not None
        signal_group(pid, signal.SIGTERM)
        if "T" in states[d]:  # a frozen rank cannot act on SIGTERM until it runs again
            signal_group(pid, signal.SIGCONT)

    def still() -> list[Path]:
        alive = live_groups({p for d in live if (p := pids[d]) is not None})
        return [d for d in live if pids[d] in alive]

    deadline = time.monotonic() + grace
    while still() and time.monotonic() < deadline:
        time.sleep(0.05)
    for d in still():
        forced[d] = True
        signal_group(pids[d], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while still() and time.monotonic() < deadline:
        time.sleep(0.05)
    results = []
    for d in run_dirs:
        pid = pids[d]
        if was_alive[d] and read_exit(d) is None:
            write_exit(
                d,
                {
                    "returncode": None,
                    "signal": "SIGKILL" if forced[d] else "SIGTERM",
                    "killed": True,
                    "ended": time.time(),
                },
            )
        if was_alive[d]:
            (d / SECRET_FILE).unlink(missing_ok=True)
        results.append(
            {
                "pid": pid,
                "run_dir": str(d),
                "was_alive": was_alive[d],
                "forced": forced[d],
                "alive": bool(pid and group_alive(pid)),
                "exit": read_exit(d),
            }
        )
    return results


def _start_many(dirs: list[Path]) -> int:
    """`start DIR1 DIR2 …` < {"secret": hex, "ranks": [{"argv", "env"}, … one per DIR]}: all of
    a node's ranks from one command. Prints {"started": [{"run_dir", "pid"}], "error"?}; on the
    first rank that cannot start it stops, and reports what it started so far."""
    try:
        spec = json.loads(sys.stdin.read())
        ranks = spec.get("ranks")
        if not isinstance(ranks, list) or len(ranks) != len(dirs):
            raise ValueError(f"expected {len(dirs)} rank specs")
    except ValueError as e:
        return _fail(f"bad launch spec on stdin: {e}")
    started: list[dict] = []
    for d, r in zip(dirs, ranks, strict=True):
        if (d.parent / ABORT_FILE).exists():  # the launch was interrupted: start no more
            _answer({"started": started, "error": "launch interrupted"})
            return 4
        try:
            if not isinstance(r.get("argv"), list) or not r["argv"]:
                raise ValueError("spec has no argv")
            started.append(start(d, {**r, "secret": spec.get("secret")}))
        except SystemExit:
            _answer({"started": started, "error": f"a rank is already running in {d}"})
            return 3
        except (OSError, ValueError) as e:
            msg = f"{e.strerror or e}: {e.filename or d}" if isinstance(e, OSError) else str(e)
            _answer({"started": started, "error": f"cannot start a rank in {d}: {msg}"})
            return 2
    _answer({"started": started})
    return 0


def _fail(message: str, code: int = 2) -> int:
    print(json.dumps({"error": message}))
    return code


_CLOCK_READ = (time.time(), time.monotonic())  # reset by main(); see the module docstring


def _answer(result: dict) -> None:
    """Print one answer, with when this node's clock was read (at the command's start)."""
    read, mono = _CLOCK_READ
    print(json.dumps({**result, "clock": {"time": read, "elapsed_s": time.monotonic() - mono}}), flush=True)


def main(argv: list[str] | None = None) -> int:
    global _CLOCK_READ
    _CLOCK_READ = (time.time(), time.monotonic())
    p = argparse.ArgumentParser(
        prog="python -m boltring.cluster.agent.spawn",
        description="Start, kill or inspect a detached boltring rank.",
    )
    p.add_argument("action", choices=("start", "kill", "status"))
    p.add_argument(
        "run_dir", nargs="+", help="the rank's run directory (~ is expanded); kill and status take several"
    )
    p.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL")
    p.add_argument("--by", default=None, help="kill: who stops the rank, recorded in its exit record")
    a = p.parse_args(argv)
    dirs = [Path(d).expanduser() for d in a.run_dir]
    run_dir = dirs[0]
    if a.action == "start" and len(dirs) > 1:
        return _start_many(dirs)
    if a.action != "start" and len(dirs) > 1:  # several ranks: {"ranks": [one answer each]}
        many = kill_many(dirs, a.grace, a.by) if a.action == "kill" else [status(d) for d in dirs]
        _answer({"ranks": many})
        return 0
    if a.action == "start":
        try:
            spec = json.loads(sys.stdin.read())
            if not isinstance(spec.get("argv"), list) or not spec["argv"]:
                raise ValueError("spec has no argv")
        except ValueError as e:
            return _fail(f"bad launch spec on stdin: {e}")
        try:
            result = start(run_dir, spec)
        except (OSError, ValueError) as e:  # as _start_many says it: one line, not a traceback
            msg = f"{e.strerror or e}: {e.filename or run_dir}" if isinstance(e, OSError) else str(e)
            return _fail(f"cannot start a rank in {run_dir}: {msg}")
    elif a.action == "kill":
        result = kill(run_dir, a.grace, a.by)
    else:
        result = status(run_dir)
        result["run_dir"] = str(run_dir)
    _answer(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
