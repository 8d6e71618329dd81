"""How the controller acts on a node: run a command, read a file from an offset, write a file.

Two implementations share this interface: `LocalTransport` (subprocesses on this machine) and
`SshTransport` (asyncssh, in ssh.py). Launch, kill, log following and checks are written once
against it, so the local default exercises the same code paths as a cluster. What can fail is a
class in errors.py (re-exported here).

Commands are argv lists. Locally they are executed without a shell; over SSH they are joined
with `shlex.join` (every word quoted), so no caller ever builds a shell string by hand.
Paths may start with "~/": each transport resolves them against the node user's home.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shlex
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from boltring.cluster.config.schema import Node
from boltring.cluster.jobs.events import NodeState
from boltring.cluster.nodes.errors import (
    AuthFailed,
    CommandNotFound,
    CommandTimeout,
    ConnectionLost,
    HostKeyChanged,
    HostKeyUnknown,
    TransportClosed,
    TransportError,
    Unreachable,
)
from boltring.cluster.nodes.local_process import start_group, stop_group
from boltring.cluster.states import SshState

T = TypeVar("T")

__all__ = [
    "AuthFailed",
    "CommandNotFound",
    "CommandResult",
    "CommandTimeout",
    "ConnectionLost",
    "HostKeyChanged",
    "HostKeyUnknown",
    "LocalTransport",
    "Transport",
    "TransportClosed",
    "TransportError",
    "Unreachable",
    "last_json_object",
]


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_json(self) -> dict[str, Any] | None:
        """The last line of stdout that is a JSON object: agent commands (spawn, nodeprobe, the
        bandwidth probe) print their answer there, after anything a shell profile printed."""
        return last_json_object(self.stdout)


def last_json_object(text: str | None) -> dict[str, Any] | None:
    for line in reversed((text or "").strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    return None


class Transport(ABC):
    def __init__(self, node: Node, on_state: Callable[[NodeState], None] | None = None):
        self.node = node
        self._on_state = on_state or (lambda ev: None)
        self.state = SshState.CLOSED

    def _set_state(self, state: SshState, detail: str | None = None) -> None:
        self.state = state
        self._on_state(NodeState(node=self.node.name, state=state, detail=detail))

    @abstractmethod
    async def connect(self) -> None:
        """Make the node usable; raise TransportError with a one-line reason when it is not."""

    @abstractmethod
    async def run(
        self, argv: list[str], *, input: bytes | None = None, timeout: float = 30.0
    ) -> CommandResult:
        """Run argv on the node and wait for it (stdin from `input`); TransportError on timeout."""

    @abstractmethod
    async def read_from(self, path: str, offset: int, limit: int = 1 << 20) -> bytes:
        """Up to `limit` bytes of the file from `offset`; b"" when it is missing or no longer."""

    @abstractmethod
    async def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Create or replace a file (parents created); the mode is set before data is written."""

    async def upload(
        self,
        local_path: str | Path,
        remote_path: str,
        mode: int = 0o644,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Copy a local file to the node atomically (temp file with `mode`, then rename), calling
        `progress(bytes_sent_so_far)` as it goes. Interrupted, it leaves nothing under the final
        name. This default reads the whole file; transports override it to stream."""
        data = Path(local_path).read_bytes()
        await self.write_file(remote_path, data, mode)
        if progress is not None:
            progress(len(data))

    async def run_lines(
        self, argv: list[str], on_line: Callable[[str], None], *, timeout: float = 30.0
    ) -> CommandResult:
        """run(), calling `on_line` with each line of stdout and stderr as it arrives (pip's
        progress in `boltring setup`). This default reports the lines when the command ends."""
        res = await self.run(argv, timeout=timeout)
        for line in (res.stdout + res.stderr).splitlines():
            on_line(line)
        return res

    async def resolve(self, path: str) -> str:
        """`path` with a leading "~" or "~/" replaced by the node user's home; others unchanged.

        run() resolves "~/…" words of argv itself (expand_argv), as read_from() and write_file()
        do their paths: commands run without a shell's "~" expansion (quoted over SSH)."""
        if path == "~" or path.startswith("~/"):
            raise NotImplementedError(f"{type(self).__name__} cannot resolve {path!r}")
        return path

    async def close(self) -> None:
        self._set_state(SshState.CLOSED)

    async def expand_argv(self, argv: list[str]) -> list[str]:
        """argv with "~/…" words resolved on the node (commands run without a shell's expansion)."""
        return [await self.resolve(a) if a == "~" or a.startswith("~/") else a for a in argv]

    def command_line(self, argv: list[str]) -> str:
        """The exact command as it would be run (for --dry-run)."""
        return shlex.join(argv)


class LocalTransport(Transport):
    """Ranks on this machine: plain subprocesses, files read directly."""

    async def connect(self) -> None:
        self._set_state(SshState.LOCAL)

    async def run(
        self, argv: list[str], *, input: bytes | None = None, timeout: float = 30.0
    ) -> CommandResult:
        argv = await self.expand_argv(argv)
        proc = await self._start(argv, with_input=input is not None)
        out, err = await self._finish(proc, argv, proc.communicate(input), timeout)
        return CommandResult(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))

    async def _start(self, argv: list[str], *, with_input: bool) -> asyncio.subprocess.Process:
        try:
            return await start_group(
                argv,
                stdin=asyncio.subprocess.PIPE if with_input else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            raise CommandNotFound(
                f"{self.node.name}: cannot run {argv[0]}: {e.strerror}",
                hint=f"check that {argv[0]} exists and is executable",
            ) from e

    async def _finish(
        self, proc: asyncio.subprocess.Process, argv: list[str], waiting: Awaitable[T], timeout: float
    ) -> T:
        """What `waiting` gives within `timeout`; a timeout or a cancel stops the command's
        whole process group first (as SSH's watcher does on a node)."""
        try:
            return await asyncio.wait_for(waiting, timeout)
        except TimeoutError:
            await stop_group(proc)
            raise CommandTimeout(
                f"{self.node.name}: {shlex.join(argv[:4])} … took over {timeout:g} s"
            ) from None
        except asyncio.CancelledError:
            await stop_group(proc)
            raise

    async def resolve(self, path: str) -> str:
        return os.path.expanduser(path) if path == "~" or path.startswith("~/") else path

    async def read_from(self, path: str, offset: int, limit: int = 1 << 20) -> bytes:
        return await asyncio.to_thread(_read_local, Path(path).expanduser(), offset, limit)

    async def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        await asyncio.to_thread(_write_local, Path(path).expanduser(), data, mode)

    async def upload(
        self,
        local_path: str | Path,
        remote_path: str,
        mode: int = 0o644,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        await asyncio.to_thread(_copy_local, Path(local_path), Path(remote_path).expanduser(), mode, progress)

    async def run_lines(
        self, argv: list[str], on_line: Callable[[str], None], *, timeout: float = 30.0
    ) -> CommandResult:
        argv = await self.expand_argv(argv)
        proc = await self._start(argv, with_input=False)
        out, err = await self._finish(proc, argv, _wait_lines(proc, on_line), timeout)
        return CommandResult(proc.returncode or 0, out, err)


def _read_local(path: Path, offset: int, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(limit)
    except FileNotFoundError:
        return b""


UPLOAD_CHUNK = 1 << 20  # bytes per write (and per progress report) of an upload


async def _pump(stream: asyncio.StreamReader, on_line: Callable[[str], None]) -> str:
    """Read a stream to its end, reporting each line; returns all of it."""
    parts = []
    while line := await stream.readline():
        text = line.decode(errors="replace")
        parts.append(text)
        on_line(text.rstrip("\r\n"))
    return "".join(parts)


async def _wait_lines(proc: asyncio.subprocess.Process, on_line: Callable[[str], None]) -> tuple[str, str]:
    assert proc.stdout is not None and proc.stderr is not None
    waiting = asyncio.gather(_pump(proc.stdout, on_line), _pump(proc.stderr, on_line), proc.wait())
    try:
        out, err, _ = await waiting
    except BaseException:
        # a timeout or cancel stopped the gathering: retrieve what it ends with (no "exception
        # was never retrieved" when a pump then fails on the closed pipe)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        raise
    return out, err


def _replace_local(dst: Path, mode: int, fill: Callable[[BinaryIO], None]) -> None:
    """`fill` writes into a temp file in the destination folder, created with the final mode (a
    secret is never readable by others, not even for a moment), renamed over `dst` when
    complete; any failure removes the temp file, so `dst` only ever holds a whole file. The same
    rule as SshTransport's writes."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.boltring-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)  # the umask may have narrowed it: make it exact
            fill(out)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_local(src: Path, dst: Path, mode: int, progress: Callable[[int], None] | None) -> None:
    def fill(out: BinaryIO) -> None:
        sent = 0
        with open(src, "rb") as f:
            while chunk := f.read(UPLOAD_CHUNK):
                out.write(chunk)
                sent += len(chunk)
                if progress is not None:
                    progress(sent)

    _replace_local(dst, mode, fill)


def _write_local(path: Path, data: bytes, mode: int) -> None:
    def fill(out: BinaryIO) -> None:
        out.write(data)

    _replace_local(path, mode, fill)
