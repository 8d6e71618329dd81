"""What a failed SFTP write is said to be, from the node's file system (write_failure.py)."""

from boltring.cluster.nodes.write_failure import FsInfo, explain, mount_point

MB = 1 << 20


def test_full_read_only_and_out_of_inodes():
    full = explain("h2", FsInfo(free=5 * MB, free_inodes=100, read_only=False), "/data", 8 * MB)
    assert full == (
        "disk full (5.0 MB free on /data, 8.0 MB needed)",
        "free space on h2's /data, or set the node's workdir: to a disk with room",
    )
    ro = explain("h2", FsInfo(free=500 * MB, free_inodes=100, read_only=True), "/data", 1)
    assert ro is not None and ro[0] == "read-only file system (/data)" and "read-write" in ro[1]
    inodes = explain("h2", FsInfo(free=500 * MB, free_inodes=0, read_only=False), "/data", 1)
    assert inodes is not None and inodes[0] == "disk full: no free inodes on /data"
    nearly = explain("h2", FsInfo(free=MB // 2, free_inodes=None, read_only=False), "/data", None)
    assert nearly is not None and nearly[0] == "disk full (0.5 MB free on /data)"
    # room enough: the disk is not why (the SFTP reason is all there is)
    assert explain("h2", FsInfo(free=500 * MB, free_inodes=None, read_only=False), "/data", 8 * MB) is None


def test_mount_point_of_df_output():
    linux = (
        "Filesystem     1024-blocks  Used Available Capacity Mounted on\ntmpfs 5120 5120 0 100% /tmp/x y/ws\n"
    )
    assert mount_point(linux) == "/tmp/x y/ws"
    assert mount_point("df: /nope: No such file or directory\n") is None
    assert mount_point("") is None
