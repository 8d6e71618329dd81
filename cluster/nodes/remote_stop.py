"""Remote commands that stop when the laptop stops waiting for them (SshTransport.run, run_lines).

Without this, a command whose channel the laptop closes (a cancelled call: Ctrl-C or SIGTERM
during `boltring setup`; a timeout) keeps running on the node, reparented to init: a `pip
install` finished 15 s later, or died half way when it next wrote to the closed channel. A
"signal" request over the channel needs a recent sshd and reaches only the first process. So
every command runs under STOPPER, a few lines of POSIX sh (macOS has no setsid(1), and before
setup a node may have no usable python):

- sshd starts each command in its own session and process group (OpenSSH calls setsid());
- the command runs in the wrapper's foreground, so its signal dispositions are as they would be
  without the wrapper; its stdin is /dev/null, or exactly the N bytes of input the caller gave,
  then EOF. Those bytes are read in full into a temp file before the command starts (see
  STOPPER), so the watcher never waits behind a command that leaves its input unread;
- a watcher in the background then waits for the end of the channel's stdin. The laptop writes
  nothing there after the input, so EOF means a stop: the laptop closed its side (`stop()`), or
  the channel or connection is gone. If the wrapper is still running then (the command has not
  ended), the watcher sends SIGTERM to the whole process group, waits up to 3 s for the command
  to end, then SIGKILLs whatever is left of the group, itself included;
- a command that ended by itself is never signalled, nor is anything that left the group (spawn's
  ranks run in their own session). If the group turns out not to be this command's own (an SSH
  server that did not call setsid), only the wrapper's children are signalled, with pkill -P.

The call returns once the channel has closed (every process holding its output is gone), or
after STOP_WAIT_S at most.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable

import asyncssh

STOP_WAIT_S = 6.0  # the remote side needs up to 3 s (TERM, then KILL); the rest is the network
READ_CHUNK = 1 << 16

# $1: bytes of input for the command; the rest: its argv. fd 3 keeps the channel's stdin for the
# watcher. `$$` is the wrapper in every subshell; the wrapper traps TERM (a no-op) so that it
# outlives the group's TERM for as long as its command runs, which is what the watcher polls.
#
# Input is spooled: all N bytes are read into a temp file, and only then do the watcher and the
# command start, reading it from there. Piping it (`head -c N | cmd`) blocked head, and the
# watcher behind it, as soon as the pipe (64 KB) was full and the command was not reading: a
# cancel then stopped nothing. The other way out, the wrapper printing its process group for
# stop() to kill over a second channel, needs a working connection to stop anything, and a
# dropped one is exactly when a command must stop by itself; this way the watcher covers both.
# Cost: the input (spawn's secret) touches the node's disk, so the file is created 0600 and
# unlinked before any byte is written: it has no name while it holds the input, and is freed when
# the command's stdin closes (fd 4 writes it, fd 6 counts it, fd 5 becomes the command's stdin,
# each from offset 0). A short input (the laptop stopped while sending) runs nothing.
STOPPER = """n=$1; shift
exec 3<&0 0</dev/null
watch() {
  trap '' TERM
  while read -r _ <&3; do :; done
  kill -0 $$ 2>/dev/null || exit 0
  pg=$(ps -o pgid= -p $$ 2>/dev/null | tr -d ' ')
  if [ "$pg" = $$ ] || [ "$pg" = "$PPID" ]; then kill -TERM 0; else pkill -TERM -P $$; fi
  i=0
  while [ $i -lt 30 ] && kill -0 $$ 2>/dev/null; do sleep 0.1; i=$((i+1)); done
  if [ "$pg" = $$ ] || [ "$pg" = "$PPID" ]; then kill -KILL 0; else pkill -KILL -P $$; fi
}
trap : TERM
if [ "$n" -gt 0 ]; then
  f=$(umask 077; mktemp) || exit 125
  exec 4>"$f" 5<"$f" 6<"$f"
  rm -f "$f"
  head -c "$n" <&3 >&4
  if [ "$(wc -c <&6 | tr -d ' ')" != "$n" ]; then
    echo "boltring: the command's input did not all arrive; not started" >&2
    exit 125
  fi
  exec 4>&- 6<&- 0<&5 5<&-
fi
watch </dev/null >/dev/null 2>&1 &
"$@" 3<&-"""


def stoppable(argv: list[str], input_len: int = 0) -> str:
    """The remote command line for argv (every word quoted) under the stopper."""
    return shlex.join(["sh", "-c", STOPPER, "sh", str(input_len), *argv])


async def finish(
    proc: asyncssh.SSHClientProcess,
    input: bytes | None,
    on_line: Callable[[str], None] | None,
    timeout: float,
) -> tuple[int | None, bytes, bytes]:
    """Feed `input`, collect stdout and stderr (each line to `on_line` as it arrives, when
    given) until the channel closes: (returncode, stdout, stderr). On a timeout (TimeoutError)
    or a cancellation, the command is stopped on the node (`stop`) before this raises;
    asyncssh.Error or OSError when the connection drops."""
    if input:
        proc.stdin.write(input)  # no EOF after it: EOF on the channel's stdin means "stop"
    out: list[bytes] = []
    err: list[bytes] = []
    stopping = [False]

    async def pump(stream: asyncssh.SSHReader, parts: list[bytes]) -> None:
        while True:
            data = await (stream.readline() if on_line else stream.read(READ_CHUNK))
            if not data:
                return
            parts.append(data)
            if on_line is not None and not stopping[0]:
                on_line(data.decode(errors="replace").rstrip("\r\n"))

    async def collect() -> None:
        results = await asyncio.gather(pump(proc.stdout, out), pump(proc.stderr, err), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        await proc.wait_closed()

    reading = asyncio.ensure_future(collect())
    try:
        await asyncio.wait_for(asyncio.shield(reading), timeout)
    except (TimeoutError, asyncio.CancelledError):
        stopping[0] = True  # the caller is gone: its on_line hears nothing more
        await stop(proc, reading)
        raise
    except BaseException:
        proc.close()
        await _settle(reading)
        raise
    return proc.returncode, b"".join(out), b"".join(err)


async def stop(proc: asyncssh.SSHClientProcess, reading: asyncio.Future) -> None:
    """Ask the node to stop the command (EOF on its stdin), keep draining its output so that sshd
    can close the channel, and wait for that, STOP_WAIT_S at most; then close the channel. Only
    a second cancellation cuts the wait short (the channel is closed at once, which the node
    also takes as a stop)."""
    try:
        proc.stdin.write_eof()
        await asyncio.wait_for(asyncio.shield(reading), STOP_WAIT_S)
    except (TimeoutError, asyncssh.Error, OSError):
        pass
    finally:
        proc.close()
        await _settle(reading)


async def _settle(task: asyncio.Future) -> None:
    """Cancel `task` and retrieve its outcome (no "exception was never retrieved")."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
