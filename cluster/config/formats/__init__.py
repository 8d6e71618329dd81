"""The cluster files our users already have, each in its own module with `sniff(data)` (is
this file mine?), `read(data, source)` (a Config and an ImportReport) and `NAME`.

Each reader writes the boltring key/value shape (LineMaps that keep the line and the user's
own name of every value) and hands it to `validate.config_from_data`, so an imported cluster
passes exactly the checks a boltring.yaml does, and a bad value is still reported as
"cluster_config.yaml:4: host_ip.mini2: ...".
"""

from __future__ import annotations

from typing import Any

from boltring.cluster.config.formats import jupiter, mlx_hostfile, smolcluster
from boltring.cluster.config.formats.draft import ImportReport

FORMATS = (mlx_hostfile, smolcluster, jupiter)  # sniffed in this order
BOLTRING = "boltring"


def detect_format(data: Any) -> str:
    """ "boltring", "mlx-hostfile", "smolcluster" or "jupiter", judged by the keys present."""
    return next((f.NAME for f in FORMATS if f.sniff(data)), BOLTRING)


READERS = {f.NAME: f.read for f in FORMATS}

__all__ = ["FORMATS", "READERS", "ImportReport", "detect_format"]
