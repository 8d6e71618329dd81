"""SshTransport: a node reached over SSH with asyncssh, one connection shared by everything.

How it connects (`SshOptions`, Node.ssh; one attempt and its failures are ssh_login.py's):
- `node.ssh` is an alias from the ssh config file or "user@host[:port]" ("[v6addr]:port" too);
  without it the node name is used as the alias.
- The ssh config file is `options.config_file` when it exists, otherwise none at all (asyncssh is
  never left to pick up a default file on its own). HostName, User, Port, IdentityFile and
  IdentitiesOnly come from it.
- Host keys are ALWAYS checked against `options.known_hosts` (None means ~/.ssh/known_hosts). A
  missing file trusts nothing, so every host is "host key unknown". The file is read again at
  each connection attempt, so fixing it (`ssh NODE` once, `ssh-keygen -R`) needs no restart.
- Public-key authentication only: keys named by IdentityFile and `options.identity_files`
  (encrypted ones are skipped: nothing ever prompts), and the ssh-agent's keys. No password or
  keyboard-interactive prompts, no agent forwarding.
- `connect_timeout` bounds the whole connection including authentication; keepalives
  (`keepalive_interval_s` x `keepalive_count_max`) notice a silently dead link.

States (`NodeState` events, cluster.states.SshState): connecting -> connected; or auth failed,
host key unknown, host key changed, unreachable, each with "cause; what to do" in `detail`. The
same failure is raised as its class from cluster/nodes/errors.py (`AuthFailed`, `HostKeyUnknown`,
`HostKeyChanged`, `Unreachable`, `ConnectionLost`, …), carrying the state and the hint; hints
name OpenSSH commands that run as written (`ssh -p 2299 you@127.0.0.1`, with -F/-o when the
config uses files other than OpenSSH's own).
When an established connection drops: lost -> reconnecting (attempts after 0.5, 1, 2, 4, 8, 8... s)
-> connected, until `close()` -> closed. A reconnect attempt that hits a key or authentication
problem stops retrying and shows that state.
After such a failure (auth failed, host key unknown or changed: only a person can fix them) no
call logs in again until known_hosts, the ssh config or a key file changes (or a folder holding
them: a new key, a first known_hosts), or PERSON_RETRY_S pass: each call raises the same failure
at once. Logging in again at every call (the controller polls each rank 4 times a second) made
failing logins by the second, which OpenSSH's PerSourcePenalties (9.8+) answers by refusing the
laptop's address, `ssh NODE` included: the very command the hint asks the person to run.

Calls (`run`, `read_from`, `write_file`, `home`) connect on first use. While a reconnect is under
way they wait for it, for at most `connect_timeout_s`, instead of failing at once. A `run` whose
channel could not even be opened because the connection had just died is retried once on the
new connection; one interrupted after it started is not (it may have run) and raises.
A `run` or `run_lines` that is cancelled (Ctrl-C, SIGTERM) or times out stops its command on
the node, with everything the command started, before it returns (remote_stop.py); so does a
connection that closes under it. A write that SFTP fails with a bare "Failure" names a full or
read-only disk when that is why (write_failure.py).
SFTP calls (`read_from`, `write_file`, `home`, starting the SFTP session) are bounded like
commands: `timeout` (SFTP_TIMEOUT_S) without an answer raises CommandTimeout naming the node and
the file, and that SFTP session is dropped (the next call starts a new one). `upload` is bounded
by the time without progress, not in total. Keepalives cannot do this: a stuck SFTP server
(a hung disk) leaves the connection itself answering.

Paths: `run()` quotes every argv word with `shlex.join`, so the remote shell expands nothing;
words that are "~" or start with "~/" are resolved first against the node user's home
(`expand_argv` / `resolve`; the home comes from SFTP `realpath(".")`, cached), any other word is
passed verbatim. `read_from` and `write_file` resolve a leading "~/" too (SFTP knows no "~").

(Over 400 lines: connecting, reconnecting with backoff, commands and SFTP share one
connection and its retry-on-a-new-connection rule; the login attempt and what its failures
mean already live in ssh_login.py.)
"""

from __future__ import annotations

import asyncio
import functools
import os
import posixpath
import secrets
import shlex
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh

