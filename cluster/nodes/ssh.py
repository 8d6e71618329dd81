"""SshTransport: a node reached over SSH with asyncssh, one connection shared by everything.

How it connects (`SshOptions`, Node.ssh):
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
host key unknown, host key changed, unreachable, each with a one-line hint in `detail`.
When an established connection drops: lost -> reconnecting (attempts after 0.5, 1, 2, 4, 8, 8... s)
-> connected, until `close()` -> closed. A reconnect attempt that hits a key or authentication
problem stops retrying (only a person can fix it; hammering a node with failing logins can get
the address blocked) and shows that state; the next call tries again.

Calls (`run`, `read_from`, `write_file`, `home`) connect on first use. While a reconnect is under
way they wait for it, for at most `connect_timeout_s`, instead of failing at once. A `run` whose
channel could not even be opened because the connection had just died is retried once on the
new connection; one interrupted after it started is not (it may have run) and raises.

Paths: `run()` quotes every argv word with `shlex.join`, so the remote shell expands nothing;
words that are "~" or start with "~/" are resolved first against the node user's home
(`expand_argv` / `resolve`; the home comes from SFTP `realpath(".")`, cached), any other word is
passed verbatim. `read_from` and `write_file` resolve a leading "~/" too (SFTP knows no "~").
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import secrets
import shlex
from collections.abc import Callable
from pathlib import Path

import asyncssh

from boltring.cluster.config.schema import Node, SshOptions
from boltring.cluster.nodes.transport import UPLOAD_CHUNK, CommandResult, Transport, TransportError

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 8.0
REMOTE_LOGIN_HINT = "enable Remote Login on it (System Settings → General → Sharing)"
# States after which retrying on our own is pointless (a person has to act).
_PERMANENT = ("auth failed", "host key unknown", "host key changed")


class _Failure(Exception):
    """A connection attempt failed: the SSH state to show and a one-line what + what to do."""

    def __init__(self, state: str, detail: str):
        super().__init__(detail)
        self.state = state
        self.detail = detail


def parse_target(ssh: str) -> tuple[str | None, str, int | None]:
    """ "user@host:port" -> (user, host, port); "alias" -> (None, "alias", None)."""
    user, sep, rest = ssh.rpartition("@")
    if not sep:
        user, rest = "", ssh
    port: str | None = None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail:
            if not tail.startswith(":"):
                raise ValueError(f"bad ssh target {ssh!r}")
            port = tail[1:]
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    else:
        host = rest
    if not host or any(c.isspace() for c in ssh):
        raise ValueError(f"bad ssh target {ssh!r}")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port in ssh target {ssh!r}")
    return user or None, host, int(port) if port is not None else None


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
        self._failure: _Failure | None = None  # why the last attempt failed
        self._home: str | None = None
        self._where = self.target  # "user@address:port" once known, for messages

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
            self._set_state("connecting", self.target)
            try:
                await self._open()
            except _Failure as f:
                self._failure = f
                self._set_state(f.state, f.detail)
                raise TransportError(f"{self.node.name}: {f.detail}") from None
        self._set_state("connected", self._where)

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
        self._set_state("closed")

    def _config_paths(self) -> list[str]:
        path = self.options.config_file
        if path and Path(path).expanduser().is_file():
            return [str(Path(path).expanduser())]
        return []

    def _known_hosts_path(self) -> Path:
        return Path(self.options.known_hosts or "~/.ssh/known_hosts").expanduser()

    def _load_known_hosts(self) -> asyncssh.SSHKnownHosts:
        path = self._known_hosts_path()
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""  # trust nothing (never None: that would disable checking)
        except OSError as e:
            raise _Failure("host key unknown", f"cannot read {path}: {e.strerror}") from None
        try:
            return asyncssh.import_known_hosts(text)
        except ValueError as e:
            raise _Failure(
                "host key unknown",
                f"{path} is not a valid known_hosts file ({e}); fix or remove the bad line",
            ) from None

    async def _options(self, known: asyncssh.SSHKnownHosts) -> asyncssh.SSHClientConnectionOptions:
        o = self.options
        kw: dict = dict(
            config=self._config_paths(),
            host=self._host,
            known_hosts=known,
            connect_timeout=o.connect_timeout_s,
            keepalive_interval=o.keepalive_interval_s,
            keepalive_count_max=o.keepalive_count_max,
            agent_forwarding=False,
            password_auth=False,
            kbdint_auth=False,
            ignore_encrypted=True,
            client_factory=lambda: _Client(self),
        )
        if self._port is not None:
            kw["port"] = self._port
        if self._user is not None:
            kw["username"] = self._user
        try:
            opts = await asyncssh.SSHClientConnectionOptions.construct(**kw)
            if o.identity_files:
                # explicit client_keys replace IdentityFile from the config: keep both
                keys = [
                    str(Path(p).expanduser())
                    for p in [*(opts.config.get("IdentityFile", ()) or ()), *o.identity_files]
                ]
                keys = [k for k in dict.fromkeys(keys) if os.path.isfile(k)]
                if keys:
                    opts = await asyncssh.SSHClientConnectionOptions.construct(
                        opts, client_keys=keys, ignore_encrypted=True
                    )
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as e:
            raise _Failure(
                "auth failed", f"cannot load an SSH key: {e}; check IdentityFile and identity_files"
            ) from None
        except (OSError, ValueError, asyncssh.ConfigParseError) as e:
            raise _Failure("unreachable", f"cannot use ssh config {self.options.config_file}: {e}") from None
        return opts

    async def _open(self) -> None:
        """One connection attempt; sets self._conn or raises _Failure."""
        known = await asyncio.to_thread(self._load_known_hosts)
        opts = await self._options(known)
        host, port, user = opts.host, opts.port or 22, opts.username
        self._where = f"{user}@{host}" + (f":{port}" if port != 22 else "")
        timeout = self.options.connect_timeout_s
        try:
            conn = await asyncssh.connect(self._host, self._port or (), options=opts)
        except asyncssh.PermissionDenied:
            raise _Failure(
                "auth failed",
                f"{self._where} did not accept our SSH key; add your public "
                f"key to ~/.ssh/authorized_keys on the node "
                f"(ssh-copy-id {self._cli_target()})",
            ) from None
        except asyncssh.HostKeyNotVerifiable:
            kh = self._known_hosts_path()
            if await self._has_other_key(known, opts.host_key_alias or host, port):
                raise _Failure(
                    "host key changed",
                    f"the host key of {host} changed: it is not the one in {kh}; "
                    f"if the node was reinstalled, run `ssh-keygen -R {host}"
                    f"{' -f ' + str(kh) if self.options.known_hosts else ''}` and "
                    f"`ssh {self._cli_target()}` once; otherwise do not connect",
                ) from None
            raise _Failure(
                "host key unknown",
                f"the host key of {host} is not in {kh}: run `ssh {self._cli_target()}` once and accept it",
            ) from None
        except ConnectionRefusedError:
            raise _Failure(
                "unreachable", f"{host}:{port} refused the connection: {REMOTE_LOGIN_HINT}"
            ) from None
        except TimeoutError:
            raise _Failure(
                "unreachable",
                f"no SSH answer from {host}:{port} within {timeout:g} s: is the node on and on this network?",
            ) from None
        except OSError as e:
            what = e.strerror or str(e) or type(e).__name__
            raise _Failure(
                "unreachable", f"cannot reach {host}:{port}: {what}: is the node on and on this network?"
            ) from None
        except asyncssh.Error as e:
            raise _Failure("unreachable", f"SSH to {host}:{port} failed: {e.reason}") from None
        if self._closing:
            conn.close()
            raise _Failure("closed", "closed while connecting")
        self._conn = conn
        self._failure = None
        self._ready.set()

    async def _has_other_key(self, known: asyncssh.SSHKnownHosts, host: str, port: int) -> bool:
        """Whether known_hosts trusts some key for this host (so the one offered is a change)."""
        addrs = {host}
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(host, port), 2)
            addrs |= {info[4][0] for info in infos}
        except (TimeoutError, OSError):
            pass
        p = port if port != 22 else None
        return any(known.match(host, addr, p)[0] for addr in addrs)

    def _cli_target(self) -> str:
        """The node as the OpenSSH command line takes it (for hints and command_line)."""
        if self._port is None:
            return self.target
        user = f"{self._user}@" if self._user else ""
        return f"-p {self._port} {user}{self._host}"

    def _connection_lost(self, conn: asyncssh.SSHClientConnection, exc: Exception | None) -> None:
        if conn is not self._conn:
            return  # an old connection, or one we closed ourselves
        self._conn = None
        self._ready.clear()
        if self._closing:
            return
        why = f"connection dropped: {_reason(exc)}" if exc else "the node closed the connection"
        self._set_state("lost", why)
        self._reconnector = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        """After "lost": "reconnecting" (and again after each failed attempt, saying why and when
        the next one is), until "connected", a key/auth problem, or close()."""
        delay, attempt = BACKOFF_FIRST_S, 0
        self._set_state("reconnecting", f"next attempt in {delay:g} s")
        while not self._closing:
            await asyncio.sleep(delay)
            attempt += 1
            try:
                async with self._lock:
                    if self._conn is None:
                        await self._open()
            except _Failure as f:
                self._failure = f
                if f.state in _PERMANENT:
                    self._set_state(f.state, f.detail)
                    return
                delay = min(delay * 2, BACKOFF_MAX_S)
                if not self._closing:
                    self._set_state("reconnecting", f"attempt {attempt}: {f.detail}; next in {delay:g} s")
                continue
            if not self._closing:
                self._set_state("connected", self._where)
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
            raise TransportError(f"{self.node.name}: SSH transport is closed")
        if task.done() and self._failure is not None:
            raise TransportError(f"{self.node.name}: {self._failure.detail}")
        last = f" (last: {self._failure.detail})" if self._failure else ""
        raise TransportError(
            f"{self.node.name}: SSH connection lost and not back within {timeout:g} s{last}; still retrying"
        )

    async def _connection(self) -> asyncssh.SSHClientConnection:
        if self._closing:
            raise TransportError(f"{self.node.name}: SSH transport is closed")
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
        """Run argv on the node, every word quoted; "~/…" words are resolved first (see resolve)."""
        argv = await self.expand_argv(argv)
        cmd = shlex.join(argv)
        short = shlex.join(argv[:4]) + (" …" if len(argv) > 4 else "")
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                # conn.run's own timeout closes the channel; the outer one covers a channel that
                # never opens on a connection that died silently (until keepalive notices).
                stdin = {"input": input} if input else {"stdin": asyncssh.DEVNULL}  # EOF at once
                res = await asyncio.wait_for(
                    conn.run(cmd, check=False, timeout=timeout, encoding=None, **stdin),
                    timeout + self.options.connect_timeout_s,
                )
            except (TimeoutError, asyncssh.TimeoutError):
                raise TransportError(f"{self.node.name}: {short} took over {timeout:g} s") from None
            except asyncssh.ChannelOpenError as e:
                if attempt == 1 and self._dropped(conn):
                    await self._await_drop(conn)
                    continue  # the command never started: safe to run on the new connection
                raise TransportError(f"{self.node.name}: cannot start {argv[0]}: {e.reason}") from None
            except (asyncssh.Error, OSError) as e:
                raise TransportError(
                    f"{self.node.name}: SSH connection lost while running {short} "
                    f"({_reason(e)}); it may or may not have finished"
                ) from None
            rc = res.returncode if res.returncode is not None else 255
            return CommandResult(rc, _text(res.stdout), _text(res.stderr))
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

    async def _with_sftp(self, what: str, op):
        """op(sftp), repeated once on the new connection when the connection died under it
        (reads and whole-file writes are safe to repeat). SFTP status errors pass through."""
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                return await op(await self._sftp_for(conn))
            except asyncssh.SFTPError:
                raise
            except (asyncssh.Error, OSError) as e:
                if attempt == 1 and self._dropped(conn):
                    await self._await_drop(conn)
                    continue
                raise TransportError(f"{self.node.name}: {what}: {_reason(e)}") from None
        raise AssertionError("unreachable")

    async def home(self) -> str:
        """The node user's home directory (cached)."""
        if self._home is None:
            try:
                self._home = await self._with_sftp("home directory", lambda s: s.realpath("."))
            except (asyncssh.SFTPError, TransportError):
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

    async def read_from(self, path: str, offset: int, limit: int = 1 << 20) -> bytes:
        path = await self.resolve(path)

        async def op(sftp: asyncssh.SFTPClient) -> bytes:
            async with sftp.open(path, "rb") as f:
                return await f.read(limit, offset)

        try:
            return await self._with_sftp(f"cannot read {path}", op)
        except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
            return b""
        except asyncssh.SFTPEOFError:
            return b""
        except asyncssh.SFTPError as e:
            raise TransportError(f"{self.node.name}: cannot read {path}: {e.reason}") from None

    async def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Write to a new temp file created with `mode` (set exactly, before any data), then
        rename it over `path`: readers never see a partial file, and an existing file's looser
        permissions are never inherited."""
        path = await self.resolve(path)
        parent, name = posixpath.split(path)

        async def op(sftp: asyncssh.SFTPClient) -> None:
            if parent:
                await sftp.makedirs(parent, exist_ok=True)
            tmp = posixpath.join(parent, f".{name}.boltring-{secrets.token_hex(4)}")
            try:
                async with sftp.open(tmp, "xb", asyncssh.SFTPAttrs(permissions=mode)) as f:
                    await f.chmod(mode)  # the umask may have narrowed it: make it exact
                    await f.write(data)
                try:
                    await sftp.posix_rename(tmp, path)
                except asyncssh.SFTPOpUnsupported:
                    await sftp.remove(path) if await sftp.exists(path) else None
                    await sftp.rename(tmp, path)
            except BaseException:
                try:
                    await sftp.remove(tmp)
                except (asyncssh.Error, OSError):
                    pass
                raise

        try:
            await self._with_sftp(f"cannot write {path}", op)
        except asyncssh.SFTPError as e:
            raise TransportError(f"{self.node.name}: cannot write {path}: {e.reason}") from None

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
        remote_path = await self.resolve(remote_path)
        parent, name = posixpath.split(remote_path)

        async def op(sftp: asyncssh.SFTPClient) -> None:
            if parent:
                await sftp.makedirs(parent, exist_ok=True)
            tmp = posixpath.join(parent, f".{name}.boltring-{secrets.token_hex(4)}")
            sent = 0
            try:
                async with sftp.open(tmp, "xb", asyncssh.SFTPAttrs(permissions=mode)) as f:
                    await f.chmod(mode)
                    with open(local_path, "rb") as src:
                        while chunk := src.read(UPLOAD_CHUNK):
                            await f.write(chunk, sent)
                            sent += len(chunk)
                            if progress is not None:
                                progress(sent)
                try:
                    await sftp.posix_rename(tmp, remote_path)
                except asyncssh.SFTPOpUnsupported:
                    await sftp.remove(remote_path) if await sftp.exists(remote_path) else None
                    await sftp.rename(tmp, remote_path)
            except BaseException:
                try:
                    await asyncio.shield(sftp.remove(tmp))
                except (asyncssh.Error, OSError, asyncio.CancelledError):
                    pass
                raise

        try:
            await self._with_sftp(f"cannot write {remote_path}", op)
        except asyncssh.SFTPError as e:
            raise TransportError(f"{self.node.name}: cannot write {remote_path}: {e.reason}") from None

    async def run_lines(
        self, argv: list[str], on_line: Callable[[str], None], *, timeout: float = 30.0
    ) -> CommandResult:
        """run(), reporting each output line (stdout and stderr) as it arrives."""
        argv = await self.expand_argv(argv)
        cmd = shlex.join(argv)
        short = shlex.join(argv[:4]) + (" …" if len(argv) > 4 else "")
        conn = await self._connection()

        async def pump(stream, parts: list[str]) -> None:
            async for line in stream:
                parts.append(line)
                on_line(line.rstrip("\r\n"))

        try:
            proc = await conn.create_process(cmd, stdin=asyncssh.DEVNULL, encoding="utf-8", errors="replace")
        except asyncssh.ChannelOpenError as e:
            raise TransportError(f"{self.node.name}: cannot start {argv[0]}: {e.reason}") from None
        out: list[str] = []
        err: list[str] = []
        try:
            await asyncio.wait_for(
                asyncio.gather(pump(proc.stdout, out), pump(proc.stderr, err), proc.wait_closed()), timeout
            )
        except TimeoutError:
            proc.close()
            raise TransportError(f"{self.node.name}: {short} took over {timeout:g} s") from None
        except (asyncssh.Error, OSError) as e:
            raise TransportError(
                f"{self.node.name}: SSH connection lost while running {short} ({_reason(e)})"
            ) from None
        rc = proc.returncode if proc.returncode is not None else 255
        return CommandResult(rc, "".join(out), "".join(err))

    def command_line(self, argv: list[str]) -> str:
        """`ssh [-F CONFIG] [-o UserKnownHostsFile=F] [-p PORT] NODE -- 'quoted command'`, to paste
        into a shell: it runs the same command as run() (a "~/" word is expanded by the remote
        shell instead of by resolve())."""
        parts = ["ssh"]
        o, default = self.options, SshOptions()
        cfg = self._config_paths()
        if cfg and o.config_file != default.config_file:
            parts += ["-F", cfg[0]]
        if o.known_hosts and o.known_hosts != default.known_hosts:
            parts += ["-o", f"UserKnownHostsFile={Path(o.known_hosts).expanduser()}"]
        if self._port is not None:
            parts += ["-p", str(self._port)]
        target = f"{self._user}@{self._host}" if self._user else self._host
        # "~/…" words keep an unquoted "~/" so the remote shell expands them as run() resolves them
        remote = " ".join(_remote_word(w) for w in argv)
        return shlex.join([*parts, target, "--", remote])


def _remote_word(word: str) -> str:
    if word == "~" or word.startswith("~/"):
        return word[:2] + (shlex.quote(word[2:]) if word[2:] else "")
    return shlex.quote(word)


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)


def _reason(e: BaseException) -> str:
    return getattr(e, "reason", None) or str(e) or type(e).__name__
