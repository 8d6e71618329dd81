"""Why a write to a node failed, when SFTP does not say: OpenSSH's sftp-server answers a full disk
(ENOSPC), a read-only file system (EROFS) and most other errors alike, with "Failure". After such
a failure SshTransport asks the node about the file system (SFTP statvfs, and `df -P` for the
mount point), and `explain` turns the answer into a cause and a hint:

    disk full (4.2 MB free on /Volumes/data, 8.0 MB needed)   -> free space there, or another workdir
    disk full: no free inodes on /Volumes/data
    read-only file system (/Volumes/data)                     -> remount it read-write, or another workdir

None when neither is the case (the SFTP reason is then all there is to say).
"""

from __future__ import annotations

from dataclasses import dataclass

ST_RDONLY = 0x1  # statvfs@openssh.com's flag bit for a read-only mount
TIGHT_BYTES = 1 << 20  # a write that failed with less than this free: the disk is full


@dataclass(frozen=True)
class FsInfo:
    free: int  # bytes available to an unprivileged user
    free_inodes: int | None  # None when the file system does not count them
    read_only: bool


def mb(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB"


def explain(node: str, fs: FsInfo, mount: str, needed: int | None) -> tuple[str, str] | None:
    """(cause, hint) for a failed write of `needed` bytes onto the file system at `mount`."""
    if fs.read_only:
        return (
            f"read-only file system ({mount})",
            f"{mount} is mounted read-only on {node}: remount it read-write (check `mount` there), "
            "or set the node's workdir: to a writable folder",
        )
    if fs.free_inodes == 0:
        return (
            f"disk full: no free inodes on {mount}",
            f"remove files on {node}'s {mount}, or set the node's workdir: to another disk",
        )
    if fs.free < TIGHT_BYTES or (needed is not None and fs.free < needed):
        what = f"{mb(fs.free)} free on {mount}" + (f", {mb(needed)} needed" if needed is not None else "")
        return (
            f"disk full ({what})",
            f"free space on {node}'s {mount}, or set the node's workdir: to a disk with room",
        )
    return None


def mount_point(df_output: str) -> str | None:
    """The "Mounted on" column of `df -P PATH` (its last line; a mount point may hold spaces)."""
    lines = [line for line in df_output.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    fields = lines[-1].split(None, 5)
    return fields[5] if len(fields) == 6 and fields[5].startswith("/") else None