from boltring.cluster.config.schema import Node, SshOptions
from boltring.cluster.config.ssh_target import parse_ssh_target as parse_target
from boltring.cluster.nodes import remote_stop, write_failure
from boltring.cluster.nodes.errors import (
    NEEDS_A_PERSON,
    CommandTimeout,
    ConnectionLost,
    TransportClosed,
    TransportError,
)
from boltring.cluster.nodes.ssh_login import SshLogin
from boltring.cluster.nodes.transport import UPLOAD_CHUNK, CommandResult, Transport
from boltring.cluster.states import SshState

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 8.0
PERSON_RETRY_S = 30.0  # a failure only a person can fix is tried again after this, at the latest
SFTP_TIMEOUT_S = 30.0  # as run()'s default
CANCEL_GRACE_S = 2.0  # for a stopped SFTP call's own cleanup (closing the file, removing a temp file)


class _Client(asyncssh.SSHClient):
    def __init__(self, transport: SshTransport):
        self._transport = transport
        self._conn: asyncssh.SSHClientConnection | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._transport._connection_lost(self._conn, exc)


class SshTransport(Transport):
    def __init__(self, node: Node, on_state=None, options: SshOptions | None = None):
        super().__init__(node, on_state)
        self.options = options or SshOptions()
        self.target = node.ssh or node.name
        self._user, self._host, self._port = parse_target(self.target)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()  # one connection attempt at a time
        self._sftp: asyncssh.SFTPClient | None = None
        self._sftp_conn: asyncssh.SSHClientConnection | None = None
        self._sftp_lock = asyncio.Lock()
        self._reconnector: asyncio.Task | None = None
        self._closing = False
        self._failure: TransportError | None = None  # why the last attempt failed
        # a failure only a person can fix: (it, when, the login files as they were before it)
        self._held: tuple[TransportError, float, tuple] | None = None
        self._home: str | None = None
        self._login = SshLogin(node, self.options, self._user, self._host, self._port, lambda: _Client(self))

    # -- connection ----------------------------------------------------------------------------

    async def connect(self) -> None:
        self._closing = False
        if self._conn is not None:
            return
        if self._reconnector is not None and not self._reconnector.done():
            await self._wait_reconnect()
            return
        async with self._lock:
            if self._conn is not None:
                return
            held = self._held_failure()
            if held is not None:
                raise held  # no login, no state change: the node already shows this failure
            self._set_state(SshState.CONNECTING, self.target)
            try:
                await self._open()
            except TransportError as f:
                self._failure = f
                self._set_state(f.state or SshState.UNREACHABLE, _detail(f))
                raise
        self._set_state(SshState.CONNECTED, self._login.where)

    async def close(self) -> None:
        self._closing = True
        task, self._reconnector = self._reconnector, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        conn, self._conn = self._conn, None
        self._ready.clear()
        if self._sftp is not None:
            self._sftp.exit()
            self._sftp = self._sftp_conn = None
        if conn is not None:
            conn.close()
            try:
                await asyncio.wait_for(conn.wait_closed(), 5)
            except (TimeoutError, OSError, asyncssh.Error):
                pass
        self._set_state(SshState.CLOSED)

    async def _open(self) -> None:
        """One connection attempt; sets self._conn or raises a TransportError subclass. A failure
        only a person can fix is held (see _held_failure)."""
        # stamped before the attempt: a fix made while it runs must not look older than it
        files, at = self._login_files(), time.monotonic()
        try:
            conn = await self._login.open()
        except NEEDS_A_PERSON as f:
            self._held = (f, at, files)
            raise
        if self._closing:
            conn.close()
            raise self._fail(TransportClosed, "closed while connecting", None)
        self._conn = conn
        self._failure = self._held = None
        self._ready.set()

    def _held_failure(self) -> TransportError | None:
        """A copy of the last failure only a person can fix, while nothing says they fixed it:
        no login file changed and PERSON_RETRY_S have not passed. None: time to try again."""
        if self._held is None:
            return None
        f, at, files = self._held
        if time.monotonic() - at >= PERSON_RETRY_S or self._login_files() != files:
            self._held = None
            return None
        return type(f)(f.message, hint=f.hint)

    def _login_files(self) -> tuple:
        """What a person changes to fix a refused key or an unknown or changed host key, as
        (path, (mtime, size, inode) or None): known_hosts, the ssh config, identity_files, and
        the folders holding them (`ssh NODE` may create known_hosts, `ssh-keygen` a new key)."""
        files = {self._login.known_hosts_path(), *map(Path, self._login.config_paths())}
        files |= {Path(p).expanduser() for p in self.options.identity_files}
        return tuple((str(p), _stamp(p)) for p in sorted(files | {p.parent for p in files}))

    def _fail(self, cls: type[TransportError], cause: str, hint: str | None) -> TransportError:
        return self._login.fail(cls, cause, hint)

    def ssh_command(self, program: str = "ssh") -> str:
        """A command line that reaches this node as we do, to paste into a shell: `ssh -p 2299
        you@127.0.0.1` (OpenSSH takes the port as -p, never as host:port). `ssh-copy-id` takes
        the same options."""
        return self._login.command(program)

    def _connection_lost(self, conn: asyncssh.SSHClientConnection, exc: Exception | None) -> None:
        if conn is not self._conn:
            return  # an old connection, or one we closed ourselves
        self._conn = None
        self._ready.clear()
        if self._closing:
            return
        why = f"connection dropped: {_reason(exc)}" if exc else "the node closed the connection"
        self._set_state(SshState.LOST, why)
        self._reconnector = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        """After "lost": "reconnecting" (and again after each failed attempt, saying why and when
        the next one is), until "connected", a key/auth problem, or close()."""
        delay, attempt = BACKOFF_FIRST_S, 0
        self._set_state(SshState.RECONNECTING, f"next attempt in {delay:g} s")
        while not self._closing:
            await asyncio.sleep(delay)
            attempt += 1
            try:
                async with self._lock:
                    if self._conn is None:
                        await self._open()
            except TransportError as f:
                self._failure = f
                if isinstance(f, NEEDS_A_PERSON):
                    self._set_state(f.state or SshState.UNREACHABLE, _detail(f))
                    return
                delay = min(delay * 2, BACKOFF_MAX_S)
                if not self._closing:
                    self._set_state(
                        SshState.RECONNECTING, f"attempt {attempt}: {f.cause}; next in {delay:g} s"
                    )
                continue
            if not self._closing:
                self._set_state(SshState.CONNECTED, self._login.where)
            return

    async def _wait_reconnect(self) -> None:
        task = self._reconnector
        if task is None or task.done():
            return
        timeout = self.options.connect_timeout_s
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait({ready, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self._conn is not None:
            return
        if self._closing:
            raise self._fail(TransportClosed, "SSH transport is closed", None)
        if task.done() and self._failure is not None:
            f = self._failure
            raise type(f)(f.message, hint=f.hint)
        last = f" (last: {self._failure.cause})" if self._failure else ""
        raise self._fail(
            ConnectionLost,
            f"SSH connection lost and not back within {timeout:g} s{last}; still retrying",
            f"check that the node is on and reachable: {self.ssh_command()}",
        )

    async def _connection(self) -> asyncssh.SSHClientConnection:
        if self._closing:
            raise self._fail(TransportClosed, "SSH transport is closed", None)
        if self._conn is None:
            if self._reconnector is not None and not self._reconnector.done():
                await self._wait_reconnect()
            else:
                await self.connect()
        assert self._conn is not None
        return self._conn

    def _dropped(self, conn: asyncssh.SSHClientConnection) -> bool:
        return conn is not self._conn or conn.is_closed()

    # -- operations ----------------------------------------------------------------------------

    async def run(
        self, argv: list[str], *, input: bytes | None = None, timeout: float = 30.0
    ) -> CommandResult:
        """Run argv on the node, every word quoted; "~/…" words are resolved first (see resolve).
        Cancelled or timed out, the command is stopped on the node before this raises."""
        return await self._execute(argv, input, None, timeout)

    async def run_lines(
        self, argv: list[str], on_line: Callable[[str], None], *, timeout: float = 30.0
    ) -> CommandResult:
        """run(), reporting each output line (stdout and stderr) as it arrives."""
        return await self._execute(argv, None, on_line, timeout)

    async def _execute(
        self,
        argv: list[str],
        input: bytes | None,
        on_line: Callable[[str], None] | None,
        timeout: float,
    ) -> CommandResult:
        """argv under the stopper (remote_stop.py): a cancelled or timed-out call stops the
        command and all it started on the node, within a few seconds, before it raises."""
        argv = await self.expand_argv(argv)
        cmd = remote_stop.stoppable(argv, len(input or b""))
        short = shlex.join(argv[:4]) + (" …" if len(argv) > 4 else "")
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                # bounded: a channel never opens on a connection that died silently (until
                # keepalive notices)
                proc = await asyncio.wait_for(
                    conn.create_process(cmd, encoding=None), self.options.connect_timeout_s
                )
            except TimeoutError:
                raise self._fail(
                    ConnectionLost,
                    f"cannot start {short}: no answer within {self.options.connect_timeout_s:g} s",
                    None,
                ) from None
            except asyncssh.ChannelOpenError as e:
                if attempt == 1 and self._dropped(conn):
                    await self._await_drop(conn)
                    continue  # the command never started: safe to run on the new connection
                raise TransportError(f"{self.node.name}: cannot start {argv[0]}: {e.reason}") from None
            except (asyncssh.Error, OSError) as e:
                raise self._fail(ConnectionLost, f"cannot start {short} ({_reason(e)})", None) from None
            try:
                rc, out, err = await remote_stop.finish(proc, input, on_line, timeout)
            except TimeoutError:
                raise self._fail(CommandTimeout, f"{short} took over {timeout:g} s", None) from None
            except (asyncssh.Error, OSError) as e:
                raise self._fail(
                    ConnectionLost,
                    f"SSH connection lost while running {short} ({_reason(e)}); "
                    f"it may or may not have finished",
                    None,
                ) from None
            return CommandResult(rc if rc is not None else 255, _text(out), _text(err))
        raise AssertionError("unreachable")

    async def _await_drop(self, conn: asyncssh.SSHClientConnection) -> None:
        """Let connection_lost run for a connection that just died, so a reconnect starts."""
        for _ in range(100):
            if conn is not self._conn:
                return
            await asyncio.sleep(0.01)
        if conn is self._conn:  # closed, but never reported: drop it ourselves
            self._connection_lost(conn, None)

    async def _sftp_for(self, conn: asyncssh.SSHClientConnection) -> asyncssh.SFTPClient:
        """The SFTP client of this connection (one per connection, started on first use)."""
        async with self._sftp_lock:
            if self._sftp is None or self._sftp_conn is not conn:
                self._sftp = await conn.start_sftp_client()
                self._sftp_conn = conn
            return self._sftp

    async def _with_sftp(self, what: str, op, timeout: float = SFTP_TIMEOUT_S):
        """op(sftp, alive), repeated once on the new connection when the connection died under
        it (reads and whole-file writes are safe to repeat). SFTP status errors pass through.
        Bounded: `timeout` s without an answer (op calls alive() when it makes progress) raise
        CommandTimeout, and this SFTP session is dropped for the next call to start a new one."""
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                return await _within(timeout, functools.partial(self._sftp_op, conn, op))
            except TimeoutError:
                self._drop_sftp(conn)
                raise self._fail(
                    CommandTimeout, f"{what}: no answer from SFTP within {timeout:g} s", None
                ) from None
            except asyncssh.SFTPError:
                raise
            except (asyncssh.Error, OSError) as e:
                if attempt == 1 and self._dropped(conn):
                    await self._await_drop(conn)
                    continue
                raise self._fail(ConnectionLost, f"{what}: {_reason(e)}", None) from None
        raise AssertionError("unreachable")

    async def _sftp_op(self, conn: asyncssh.SSHClientConnection, op, alive: Callable[[], None]):
        """op on this connection's SFTP session, started on first use (within the bound too)."""
        return await op(await self._sftp_for(conn), alive)

    def _drop_sftp(self, conn: asyncssh.SSHClientConnection) -> None:
        """Forget a stuck SFTP session (its requests may never be answered), closing it."""
        if self._sftp is not None and self._sftp_conn is conn:
            self._sftp.exit()
            self._sftp = self._sftp_conn = None

    async def home(self) -> str:
        """The node user's home directory (cached): from SFTP, or from `$HOME` when SFTP fails
        on a working connection (no SFTP subsystem). A failure to connect is raised as it is:
        trying again through run() only meant a second failing login."""
        if self._home is None:
            try:
                self._home = await self._with_sftp("home directory", lambda s, _: s.realpath("."))
            except (asyncssh.SFTPError, TransportError):
                if self._conn is None:
                    raise
                res = await self.run(
                    ["sh", "-c", 'printf %s "$HOME"'], timeout=self.options.connect_timeout_s
                )
                if not res.ok or not res.stdout.startswith("/"):
                    raise TransportError(f"{self.node.name}: cannot find the home directory") from None
                self._home = res.stdout
        return self._home

    async def resolve(self, path: str) -> str:
        """A leading "~" or "~/" replaced by the node user's home; other paths unchanged."""
        if path == "~" or path.startswith("~/"):
            home = await self.home()
            return home if path == "~" else posixpath.join(home, path[2:])
        return path

    async def read_from(
        self, path: str, offset: int, limit: int = 1 << 20, *, timeout: float = SFTP_TIMEOUT_S
    ) -> bytes:
        path = await self.resolve(path)

        async def op(sftp: asyncssh.SFTPClient, _alive) -> bytes:
            async with sftp.open(path, "rb") as f:
                return await f.read(limit, offset)

        try:
            return await self._with_sftp(f"cannot read {path}", op, timeout)
        except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
            return b""
        except asyncssh.SFTPEOFError:
            return b""
        except asyncssh.SFTPError as e:
            raise TransportError(f"{self.node.name}: cannot read {path}: {e.reason}") from None

    async def write_file(
        self, path: str, data: bytes, mode: int = 0o600, *, timeout: float = SFTP_TIMEOUT_S
    ) -> None:
        """Write to a new temp file created with `mode` (set exactly, before any data), then
        rename it over `path`: readers never see a partial file, and an existing file's looser
        permissions are never inherited."""

        async def fill(f: asyncssh.SFTPClientFile, _alive) -> None:
            await f.write(data)

        await self._write_atomic(path, mode, fill, len(data), timeout)

    async def upload(
        self,
        local_path: str | Path,
        remote_path: str,
        mode: int = 0o644,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Stream a local file over SFTP into a temp file created with `mode` beside the target,
        then rename it into place (as write_file does). Any failure or cancellation removes the
        temp file, so the final name only ever holds a complete copy."""

        async def fill(f: asyncssh.SFTPClientFile, alive: Callable[[], None]) -> None:
            sent = 0
            with open(local_path, "rb") as src:
                while chunk := src.read(UPLOAD_CHUNK):
                    await f.write(chunk, sent)
                    alive()  # a big file may take long: only a stall is bounded
                    sent += len(chunk)
                    if progress is not None:
                        progress(sent)

        await self._write_atomic(remote_path, mode, fill, Path(local_path).stat().st_size)

    async def _write_atomic(
        self,
        path: str,
        mode: int,
        fill: Callable[[asyncssh.SFTPClientFile, Callable[[], None]], Awaitable[None]],
        size: int | None = None,
        timeout: float = SFTP_TIMEOUT_S,
    ) -> None:
        """`fill` writes into a temp file beside `path`, created with `mode` (made exact: the
        umask may have narrowed it), which is then renamed over `path`. Any failure or
        cancellation removes the temp file, so `path` only ever holds a complete file. A failure
        SFTP does not explain ("Failure") is explained by the node's file system when it is full
        or read-only (write_failure.py)."""
        path = await self.resolve(path)
        parent, name = posixpath.split(path)

        async def op(sftp: asyncssh.SFTPClient, alive: Callable[[], None]) -> None:
            if parent:
                await sftp.makedirs(parent, exist_ok=True)
            tmp = posixpath.join(parent, f".{name}.boltring-{secrets.token_hex(4)}")
            try:
                async with sftp.open(tmp, "xb", asyncssh.SFTPAttrs(permissions=mode)) as f:
                    await f.chmod(mode)
                    await fill(f, alive)
                try:
                    await sftp.posix_rename(tmp, path)
                except asyncssh.SFTPOpUnsupported:
                    await sftp.remove(path) if await sftp.exists(path) else None
                    await sftp.rename(tmp, path)
            except BaseException:
                try:
                    await asyncio.shield(sftp.remove(tmp))
                except (asyncssh.Error, OSError, asyncio.CancelledError):
                    pass
                raise

        try:
            await self._with_sftp(f"cannot write {path}", op, timeout)
        except asyncssh.SFTPError as e:
            why = await self._why_write_failed(parent or ".", size)
            cause, hint = why or (e.reason, None)
            raise TransportError(f"{self.node.name}: cannot write {path}: {cause}", hint=hint) from None

    async def _why_write_failed(self, folder: str, size: int | None) -> tuple[str, str] | None:
        """(cause, hint) when the file system holding `folder` (or its nearest existing parent)
        is full or read-only; None when it is not, or the node cannot tell."""
        here = folder
        try:
            while True:
                try:
                    vfs = await self._with_sftp("statvfs", lambda s, _, at=here: s.statvfs(at))
                    break
                except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath, asyncssh.SFTPNotADirectory):
                    if here in ("/", "", "."):
                        return None
                    here = posixpath.dirname(here.rstrip("/")) or "/"
        except (asyncssh.SFTPError, TransportError):
            return None  # no statvfs@openssh.com (an SFTP server other than OpenSSH's)
        fs = write_failure.FsInfo(
            free=vfs.bavail * (vfs.frsize or vfs.bsize),
            free_inodes=vfs.favail if vfs.files else None,
            read_only=bool(vfs.flags & write_failure.ST_RDONLY),
        )
        mount = None  # named by df, when the node has it
        try:
            res = await self.run(["df", "-P", here], timeout=self.options.connect_timeout_s)
            mount = write_failure.mount_point(res.stdout) if res.ok else None
        except TransportError:
            pass
        return write_failure.explain(self.node.name, fs, mount or here, size)

    def command_line(self, argv: list[str]) -> str:
        """`ssh [-F CONFIG] [-o UserKnownHostsFile=F] [-p PORT] NODE -- 'quoted command'`, to paste
        into a shell: it runs the same command as run() (a "~/" word is expanded by the remote
        shell instead of by resolve(); without run()'s stopper, which only matters to a caller
        that stops waiting)."""
        # "~/…" words keep an unquoted "~/" so the remote shell expands them as run() resolves them
        remote = " ".join(_remote_word(w) for w in argv)
        return shlex.join(["ssh", *self._login.options_argv(), self._login.cli_target(), "--", remote])


def _remote_word(word: str) -> str:
    if word == "~" or word.startswith("~/"):
        return word[:2] + (shlex.quote(word[2:]) if word[2:] else "")
    return shlex.quote(word)


def _detail(e: TransportError) -> str:
    """A node panel's one line for a failure: the cause, then what to do."""
    return f"{e.cause}; {e.hint}" if e.hint else e.cause


async def _within(timeout: float, run: Callable[[Callable[[], None]], Awaitable]):
    """run(alive) in a task, ended with TimeoutError after `timeout` s without a call to alive().
    A stopped (timed-out or cancelled) run is cancelled, given CANCEL_GRACE_S for its own
    cleanup, then cancelled again until it ends: its cleanup talks to the same SFTP server
    that stopped answering, and must not hang the caller in turn."""
    loop = asyncio.get_running_loop()
    last = [loop.time()]
    task = asyncio.ensure_future(run(lambda: last.__setitem__(0, loop.time())))
    try:
        while (left := last[0] + timeout - loop.time()) > 0:
            done, _ = await asyncio.wait({task}, timeout=left)
            if done:
                return task.result()
    finally:
        if not task.done():
            await _stop(task)
    raise TimeoutError


async def _stop(task: asyncio.Future) -> None:
    task.cancel()
    await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
    for _ in range(50):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    # retrieved, so that asyncio reports nothing; a task still stuck ends with its connection
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)


def _reason(e: BaseException) -> str:
    return getattr(e, "reason", None) or str(e) or type(e).__name__
