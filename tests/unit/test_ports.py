"""Ring ports stay below the ephemeral ranges, and the pickers hand out ports a rank can bind."""

from __future__ import annotations

import socket

from boltring.cluster.config import ports


def test_the_default_block_is_below_every_usual_ephemeral_range():
    # Linux starts at 32768, macOS at 49152; a node's 64th rank still listens below both
    assert ports.DEFAULT_RING_PORT + 63 < ports.EPHEMERAL_START


def test_a_free_block_binds_and_keeps_clear_of_the_default_block_and_of_avoid():
    avoid = set(range(ports._PICK_LOW, ports._PICK_LOW + 3000))
    for _ in range(20):
        first = ports.free_port_block(4, avoid=avoid)
        block = range(first, first + 4)
        assert avoid.isdisjoint(block)
        assert ports.DEFAULT_RING_PORT + 255 < first and first + 3 < ports.EPHEMERAL_START
    socks = []
    try:
        for port in block:  # the last block is really free: a listener binds every port of it
            s = socket.create_server(("127.0.0.1", port))
            socks.append(s)
    finally:
        for s in socks:
            s.close()


def test_a_port_in_use_is_not_bindable():
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert not ports.bindable("127.0.0.1", port)
    picked = ports.free_ports(5)
    assert len(set(picked)) == 5 and all(ports.bindable("127.0.0.1", p) for p in picked)
