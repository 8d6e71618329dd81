"""boltring's data plane: framing, authenticated ring allreduce and the worker API.

No UI and no SSH here: this package is what every rank imports.
"""

from .errors import ConnectTimeout, FrameError, HandshakeError, NetioError, PeerClosed, PeerTimeout
from .group import Group, NonFiniteLoss, init
from .jobenv import JobEnv, JobEnvError

__all__ = [
    "init",
    "Group",
    "JobEnv",
    "JobEnvError",
    "NonFiniteLoss",
    "NetioError",
    "FrameError",
    "PeerClosed",
    "PeerTimeout",
    "HandshakeError",
    "ConnectTimeout",
]
