"""Tests of boltring.netio, the data plane (framing, handshake, ring allreduce, worker API)."""
