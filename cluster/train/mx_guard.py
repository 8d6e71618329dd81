"""Stop a script written for ``mx.distributed`` from training alone under ``--backend boltring``.

Without MLX's launcher variables, ``mx.distributed.init()`` quietly returns a 1-rank group, so
every rank of a boltring job would train its own model and nobody would notice. The runner
installs this guard before it runs a user script or module on a multi-rank job with the
boltring backend: ``mx.distributed.init()`` and the collectives called without a group then
raise :class:`MxDistributedUnderBoltring`, which names the backend to use. (boltring's ring runs
outside MLX's graph, so it cannot stand in for ``mx.distributed`` inside ``mx.compile``.)
"""

from __future__ import annotations

from typing import Any

COLLECTIVES = ("all_sum", "all_gather", "all_max", "all_min", "sum_scatter", "send", "recv", "recv_like")

MESSAGE = (
    "this script uses mx.distributed, which the boltring backend does not provide; "
    "run it with `--backend mlx-ring` (or jaccl on Thunderbolt 5 Macs), "
    "or use boltring.netio.init() for boltring's ring"
)


class MxDistributedUnderBoltring(RuntimeError):
    pass


def install(target: Any | None = None) -> None:
    """Replace ``mx.distributed.init`` and the group-less collectives with ones that raise."""
    if target is None:
        import mlx.core as mx

        target = mx.distributed
    mx_distributed: Any = target

    def refuse_init(*_args, **_kwargs):
        raise MxDistributedUnderBoltring(MESSAGE)

    def guarded(fn):
        def call(*args, **kwargs):
            if kwargs.get("group") is None:
                raise MxDistributedUnderBoltring(MESSAGE)
            return fn(*args, **kwargs)

        call.__name__ = getattr(fn, "__name__", "collective")
        call.__doc__ = getattr(fn, "__doc__", None)
        return call

    mx_distributed.init = refuse_init
    for name in COLLECTIVES:
        fn = getattr(mx_distributed, name, None)
        if fn is not None:
            setattr(mx_distributed, name, guarded(fn))
