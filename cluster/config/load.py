"""Load a boltring config (or a file from a tool our users come from) and validate all of it.

Everything is checked here, before anything starts, and the first problem raises a
`ConfigError` whose one-line message names the file, the line, the key and what a valid value
looks like. YAML is read with `yaml.compose` (the safe loader's node graph) rather than
`safe_load`, because only the nodes still know which line each key and value came from.

Foreign formats (MLX hostfile, smolcluster, jupiter) are recognised by their content and
translated by `importers.py` into the same key/value shape, then validated by the same code.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import re
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import yaml
from yaml.constructor import SafeConstructor

from boltring.cluster.config.schema import (
    BACKENDS,
    EXAMPLES,
    WIRE_DTYPES,
    Config,
    JobSpec,
    Node,
    RingOptions,
    SetupOptions,
    SshOptions,
)
from boltring.cluster.errors import BoltringError

if TYPE_CHECKING:
    from boltring.cluster.config.importers import ImportReport

CONFIG_FILENAME = "boltring.yaml"
EMBEDDED_SOURCE = "<embedded local.yaml>"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")  # ssh targets that mean "this machine"


class ConfigError(BoltringError):
    """One line: "FILE:LINE: KEY.PATH: what is wrong; what is expected"."""

    title = "config error"

    def __init__(self, source: str, line: int | None, key: str | None, problem: str, hint: str | None = None):
        self.source, self.line, self.key, self.problem = source, line, key, problem
        parts = [source if line is None else f"{source}:{line}"]
        if key:
            parts.append(key)
        text = ": ".join([*parts, problem]) + (f"; {hint}" if hint else "")
        # one line, whatever a YAML message contained; the hint is part of it, as users expect
        super().__init__(" ".join(text.split()), hint=hint)


# --- YAML with line numbers -------------------------------------------------------------


class LineMap(dict):
    """A mapping that remembers the 1-based line of itself and of each of its keys.

    `labels` is for importers: how the user's own file spells a key (e.g. "host_ip.mini2"),
    so that a problem found after translation still names what the user wrote.
    """

    def __init__(self, line: int | None = None):
        super().__init__()
        self.line = line
        self.lines: dict[Any, int | None] = {}
        self.labels: dict[Any, str] = {}

    def put(self, key: Any, value: Any, line: int | None = None, label: str | None = None) -> Any:
        self[key] = value
        self.lines[key] = line
        if label:
            self.labels[key] = label
        return value


class LineList(list):
    """A list that remembers the line of itself and of each item (`lines`/`labels` by index)."""

    def __init__(self, line: int | None = None):
        super().__init__()
        self.line = line
        self.lines: dict[int, int | None] = {}
        self.labels: dict[int, str] = {}

    def add(self, value: Any, line: int | None = None, label: str | None = None) -> Any:
        self.lines[len(self)] = line
        if label:
            self.labels[len(self)] = label
        self.append(value)
        return value


def line_of(container: Any, key: Any = None) -> int | None:
    """The line of `key` in a LineMap/LineList (or of the container itself); None for plain data."""
    if key is None:
        return getattr(container, "line", None)
    return getattr(container, "lines", {}).get(key)


def parse_yaml(text: str, source: str) -> Any:
    """Parse one YAML document into plain values, with LineMap/LineList for containers."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise ConfigError(
            source,
            mark.line + 1 if mark else None,
            "YAML syntax",
            str(e.problem or e.context or "cannot parse"),
            "expected valid YAML (check indentation, colons and quotes)",
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(source, None, "YAML syntax", str(e), "expected one valid YAML document") from None
    except RecursionError:  # thousands of nested brackets
        raise ConfigError(
            source, None, "YAML syntax", "nested too deeply", "expected a config file"
        ) from None
    try:
        return None if root is None else _from_node(root, source, SafeConstructor(), set(), "")
    except RecursionError:
        raise ConfigError(
            source, None, "YAML syntax", "nested too deeply", "expected a config file"
        ) from None


