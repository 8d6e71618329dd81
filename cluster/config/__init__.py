"""The config, runs on the laptop.

located.py  YAML with line numbers (LineMap/LineList/Where), the bounded loader, ConfigError(s)
values.py   checkers for values; ssh_target.py the one SSH-target parser
schema.py   the dataclasses, each YAML key declared with its checker and "expected" text
validate.py the validator (every problem, one line each); load.py finds and loads files
formats/    the MLX hostfile (reader and writer), smolcluster and jupiter readers
"""

from boltring.cluster.config.formats import ImportReport, detect_format
from boltring.cluster.config.formats.mlx_hostfile import write_mlx_hostfile
from boltring.cluster.config.load import (
    CONFIG_FILENAME,
    EMBEDDED_SOURCE,
    load_config,
    load_config_text,
    load_config_with_report,
    with_overrides,
)
from boltring.cluster.config.located import ConfigError, ConfigErrors
from boltring.cluster.config.schema import Config, JobSpec, Node, RingOptions, SetupOptions, SshOptions
from boltring.cluster.config.ssh_target import parse_ssh_target

__all__ = [
    "CONFIG_FILENAME",
    "EMBEDDED_SOURCE",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "ImportReport",
    "JobSpec",
    "Node",
    "RingOptions",
    "SetupOptions",
    "SshOptions",
    "detect_format",
    "load_config",
    "load_config_text",
    "load_config_with_report",
    "parse_ssh_target",
    "with_overrides",
    "write_mlx_hostfile",
]
