"""Start, stop and inspect one detached rank on the node it runs on. Standard library only.

    PYTHON -m boltring.cluster.agent.spawn start RUN_DIR   < {"argv": [...], "env": {...}, "secret": "hex",
                                                          "files": {"MLX_HOSTFILE": "content", ...}}
    PYTHON -m boltring.cluster.agent.spawn kill RUN_DIR [--grace S]
    PYTHON -m boltring.cluster.agent.spawn status RUN_DIR

Both transports run these same commands (locally as a subprocess, remotely over SSH), so a
rank's life is managed identically everywhere, macOS (no setsid(1) there) included.

`start` double-forks: the rank runs in its own session and process group, detached from the
SSH session or the controller, with stdout/stderr in RUN_DIR/rank.log, so a dropped
connection or a quitting controller does not stop training. A small keeper process (the
session leader, whose pid is the group id in RUN_DIR/pid) waits for the rank and records its
exit status in RUN_DIR/exit.json. The secret arrives on stdin and is written 0600 to
RUN_DIR/secret: it never appears on a command line or in an environment listing.
`kill` sends SIGTERM to the whole group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

PID_FILE = "pid"
LOG_FILE = "rank.log"
EXIT_FILE = "exit.json"
SECRET_FILE = "secret"
SPEC_FILE = "spec.json"


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Readers see the old file or the new one, never a part (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def group_alive(pgid: int) -> bool:
    """Is any live (non-zombie) process left in the group?"""
    proc = Path("/proc")
    if proc.is_dir():  # Linux: zombies count as gone (an init that never reaps leaves them)
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
        return False
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


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
    pid = read_pid(run_dir)
    return {"pid": pid, "alive": bool(pid and group_alive(pid)), "exit": read_exit(run_dir)}


def start(run_dir: Path, spec: dict) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    current = status(run_dir)
    if current["alive"]:
        raise SystemExit(
            _fail(f"a rank is already running in {run_dir} (pid {current['pid']}); kill it first", code=3)
        )
    for stale in (EXIT_FILE, PID_FILE):
        (run_dir / stale).unlink(missing_ok=True)
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
    write_atomic(run_dir / SPEC_FILE, json.dumps(public, indent=1))

    ready_r, ready_w = os.pipe()
    keeper = os.fork()
    if keeper == 0:  # the keeper: new session, owns the log, waits for the rank
        try:
            os.close(ready_r)
            os.setsid()
            log = os.open(run_dir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.write(ready_w, b"1")
            os.closerange(3, 1 << 16)  # nothing of SSH's channel or the controller survives
            _keep(run_dir, argv, env, spec.get("cwd") or str(run_dir))
        finally:
            os._exit(0)
    os.close(ready_w)
    os.read(ready_r, 1)  # the group exists before we report it, so `kill` can always find it
    os.close(ready_r)
    write_atomic(run_dir / PID_FILE, str(keeper))
    return {"pid": keeper, "run_dir": str(run_dir)}


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
            os.execvpe(argv[0], argv, env)
        except OSError as e:
            print(f"boltring: cannot start {argv[0]}: {e}", file=sys.stderr, flush=True)
            os._exit(127)
    _, wstatus = os.waitpid(child, 0)
    record = {"returncode": os.waitstatus_to_exitcode(wstatus), "started": started, "ended": time.time()}
    if os.WIFSIGNALED(wstatus):
        record["signal"] = signal.Signals(os.WTERMSIG(wstatus)).name
    write_atomic(run_dir / EXIT_FILE, json.dumps(record))


def kill(run_dir: Path, grace: float = 5.0) -> dict:
    pid = read_pid(run_dir)
    if pid is None:
        return {"pid": None, "was_alive": False, "alive": False, "exit": read_exit(run_dir)}
    was_alive = group_alive(pid)
    forced = False
    if was_alive:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if group_alive(pid):
            forced = True
            _signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while group_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
    if read_exit(run_dir) is None and was_alive:
        write_atomic(
            run_dir / EXIT_FILE,
            json.dumps(
                {
                    "returncode": None,
                    "signal": "SIGKILL" if forced else "SIGTERM",
                    "killed": True,
                    "ended": time.time(),
                }
            ),
        )
    return {
        "pid": pid,
        "was_alive": was_alive,
        "forced": forced,
        "alive": group_alive(pid),
        "exit": read_exit(run_dir),
    }


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _fail(message: str, code: int = 2) -> int:
    print(json.dumps({"error": message}))
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m boltring.cluster.agent.spawn",
        description="Start, kill or inspect a detached boltring rank.",
    )
    p.add_argument("action", choices=("start", "kill", "status"))
    p.add_argument("run_dir", help="the rank's run directory (~ is expanded)")
    p.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL")
    a = p.parse_args(argv)
    run_dir = Path(a.run_dir).expanduser()
    if a.action == "start":
        try:
            spec = json.loads(sys.stdin.read())
            if not isinstance(spec.get("argv"), list) or not spec["argv"]:
                raise ValueError("spec has no argv")
        except ValueError as e:
            return _fail(f"bad launch spec on stdin: {e}")
        result = start(run_dir, spec)
    elif a.action == "kill":
        result = kill(run_dir, a.grace)
    else:
        result = status(run_dir)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