def _from_node(node: yaml.Node, source: str, cons: SafeConstructor, active: set[int], path: str) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode):
        try:
            return cons.construct_object(node)
        except yaml.YAMLError as e:
            raise ConfigError(
                source,
                line,
                path or None,
                str(getattr(e, "problem", e)),
                "expected a plain value (quote it to keep it as text)",
            ) from None
    if id(node) in active:  # "&a [*a]": an alias inside itself would never end
        raise ConfigError(
            source,
            line,
            path or None,
            "an alias refers to its own anchor",
            "expected anchors that do not contain themselves",
        )
    active.add(id(node))
    try:
        if isinstance(node, yaml.SequenceNode):
            seq = LineList(line)
            for i, item in enumerate(node.value):
                seq.add(_from_node(item, source, cons, active, f"{path}[{i}]"), item.start_mark.line + 1)
            return seq
        own: dict[Any, int] = {}  # a key written twice is a mistake (safe_load keeps the last)
        for key_node, _ in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(
                    source,
                    key_line,
                    path or None,
                    "a list or mapping is used as a key",
                    "expected plain key names",
                )
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = cons.construct_object(key_node)
            if key in own:
                raise ConfigError(
                    source,
                    key_line,
                    f"{path}.{key}" if path else str(key),
                    f"{key!r} appears twice (first on line {own[key]})",
                    "expected each key once",
                )
            own[key] = key_line
        # "<<: *anchor" merge keys: flattened as safe_load does; the mapping's own keys win.
        cons.flatten_mapping(node)
        mapping = LineMap(line)
        for key_node, value_node in node.value:
            key = cons.construct_object(key_node)
            key_path = f"{path}.{key}" if path else str(key)
            mapping.put(
                key, _from_node(value_node, source, cons, active, key_path), key_node.start_mark.line + 1
            )
        return mapping
    finally:
        active.discard(id(node))


# --- where a value is, and how it is reported ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class Where:
    """The location of one value: for error messages."""

    source: str
    path: str  # key path such as "nodes[1].ring_ip" (or the foreign file's own spelling)
    line: int | None

    def child(self, container: Any, key: Any) -> Where:
        label = getattr(container, "labels", {}).get(key)
        if label is None:
            if isinstance(key, int) and isinstance(container, list):
                label = f"{self.path}[{key}]"
            else:
                label = f"{self.path}.{key}" if self.path else str(key)
        return Where(self.source, label, line_of(container, key) or self.line)

    def fail(self, problem: str, expected: str) -> NoReturn:
        raise ConfigError(self.source, self.line, self.path or None, problem, f"expected {expected}")


class _Bad(Exception):
    """A checker rejects a value; the caller knows where it is and what is expected."""

    def __init__(self, problem: str, index: int | None = None):
        super().__init__(problem)
        self.problem, self.index = problem, index


def describe(value: Any) -> str:
    """A short phrase saying what a wrong value is, in YAML's words."""
    if value is None:
        return "the value is empty (null)"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} is a boolean"
    if isinstance(value, int):
        return f"{value} is a whole number"
    if isinstance(value, float):
        return f"{value:g} is a decimal number"
    if isinstance(value, str):
        return f"{value!r} is text"
    if isinstance(value, list):
        return "got a list"
    if isinstance(value, dict):
        return "got a mapping"
    if hasattr(value, "isoformat"):  # YAML reads 2024-01-01 as a date
        return f"{value} is a date (quote it to keep it as text)"
    return f"got {type(value).__name__} {value!r}"


# --- checkers: return the value to store, or raise _Bad ------------------------------------

