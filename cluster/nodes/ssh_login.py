"""How to log in to one node over SSH, and what a failed login means.

`SshLogin` builds asyncssh's options from the node's target ("alias", "user@host[:port]") and
`SshOptions`, makes one connection attempt, and turns each way it can fail into its class from
errors.py with a one-line cause and a hint. Hints name OpenSSH commands that run as written
(`ssh -p 2299 you@127.0.0.1`, with -F/-o when the config names files other than OpenSSH's own).
The connection's life after that (reconnects, commands, SFTP) is SshTransport's, in ssh.py.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Callable
from pathlib import Path

import asyncssh

from boltring.cluster.config.schema import Node, SshOptions
from boltring.cluster.nodes.errors import (
    AuthFailed,
    HostKeyChanged,
    HostKeyUnknown,
    TransportError,
    Unreachable,
)

REMOTE_LOGIN_HINT = "enable Remote Login on it (System Settings → General → Sharing) or start sshd"


class SshLogin:
    def __init__(
        self,
        node: Node,
        options: SshOptions,
        user: str | None,
        host: str,
        port: int | None,
        client_factory: Callable[[], asyncssh.SSHClient],
    ) -> None:
        self.node = node
        self.options = options
        self.target = node.ssh or node.name
        self._user, self._host, self._port = user, host, port
        self._client_factory = client_factory
        self.where = self.target  # "user@address port N" once known, for messages

    def fail(self, cls: type[TransportError], cause: str, hint: str | None) -> TransportError:
        return cls(f"{self.node.name}: {cause}", hint=hint)

    def no_config_note(self) -> str:
        """Says so when the ssh config file is missing: HostName, User, Port and IdentityFile then
        come from nowhere, which explains many failures of a target written as an alias."""
        path = self.options.config_file
        if not path or self.config_paths():
            return ""
        if self._user is None and self._port is None:  # an alias: only a Host entry can define it
            return f" (there is no {path}: no Host entry gives {self._host} a HostName, User, Port or key)"
        return f" (there is no {path}: no IdentityFile or other setting comes from it)"

    def config_paths(self) -> list[str]:
        path = self.options.config_file
        if path and Path(path).expanduser().is_file():
            return [str(Path(path).expanduser())]
        return []

    def known_hosts_path(self) -> Path:
        return Path(self.options.known_hosts or "~/.ssh/known_hosts").expanduser()

    def load_known_hosts(self) -> asyncssh.SSHKnownHosts:
        path = self.known_hosts_path()
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""  # trust nothing (never None: that would disable checking)
        except OSError as e:
            raise self.fail(
                HostKeyUnknown, f"cannot read {path}: {e.strerror}", f"make {path} readable"
            ) from None
        try:
            return asyncssh.import_known_hosts(text)
        except ValueError as e:
            raise self.fail(
                HostKeyUnknown,
                f"{path} is not a valid known_hosts file ({e})",
                "fix or remove the bad line",
            ) from None

    async def _connection_options(self, known: asyncssh.SSHKnownHosts) -> asyncssh.SSHClientConnectionOptions:
        o = self.options
        kw: dict = dict(
            config=self.config_paths(),
            host=self._host,
            known_hosts=known,
            connect_timeout=o.connect_timeout_s,
            keepalive_interval=o.keepalive_interval_s,
            keepalive_count_max=o.keepalive_count_max,
            agent_forwarding=False,
            password_auth=False,
            kbdint_auth=False,
            ignore_encrypted=True,
            client_factory=self._client_factory,
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
            raise self.fail(
                AuthFailed, f"cannot load an SSH key: {e}", "check IdentityFile and identity_files"
            ) from None
        except (OSError, ValueError, asyncssh.ConfigParseError) as e:
            raise self.fail(
                Unreachable,
                f"cannot use ssh config {self.options.config_file}: {e}",
                "fix that file (`ssh -G HOST` shows how OpenSSH reads it)",
            ) from None
        return opts

    async def open(self) -> asyncssh.SSHClientConnection:
        """One connection attempt: the connection, or a TransportError subclass saying why not."""
        known = await asyncio.to_thread(self.load_known_hosts)
        opts = await self._connection_options(known)
        host, port, user = opts.host, opts.port or 22, opts.username
        # never "user@host:port" (OpenSSH would read it as a host name): the port is said apart
        self.where = f"{user}@{host}" + (f" port {port}" if port != 22 else "")
        timeout = self.options.connect_timeout_s
        ssh = f"`{self.command()}`"
        note = self.no_config_note()
        except_known = "" if not self.options.known_hosts else f" -f {self.known_hosts_path()}"
        try:
            conn = await asyncssh.connect(self._host, self._port or (), options=opts)
        except asyncssh.PermissionDenied:
            raise self.fail(
                AuthFailed,
                f"{self.where} did not accept our SSH key",
                f"add your public key to ~/.ssh/authorized_keys on the node "
                f"(`{self.command('ssh-copy-id')}`), or set identity_files in the config{note}",
            ) from None
        except asyncssh.HostKeyNotVerifiable:
            kh = self.known_hosts_path()
            if await self._has_other_key(known, opts.host_key_alias or host, port):
                raise self.fail(
                    HostKeyChanged,
                    f"the host key of {host} changed: it is not the one in {kh}",
                    f"if the node was reinstalled, run `ssh-keygen -R {host}{except_known}` and "
                    f"{ssh} once; otherwise do not connect (the connection may be intercepted)",
                ) from None
            raise self.fail(
                HostKeyUnknown,
                f"the host key of {host} is not in {kh}",
                f"run {ssh} once, check the key and accept it",
            ) from None
        except ConnectionRefusedError:
            raise self.fail(
                Unreachable,
                f"{host}:{port} refused the connection",
                f"nothing accepts SSH there: {REMOTE_LOGIN_HINT}, then try {ssh}{note}",
            ) from None
        except TimeoutError:
            raise self.fail(
                Unreachable,
                f"no SSH answer from {host}:{port} within {timeout:g} s",
                f"is the node on and on this network? try {ssh}{note}",
            ) from None
        except OSError as e:
            what = e.strerror or str(e) or type(e).__name__
            raise self.fail(
                Unreachable,
                f"cannot reach {host}:{port}: {what}",
                f"is the node on and on this network? try {ssh}{note}",
            ) from None
        except asyncssh.Error as e:
            raise self.fail(
                Unreachable, f"SSH to {host}:{port} failed: {e.reason}", f"try {ssh} to see why{note}"
            ) from None
        return conn

    async def _has_other_key(self, known: asyncssh.SSHKnownHosts, host: str, port: int) -> bool:
        """Whether known_hosts trusts some key for this host (so the one offered is a change)."""
        addrs = {host}
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(host, port), 2)
            addrs |= {str(info[4][0]) for info in infos}
        except (TimeoutError, OSError):
            pass
        p = port if port != 22 else None
        return any(known.match(host, addr, p)[0] for addr in addrs)

    def options_argv(self) -> list[str]:
        """The OpenSSH options that make `ssh` use the same files and port as this login."""
        parts: list[str] = []
        o, default = self.options, SshOptions()
        cfg = self.config_paths()
        if cfg and o.config_file != default.config_file:
            parts += ["-F", cfg[0]]
        if o.known_hosts and o.known_hosts != default.known_hosts:
            parts += ["-o", f"UserKnownHostsFile={Path(o.known_hosts).expanduser()}"]
        if self._port is not None:
            parts += ["-p", str(self._port)]
        return parts

    def cli_target(self) -> str:
        """The node as the OpenSSH command line takes it: `[user@]host`, never `host:port`."""
        return f"{self._user}@{self._host}" if self._user else self._host

    def command(self, program: str = "ssh") -> str:
        """A command line that reaches this node as we do, to paste into a shell: `ssh -p 2299
        you@127.0.0.1` (OpenSSH takes the port as -p, never as host:port). `ssh-copy-id` takes
        the same options."""
        return shlex.join([program, *self.options_argv(), self.cli_target()])