_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
_SSH_RE = re.compile(
    r"(?:(?P<user>[A-Za-z0-9._-]+)@)?"
    r"(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9._-]+)?\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad(describe(v))
    if not v.strip():
        raise _Bad("the text is empty")
    return v


def _opt_text(v: Any) -> str | None:
    return None if v is None else _text(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad(describe(v))
    return v


def _int_min(minimum: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):  # True is an int to Python, not to us
            raise _Bad(describe(v))
        if v < minimum:
            raise _Bad(f"{v} is less than {minimum}")
        return v

    return check


def _positive(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(describe(v))
    if not math.isfinite(v) or v <= 0:
        raise _Bad(f"{v:g} is not a positive number")
    return float(v)


def _port(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Bad(describe(v))
    if not 1024 <= v <= 65535:  # below 1024 needs root on macOS and Linux
        raise _Bad(f"{v} is outside 1024-65535")
    return v


def _text_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise _Bad(describe(v))
    for i, item in enumerate(v):
        if not isinstance(item, str):
            raise _Bad(describe(item) + " (quote it to pass it as text)", index=i)
    return tuple(v)


def _name(v: Any) -> str:
    v = _text(v)
    if not _NAME_RE.fullmatch(v):
        raise _Bad(f"{v!r} has characters other than letters, digits, '.', '_' and '-'")
    return v


def _ip(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad(describe(v))
    try:
        ip = ipaddress.ip_address(v.strip())
    except ValueError:
        raise _Bad(f"{v!r} is not an IPv4/IPv6 address") from None
    if ip.is_unspecified or ip.is_multicast:  # nobody can connect to these
        raise _Bad(f"{v!r} is {'the unspecified' if ip.is_unspecified else 'a multicast'} address")
    return str(ip)


def parse_ssh_target(target: str) -> tuple[str | None, str, int | None]:
    """Split "alias", "host", "user@host" or "user@host:port" into (user, host, port).

    IPv6 hosts are written in brackets ("user@[fe80::1%bridge0]:22") and returned without them.
    Raises ValueError for anything else, including names that start with "-" (they would read
    as options to an ssh command line).
    """
    m = _SSH_RE.fullmatch(target.strip()) if isinstance(target, str) else None
    if not m or target.startswith("-") or (m["host"] or "").startswith("-"):
        raise ValueError(f"{target!r} is neither an ssh alias nor user@host[:port]")
    host = m["host"]
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{target!r} has {host!r} in brackets, which is not an IPv6 address") from None
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{target!r} has port {port}, outside 1-65535")
    return m["user"], host, port


def _ssh_target(v: Any) -> str:
    v = _text(v)
    try:
        parse_ssh_target(v)
    except ValueError as e:
        raise _Bad(str(e)) from None
    return v.strip()


def _iface(v: Any) -> str:
    v = _text(v)
    if not _NAME_RE.fullmatch(v):
        raise _Bad(f"{v!r} is not an interface name")
    return v


RING_ORDERS = ("config", "cabling")


def _ring_order(v: Any) -> str:
    v = _text(v)
    if v not in RING_ORDERS:
        close = difflib.get_close_matches(v, RING_ORDERS, n=1, cutoff=0.5)
        raise _Bad(f"{v!r} is not a ring order" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return v


def _choice(what: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        v = _text(v)
        if v not in choices:
            close = difflib.get_close_matches(v, choices, n=1, cutoff=0.5)
            raise _Bad(f"{v!r} is not {what}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return v

    return check


def _example(v: Any) -> str:
    v = _text(v)
    if v not in EXAMPLES:
        raise _Bad(f"{v!r} is not a built-in example")
    return v


# --- the format: YAML key -> (dataclass field, checker, what a valid value looks like) -----

Spec = dict[str, tuple[str, Callable[[Any], Any], str]]

SSH_KEYS: Spec = {
    "config_file": ("config_file", _opt_text, "a path such as ~/.ssh/config, or null to read none"),
    "known_hosts": (
        "known_hosts",
        _text,
        "a known_hosts path such as ~/.ssh/known_hosts (boltring always checks host keys)",
    ),
    "identity_files": ("identity_files", _text_list, "a list of key files such as [~/.ssh/id_ed25519]"),
    "connect_timeout": ("connect_timeout_s", _positive, "seconds to wait for an SSH connection, such as 10"),
    "keepalive_interval": ("keepalive_interval_s", _positive, "seconds between SSH keepalives, such as 15"),
    "keepalive_count_max": (
        "keepalive_count_max",
        _int_min(1),
        "how many unanswered keepalives drop a connection, such as 3",
    ),
}
RING_KEYS: Spec = {
    "port": ("port", _port, "a TCP port from 1024 to 65535 (a node's ranks use port, port+1, ...)"),
    "timeout": ("timeout_s", _positive, "seconds a collective may wait without progress, such as 60"),
    "connect_timeout": (
        "connect_timeout_s",
        _positive,
        "seconds ranks wait for their neighbours, such as 30",
    ),
    "bucket_mb": ("bucket_mb", _positive, "megabytes of gradients per averaging bucket, such as 32"),
    "chunk_mb": ("chunk_mb", _positive, "megabytes per frame on the wire, such as 4"),
    "order": (
        "order",
        _ring_order,
        "config (nodes in file order) or cabling (reordered to follow the Thunderbolt cables)",
    ),
    "backend": (
        "backend",
        _choice("a collective backend", BACKENDS),
        "boltring (our ring), mlx-ring (MLX's TCP ring) or jaccl (MLX's RDMA over Thunderbolt 5)",
    ),
    "wire_dtype": (
        "wire_dtype",
        _choice("a wire dtype", WIRE_DTYPES),
        "float32 (exact), bfloat16 or float16 (half the bytes; sums still accumulate in float32)",
    ),
}
NODE_KEYS: Spec = {
    "name": ("name", _name, "a unique name of letters, digits, '.', '_' or '-', such as mini1"),
    "ssh": ("ssh", _ssh_target, "an alias from ~/.ssh/config such as mini1, or user@host[:port]"),
    "local": ("local", _bool, "true to run this node's ranks on this machine without SSH, or false"),
    "ring_ip": ("ring_ip", _ip, "the node's Thunderbolt Bridge address such as 172.31.0.2"),
    "ring_iface": ("ring_iface", _iface, "a network interface name such as bridge0"),
    "python": (
        "python",
        _text,
        "the node's interpreter that can import mlx, such as ~/boltring/.venv/bin/python",
    ),
    "workdir": ("workdir", _text, "a directory on the node for runs and checkpoints, such as ~/boltring"),
    "ranks": ("ranks", _int_min(1), "how many ranks to start on this node, a whole number such as 1"),
    "chip": ("chip", _text, 'the chip name, such as "M4"'),
    "memory_gb": ("memory_gb", _positive, "the node's memory in GB, such as 16"),
    "role": ("role", _text, 'a free-form label such as "worker"'),
}
DEFAULT_KEYS: Spec = {k: v for k, v in NODE_KEYS.items() if k not in ("name", "ring_ip")}
JOB_KEYS: Spec = {
    "example": ("example", _example, f"one of {', '.join(EXAMPLES)} (or set script instead)"),
    "script": ("script", _text, "the path of a Python training script, relative to this config file"),
    "args": ("args", _text_list, "a list of text arguments such as [--hidden, '256']"),
    "steps": ("steps", _int_min(1), "a whole number of training steps, at least 1"),
    "seed": ("seed", _int_min(0), "a whole number, 0 or more"),
    "global_batch": (
        "global_batch",
        _int_min(1),
        "the batch size summed over all ranks, a positive whole number",
    ),
    "lr": ("learning_rate", _positive, "a positive learning rate such as 0.05"),
    "checkpoint_every": ("checkpoint_every", _int_min(0), "steps between checkpoints, or 0 for none"),
    "log_every": ("log_every", _int_min(1), "steps between metrics lines, at least 1"),
    "data": ("data", _text, "the path of the data file the example reads"),
    "module": ("module", _text, "an installed Python module run on every rank, like python -m NAME"),
    "keep_checkpoints": ("keep_checkpoints", _int_min(1), "how many newest checkpoints to keep, such as 3"),
    "allow_nonfinite": ("allow_nonfinite", _bool, "true to keep training when the loss becomes NaN or inf"),
    "restarts": ("restarts", _int_min(0), "how many times a failed job is relaunched, such as 0 or 2"),
    "restart_delay": ("restart_delay_s", _positive, "seconds to wait before a restart, such as 5"),
    "sync": ("sync", _text_list, "a list of local paths sent to every node before launch, such as [data/]"),
    "wandb": ("wandb", _text, "a Weights & Biases project name (rank 0 logs there when wandb is installed)"),
    "steps_per_eval": ("steps_per_eval", _int_min(0), "steps between validation passes, or 0 for none"),
}
SETUP_KEYS: Spec = {
    "wheelhouse": ("wheelhouse", _text, "a local folder of wheels for offline nodes, such as ./wheels"),
    "extras": ("extras", _text_list, "boltring extras to install on the nodes, such as [lm]"),
}
TOP_KEYS = ("name", "ssh", "ring", "defaults", "nodes", "job", "setup")
_SECTIONS = {
    "ssh": SSH_KEYS,
    "ring": RING_KEYS,
    "defaults": DEFAULT_KEYS,
    "job": JOB_KEYS,
    "setup": SETUP_KEYS,
}


def _unknown_key_hint(key: Any, valid: list[str], section: str) -> str:
    name = str(key)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    # Someone who knows the dataclasses may write a field name ("learning_rate" for "lr").
    spec = NODE_KEYS if section == "node" else _SECTIONS.get(section, {})
    for yaml_key, (field, _, _) in spec.items():
        if field == name:
            return f"did you mean {yaml_key!r}?"
    if section == "top":  # a section's key written at the top level
        homes = [f"{s}.{name}" for s, keys in _SECTIONS.items() if name in keys and s != "defaults"]
        if homes:
            return f"did you mean {' or '.join(homes)}?"
        if name in NODE_KEYS:
            return f"did you mean defaults.{name}, or {name} under a node?"
    return f"expected one of: {', '.join(valid)}"


def _check_keys(m: dict, at: Where, valid: list[str] | tuple[str, ...], section: str) -> None:
    for key in m:
        if key not in valid:
            where = at.child(m, key)
            if section == "defaults" and key in ("name", "ring_ip"):
                where.fail(f"{key} cannot have a default", f"{key} under each node (every node has its own)")
            raise ConfigError(
                where.source,
                where.line,
                where.path,
                f"unknown key {key!r}",
                _unknown_key_hint(key, list(valid), section),
            )


def _read(m: Any, at: Where, spec: Spec, section: str) -> dict[str, tuple[Any, Where]]:
    """Check a mapping against a spec: {field: (value, where)} for the keys it sets."""
    if m is None:  # "ring:" with every key commented out
        return {}
    if not isinstance(m, dict):
        at.fail(describe(m), f"a mapping of {', '.join(spec)}")
    _check_keys(m, at, tuple(spec), section)
    out = {}
    for key, value in m.items():
        field, check, expected = spec[key]
        where = at.child(m, key)
        out[field] = (_checked(check, value, where, expected), where)
    return out


def _checked(check: Callable[[Any], Any], value: Any, where: Where, expected: str) -> Any:
    try:
        return check(value)
    except _Bad as bad:
        if bad.index is not None:  # a list item: point at the item and its own line
            where = where.child(value, bad.index)
        where.fail(bad.problem, expected)


def _values(fields: dict[str, tuple[Any, Where]]) -> dict[str, Any]:
    return {f: v for f, (v, _) in fields.items()}


# --- building a Config --------------------------------------------------------------------


def default_name(source: str) -> str:
    """A config's name when it sets none: the file stem, made into a valid name."""
    stem = Path(source).stem if not source.startswith("<") else "boltring"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-") or "boltring"


def config_from_data(doc: Any, source: str, *, base_dir: Path | None = None) -> Config:
    """Validate parsed boltring data (plain dicts or LineMaps) and build the Config.

    `base_dir` is where a relative job.script is looked up (default: the file's directory).
    """
    top = Where(source, "", line_of(doc))  # None for plain data, which has no lines
    if not isinstance(doc, dict):
        what = "the file is empty" if doc is None else f"the file is not a mapping ({describe(doc)})"
        raise ConfigError(
            source,
            top.line,
            None,
            what,
            "expected a boltring config with a 'nodes' list (see configs/minis.yaml)",
        )
    _check_keys(doc, top, TOP_KEYS, "top")
    name = default_name(source)
    if "name" in doc:
        name = _checked(
            _name,
            doc["name"],
            top.child(doc, "name"),
            "a name of letters, digits, '.', '_' or '-', such as minis",
        )
    ssh = SshOptions(**_values(_read(doc.get("ssh"), top.child(doc, "ssh"), SSH_KEYS, "ssh")))
    ring = RingOptions(**_values(_read(doc.get("ring"), top.child(doc, "ring"), RING_KEYS, "ring")))
    nodes = _read_nodes(doc, top, ring)
    job_fields = _read(doc.get("job"), top.child(doc, "job"), JOB_KEYS, "job")
    job = _job(job_fields, base_dir or _base_dir(source))
    if "global_batch" in job_fields:
        _check_batch(job.global_batch, nodes, job_fields["global_batch"][1])
    else:  # the default 256 must divide too; point at the job section (or the nodes)
        line = line_of(doc, "job") or line_of(doc, "nodes") or top.line
        _check_batch(job.global_batch, nodes, Where(source, "job.global_batch", line), default=True)
    setup = SetupOptions(**_values(_read(doc.get("setup"), top.child(doc, "setup"), SETUP_KEYS, "setup")))
    return Config(name=name, nodes=tuple(nodes), job=job, ring=ring, ssh=ssh, setup=setup, source=source)


def _read_nodes(doc: dict, top: Where, ring: RingOptions) -> list[Node]:
    defaults = _read(doc.get("defaults"), top.child(doc, "defaults"), DEFAULT_KEYS, "defaults")
    shape = "a list of nodes, each with name and ring_ip, and ssh or local: true"
    if "nodes" not in doc:
        top.fail("there is no 'nodes' list", f"nodes: {shape}")
    at, items = top.child(doc, "nodes"), doc["nodes"]
    if not isinstance(items, list) or not items:
        at.fail("the list is empty" if items in (None, []) else describe(items), shape)
    built = [_node(item, at.child(items, i), defaults) for i, item in enumerate(items)]
    _check_nodes(built, ring)
    return [node for node, _ in built]


def _node(item: Any, at: Where, defaults: dict[str, tuple[Any, Where]]) -> tuple[Node, dict[str, Where]]:
    if not isinstance(item, dict):
        at.fail(describe(item), "a mapping with name, ring_ip and ssh (or local: true)")
    own = _read(item, at, NODE_KEYS, "node")
    if "name" not in own:
        at.fail("this node has no name", "name: a unique name such as mini1")
    name = own["name"][0]
    local = (own.get("local") or defaults.get("local") or (False, at))[0]
    # A default ssh target cannot apply to a local node: local means "no SSH".
    fields = {f: v for f, v in defaults.items() if not (local and f == "ssh")}
    fields.update(own)
    if local and "ssh" in fields:
        fields["ssh"][1].fail(
            f"node {name!r} is local, so it runs on this machine without SSH",
            "either local: true or ssh, not both",
        )
    if not local and "ssh" not in fields:
        at.fail(
            f"node {name!r} has neither ssh nor local: true",
            "ssh: an alias from ~/.ssh/config such as mini1 (or user@host), or local: true",
        )
    if "ring_ip" not in fields:
        if not local:
            at.fail(f"node {name!r} has no ring_ip", NODE_KEYS["ring_ip"][2])
        fields["ring_ip"] = ("127.0.0.1", at)
    if local and "python" not in fields:
        # The controller's own interpreter: it can import boltring, so the ranks can too.
        fields["python"] = (sys.executable, at)
    wheres = {f: w for f, (_, w) in fields.items()}
    wheres.setdefault("ranks", at)
    wheres[""] = at  # the node itself
    return Node(**_values(fields)), wheres


def _machine(node: Node) -> str:
    """Which machine a node runs on, as far as the config can tell."""
    if node.local:
        return "<this machine>"
    _, host, _ = parse_ssh_target(node.ssh or "")
    return "<this machine>" if host in LOCAL_HOSTS else (node.ssh or "")


def _at_text(where: Where) -> str:
    return f"{where.path}, line {where.line}" if where.line else where.path


def _check_nodes(built: list[tuple[Node, dict[str, Where]]], ring: RingOptions) -> None:
    names: dict[str, Where] = {}
    addresses: dict[Any, tuple[Node, Where]] = {}
    for node, w in built:
        if node.name in names:
            w["name"].fail(
                f"{node.name!r} is already the name of {_at_text(names[node.name])}", "a unique name per node"
            )
        names[node.name] = w[""]
        ip = ipaddress.ip_address(node.ring_ip)
        if ip in addresses:  # both would listen on ip:port, ip:port+1, ...
            other, other_at = addresses[ip]
            w["ring_ip"].fail(
                f"{node.ring_ip} is also the ring_ip of node {other.name!r} "
                f"({_at_text(other_at)}), so both would listen on {node.ring_ip}:{ring.port}",
                "one address per machine (use ranks: N to run several ranks on one)",
            )
        addresses[ip] = (node, w[""])
        last = ring.port + node.ranks - 1
        if last > 65535:
            w["ranks"].fail(
                f"{node.ranks} ranks from ring.port {ring.port} need ports up to {last}",
                "ring.port + ranks - 1 <= 65535 (lower ring.port or ranks)",
            )
    for node, w in built:
        if not ipaddress.ip_address(node.ring_ip).is_loopback:
            continue
        for other, _ in built:
            if _machine(other) != _machine(node):
                w["ring_ip"].fail(
                    f"{node.ring_ip} is a loopback address, which node {other.name!r} "
                    "on another machine cannot reach",
                    "this node's Thunderbolt Bridge address such as 172.31.0.1",
                )


def _job(fields: dict[str, tuple[Any, Where]], base_dir: Path) -> JobSpec:
    values = _values(fields)
    if "script" in fields:
        where = fields["script"][1]
        if "example" in fields:
            where.fail(
                f"set together with example {values['example']!r} ({_at_text(fields['example'][1])})",
                "either example or script, not both",
            )
        values["script"] = _resolve_script(values["script"], base_dir, where)
        values["example"] = None
    return JobSpec(**values)


def _resolve_script(script: str, base_dir: Path, where: Where) -> str:
    path = Path(script).expanduser()
    path = (path if path.is_absolute() else base_dir / path).resolve()
    if not path.is_file():
        where.fail(
            f"{script!r} is not a file (looked for {path})",
            "the path of a Python script on this machine, relative to the config file",
        )
    return str(path)


def _check_batch(
    global_batch: int,
    nodes: list[Node] | tuple[Node, ...],
    where: Where,
    *,
    default: bool = False,
    what: str = "",
) -> None:
    world = sum(n.ranks for n in nodes)
    if global_batch % world == 0:
        return
    lower = global_batch // world * world
    such_as = f"{lower} or {lower + world}" if lower else str(world)
    per_node = " + ".join(f"{n.ranks} on {n.name}" for n in nodes[:6]) + (" + ..." if len(nodes) > 6 else "")
    shown = f"{global_batch} (the default)" if default else str(global_batch)
    where.fail(
        f"{what}{shown} is not divisible by the world size {world} ({per_node})",
        f"a multiple of {world} such as {such_as}, so every rank gets the same share",
    )


# --- overrides from the command line ------------------------------------------------------


def with_overrides(
    config: Config,
    *,
    ranks: int | None = None,
    example: str | None = None,
    script: str | None = None,
    args: list[str] | tuple[str, ...] | None = None,
    steps: int | None = None,
    seed: int | None = None,
    global_batch: int | None = None,
) -> Config:
    """The config with command-line values applied and checked like the file's own."""

    def flag(name: str) -> Where:
        return Where("command line", name, None)

    nodes = config.nodes
    if ranks is not None:
        if len(nodes) != 1 or not nodes[0].local:
            raise ConfigError(
                "command line",
                None,
                None,
                "--ranks applies to the local default",
                "set ranks per node in the config",
            )
        ranks = _checked(_int_min(1), ranks, flag("--ranks"), "a whole number of ranks, at least 1")
        if config.ring.port + ranks - 1 > 65535:
            flag("--ranks").fail(
                f"{ranks} ranks from ring.port {config.ring.port} run past port 65535",
                "fewer ranks or a lower ring.port",
            )
        nodes = (dataclasses.replace(nodes[0], ranks=ranks),)
    if example is not None and script is not None:
        flag("--script").fail("given together with --example", "either --example or --script")
    changes: dict[str, Any] = {}
    if example is not None:
        changes.update(
            example=_checked(_example, example, flag("--example"), JOB_KEYS["example"][2]), script=None
        )
    if script is not None:
        text = _checked(_text, script, flag("--script"), "the path of a Python script")
        changes.update(script=_resolve_script(text, Path.cwd(), flag("--script")), example=None)
    if args is not None:
        changes["args"] = _checked(_text_list, list(args), flag("--args"), JOB_KEYS["args"][2])
    for key, value in (("steps", steps), ("seed", seed), ("global_batch", global_batch)):
        if value is not None:
            _, check, expected = JOB_KEYS[key]
            changes[key] = _checked(check, value, flag("--" + key.replace("_", "-")), expected)
    job = dataclasses.replace(config.job, **changes)
    if global_batch is not None:
        _check_batch(job.global_batch, nodes, flag("--global-batch"))
    elif ranks is not None:
        _check_batch(job.global_batch, nodes, flag("--ranks"), what="job.global_batch ")
    return dataclasses.replace(config, nodes=nodes, job=job)


# --- reading files ------------------------------------------------------------------------


def detect_format(data: Any) -> str:
    """ "boltring", "mlx-hostfile", "smolcluster" or "jupiter", judged by the keys present."""
    if isinstance(data, list):
        hosts = all(isinstance(h, dict) for h in data) and any({"ssh", "ips"} & set(h) for h in data)
        return "mlx-hostfile" if data and hosts else "boltring"
    if not isinstance(data, dict):
        return "boltring"  # which reports what is wrong with it
    keys = set(data)
    if "nodes" not in keys:
        if "hosts" in keys:
            return "mlx-hostfile"
        nested_host_ip = any(isinstance(v, dict) and "host_ip" in v for v in data.values())
        if (
            keys & {"host_ip", "allToAllTopology", "ringTopology"}
            or {"server", "workers"} <= keys
            or nested_host_ip
        ):
            return "smolcluster"
    if keys & {
        "use_thunderbolt_bridge",
        "sync_every_n_steps",
        "gradient_compression",
        "checkpoint_on_failure",
        "auto_restart_failed_nodes",
        "network_interface",
    }:
        return "jupiter"
    nodes = data.get("nodes")
    if isinstance(nodes, list):
        node_keys = {k for n in nodes if isinstance(n, dict) for k in n}
        if node_keys & {
            "host",
            "device_type",
            "connection_type",
            "ssh_user",
            "ssh_port",
            "can_generate",
            "can_train",
        } and not node_keys & {"ssh", "local", "ring_iface", "python", "workdir", "ranks"}:
            return "jupiter"
    return "boltring"


def _parse(text: str, source: str) -> Any:
    """JSON (an MLX hostfile) or YAML; JSON is re-read as YAML, its superset, to learn lines."""
    if text.lstrip()[:1] in ("[", "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return parse_yaml(text, source)  # a YAML flow mapping, or broken JSON: YAML says where
        try:
            located = parse_yaml(text, source)
        except ConfigError:
            return data
        return located if located == data else data
    return parse_yaml(text, source)


def _base_dir(source: str) -> Path:
    return Path.cwd() if source.startswith("<") else Path(source).expanduser().resolve().parent


def _load_text(text: str, source: str, base_dir: Path | None) -> tuple[Config, ImportReport | None]:
    data = _parse(text, source)
    fmt = detect_format(data)
    if fmt == "boltring":
        return config_from_data(data, source, base_dir=base_dir), None
    from boltring.cluster.config import importers

    return importers.IMPORTERS[fmt](data, source)


def load_config_text(text: str, source: str = "<text>", *, base_dir: Path | None = None) -> Config:
    """A Config from text in any supported format (`source` names it in errors)."""
    return _load_text(text, source, base_dir)[0]


def load_config(path: str | Path | None = None, *, cwd: Path | None = None) -> Config:
    """The config at `path`; without one, ./boltring.yaml or else the embedded local default."""
    return load_config_with_report(path, cwd=cwd)[0]


def load_config_with_report(
    path: str | Path | None = None, *, cwd: Path | None = None
) -> tuple[Config, ImportReport | None]:
    """Like load_config, plus what an importer mapped and ignored (None for boltring YAML)."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    if path is None:
        candidate = base / CONFIG_FILENAME
        if not candidate.exists():
            text = resources.files("boltring.configs").joinpath("local.yaml").read_text(encoding="utf-8")
            return _load_text(text, EMBEDDED_SOURCE, base)
        file, shown = candidate, CONFIG_FILENAME if cwd is None else str(candidate)
    else:
        file, shown = Path(path).expanduser(), str(path)
        file = file if file.is_absolute() else base / file
    config, report = _load_text(_read_file(file, shown), shown, file.resolve().parent)
    return dataclasses.replace(config, source=str(file.resolve())), report


def _read_file(file: Path, shown: str) -> str:
    formats = "a boltring.yaml, an MLX hostfile, a smolcluster cluster_config.yaml or a jupiter cluster.yaml"
    try:
        return file.read_text(encoding="utf-8-sig")  # -sig: editors on macOS may add a BOM
    except FileNotFoundError:
        raise ConfigError(shown, None, None, "no such file", f"expected {formats}") from None
    except IsADirectoryError:
        raise ConfigError(shown, None, None, "is a directory", f"expected {formats}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            shown, None, None, f"is not UTF-8 text ({e.reason} at byte {e.start})", f"expected {formats}"
        ) from None
    except OSError as e:
        raise ConfigError(
            shown, None, None, f"cannot be read ({e.strerror})", f"expected {formats}"
        ) from None
