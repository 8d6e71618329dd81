"""Validate parsed config data (LineMaps from a file, or an importer's draft) into a Config.

Validation goes on after an error, so the user sees every problem at once (up to
`located.MAX_SHOWN`, one line each): each key, each node and each cross-check is checked on
its own, and what fails is left out of the result, which is then never built. The keys of
each section, their checkers and their "expected" texts come from the dataclass fields in
`schema.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import ipaddress
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from boltring.cluster.config import values as v
from boltring.cluster.config.located import ConfigError, ConfigErrors, Where, line_of
from boltring.cluster.config.schema import (
    Config,
    JobSpec,
    Key,
    Node,
    RingOptions,
    SetupOptions,
    SshOptions,
    keys_of,
)
from boltring.cluster.config.ssh_target import LOCAL_HOSTS, parse_ssh_target

MAX_NODES = 1024  # nodes in one config; Thunderbolt clusters have a handful
BUILT_IN_SOURCE = "<embedded local.yaml>"  # load.EMBEDDED_SOURCE (load imports this module)

Spec = dict[str, Key]

SSH_KEYS: Spec = keys_of(SshOptions)
RING_KEYS: Spec = keys_of(RingOptions)
NODE_KEYS: Spec = keys_of(Node)
DEFAULT_KEYS: Spec = {k: key for k, key in NODE_KEYS.items() if k not in ("name", "ring_ip")}
JOB_KEYS: Spec = keys_of(JobSpec)
SETUP_KEYS: Spec = keys_of(SetupOptions)
TOP_KEYS = ("name", "ssh", "ring", "defaults", "nodes", "job", "setup")
_SECTIONS = {
    "ssh": SSH_KEYS,
    "ring": RING_KEYS,
    "defaults": DEFAULT_KEYS,
    "job": JOB_KEYS,
    "setup": SETUP_KEYS,
}
_NAME_EXPECTED = "a name of letters, digits, '.', '_' or '-', such as minis"


class Problems:
    """The errors found so far; `collect()` records one and lets validation go on."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    @contextlib.contextmanager
    def collect(self) -> Iterator[None]:
        try:
            yield
        except ConfigError as e:
            self.errors.extend(x for x in e.errors if x.message not in {y.message for y in self.errors})

    def raise_any(self) -> None:
        if self.errors:
            raise ConfigErrors.of(self.errors)


# --- keys and values ----------------------------------------------------------------------


def _unknown_key_hint(key: Any, valid: list[str], section: str) -> str:
    name = str(key)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    # Someone who knows the dataclasses may write a field name ("learning_rate" for "lr").
    spec = NODE_KEYS if section == "node" else _SECTIONS.get(section, {})
    for yaml_key, key_spec in spec.items():
        if key_spec.field == name:
            return f"did you mean {yaml_key!r}?"
    if section == "top":  # a section's key written at the top level
        homes = [f"{s}.{name}" for s, keys in _SECTIONS.items() if name in keys and s != "defaults"]
        if homes:
            return f"did you mean {' or '.join(homes)}?"
        if name in NODE_KEYS:
            return f"did you mean defaults.{name}, or {name} under a node?"
    return f"expected one of: {', '.join(valid)}"


def _check_keys(
    m: dict, at: Where, valid: list[str] | tuple[str, ...], section: str, problems: Problems
) -> None:
    for key in m:
        if key in valid:
            continue
        where = at.child(m, key)
        with problems.collect():
            if section == "defaults" and key in ("name", "ring_ip"):
                where.fail(f"{key} cannot have a default", f"{key} under each node (every node has its own)")
            raise ConfigError(
                where.source,
                where.line,
                where.path,
                f"unknown key {key!r}",
                _unknown_key_hint(key, list(valid), section),
            )


def _read(m: Any, at: Where, spec: Spec, section: str, problems: Problems) -> dict[str, tuple[Any, Where]]:
    """Check a mapping against a spec: {field: (value, where)} for the keys it sets well."""
    if m is None:  # "ring:" with every key commented out
        return {}
    if not isinstance(m, dict):
        with problems.collect():
            at.fail(v.describe(m), f"a mapping of {', '.join(spec)}")
        return {}
    _check_keys(m, at, tuple(spec), section, problems)
    out = {}
    for key, value in m.items():
        if key not in spec:
            continue
        k = spec[key]
        where = at.child(m, key)
        with problems.collect():
            out[k.field] = (checked(k.check, value, where, k.expected), where)
    return out


def checked(check: Callable[[Any], Any], value: Any, where: Where, expected: str) -> Any:
    """check(value), or the ConfigError that says where it is and what is expected."""
    try:
        return check(value)
    except v.Bad as bad:
        if bad.index is not None:  # a list item: point at the item and its own line
            where = where.child(value, bad.index)
        where.fail(bad.problem, expected)


def _values(fields: dict[str, tuple[Any, Where]]) -> dict[str, Any]:
    return {f: value for f, (value, _) in fields.items()}


# --- building a Config --------------------------------------------------------------------


def default_name(source: str) -> str:
    """A config's name when it sets none: the file stem, made into a valid name."""
    stem = Path(source).stem if not source.startswith("<") else "boltring"
    return v.to_name(stem) or "boltring"


def config_from_data(doc: Any, source: str, *, base_dir: Path | None = None) -> Config:
    """Validate parsed boltring data (plain dicts or LineMaps) and build the Config.

    `base_dir` is where a relative job.script is looked up (default: the file's directory).
    Raises ConfigError for one problem, ConfigErrors (a ConfigError) for several.
    """
    top = Where(source, "", line_of(doc))  # None for plain data, which has no lines
    if not isinstance(doc, dict):
        what = "the file is empty" if doc is None else f"the file is not a mapping ({v.describe(doc)})"
        raise ConfigError(
            source,
            top.line,
            None,
            what,
            "expected a boltring config with a 'nodes' list (see configs/minis.yaml)",
        )
    problems = Problems()
    _check_keys(doc, top, TOP_KEYS, "top", problems)
    name = default_name(source)
    if "name" in doc:
        with problems.collect():
            name = checked(v.name, doc["name"], top.child(doc, "name"), _NAME_EXPECTED)

    def section(key: str, spec: Spec) -> dict[str, tuple[Any, Where]]:
        return _read(doc.get(key), top.child(doc, key), spec, key, problems)

    ssh = SshOptions(**_values(section("ssh", SSH_KEYS)))
    ring = RingOptions(**_values(section("ring", RING_KEYS)))
    nodes = _read_nodes(doc, top, ring, problems)
    job_fields = section("job", JOB_KEYS)
    job = JobSpec()
    with problems.collect():
        job = _job(job_fields, base_dir or base_dir_of(source))
    job = _note_defaults(job, job_fields, source)
    if nodes and "global_batch" in job_fields:  # unset, it is a per-rank default: always divides
        with problems.collect():
            check_batch(job_fields["global_batch"][0], nodes, job_fields["global_batch"][1])
    setup = SetupOptions(**_values(section("setup", SETUP_KEYS)))
    problems.raise_any()
    assert nodes is not None  # no problems: every node was built
    return Config(name=name, nodes=tuple(nodes), job=job, ring=ring, ssh=ssh, setup=setup, source=source)


def base_dir_of(source: str) -> Path:
    return Path.cwd() if source.startswith("<") else Path(source).expanduser().resolve().parent


def _read_nodes(doc: dict, top: Where, ring: RingOptions, problems: Problems) -> list[Node] | None:
    """The nodes, or None when they or their defaults have a problem (recorded in `problems`)."""
    before = len(problems.errors)
    defaults = _read(doc.get("defaults"), top.child(doc, "defaults"), DEFAULT_KEYS, "defaults", problems)
    shape = "a list of nodes, each with name and ring_ip, and ssh or local: true"
    if "nodes" not in doc:
        if all(key in TOP_KEYS for key in doc):  # else a misspelt "nodes" was reported as unknown
            with problems.collect():
                top.fail("there is no 'nodes' list", f"nodes: {shape}")
        return None
    at, items = top.child(doc, "nodes"), doc["nodes"]
    with problems.collect():
        if not isinstance(items, list) or not items:
            at.fail("the list is empty" if items in (None, []) else v.describe(items), shape)
        if len(items) > MAX_NODES:  # refused before any node is checked
            at.fail(f"lists {len(items):,} nodes, more than {MAX_NODES}", f"at most {MAX_NODES} nodes")
    if not isinstance(items, list) or not 0 < len(items) <= MAX_NODES:
        return None
    built = []
    for i, item in enumerate(items):
        with problems.collect():
            node = _node(item, at.child(items, i), defaults, problems)
            if node is not None:
                built.append(node)
    if len(problems.errors) > before:
        return None
    _check_nodes(built, ring, problems)
    return None if len(problems.errors) > before else [node for node, _ in built]


def _node(
    item: Any, at: Where, defaults: dict[str, tuple[Any, Where]], problems: Problems
) -> tuple[Node, dict[str, Where]] | None:
    if not isinstance(item, dict):
        at.fail(v.describe(item), "a mapping with name, ring_ip and ssh (or local: true)")
    before = len(problems.errors)
    own = _read(item, at, NODE_KEYS, "node", problems)
    if len(problems.errors) > before:  # a misspelt or wrong key: what follows would only echo it
        return None
    if "name" not in own:
        at.fail("this node has no name", "name: a unique name such as mini1")
    name = own["name"][0]
    local = (own.get("local") or defaults.get("local") or (False, at))[0]
    # A default ssh target cannot apply to a local node: local means "no SSH".
    fields = {f: value for f, value in defaults.items() if not (local and f == "ssh")}
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
            at.fail(f"node {name!r} has no ring_ip", NODE_KEYS["ring_ip"].expected)
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


def _check_nodes(built: list[tuple[Node, dict[str, Where]]], ring: RingOptions, problems: Problems) -> None:
    names: dict[str, Where] = {}
    addresses: dict[Any, tuple[Node, Where]] = {}
    for node, w in built:
        with problems.collect():
            if node.name in names:
                w["name"].fail(
                    f"{node.name!r} is already the name of {_at_text(names[node.name])}",
                    "a unique name per node",
                )
            names[node.name] = w[""]
        with problems.collect():
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
            with problems.collect():
                w["ranks"].fail(
                    f"{node.ranks} ranks from ring.port {ring.port} need ports up to {last}",
                    "ring.port + ranks - 1 <= 65535 (lower ring.port or ranks)",
                )
    for node, w in built:
        if not ipaddress.ip_address(node.ring_ip).is_loopback:
            continue
        other = next((o for o, _ in built if _machine(o) != _machine(node)), None)
        if other is not None:  # said once: every loopback node would repeat it
            with problems.collect():
                w["ring_ip"].fail(
                    f"{node.ring_ip} is a loopback address, which node {other.name!r} "
                    "on another machine cannot reach",
                    "this node's Thunderbolt Bridge address such as 172.31.0.1",
                )
            return


def _note_defaults(job: JobSpec, fields: dict[str, tuple[Any, Where]], source: str) -> JobSpec:
    """Record which of steps and global_batch came from a default rather than from the user: the
    keys the file leaves out, and every key of boltring's embedded default config (its charlm
    values are not the user's, so `--example lm -- --batch-size 4` is not refused for its 240)."""
    embedded = source == BUILT_IN_SOURCE
    changes = {
        f"{name}_default": getattr(job, name)
        for name in ("steps", "global_batch")
        if embedded or name not in fields
    }
    return dataclasses.replace(job, **changes) if changes else job


def _job(fields: dict[str, tuple[Any, Where]], base_dir: Path) -> JobSpec:
    values = _values(fields)
    if "script" in fields:
        where = fields["script"][1]
        if "example" in fields:
            where.fail(
                f"set together with example {values['example']!r} ({_at_text(fields['example'][1])})",
                "either example or script, not both",
            )
        values["script"] = resolve_script(values["script"], base_dir, where)
        values["example"] = None
    return JobSpec(**values)


def resolve_script(script: str, base_dir: Path, where: Where, *, relative_to: str = "the config file") -> str:
    """The script's absolute path; a relative one is taken from base_dir, which the hint names
    (the config file's folder for job.script, the current folder for --script)."""
    path = Path(script).expanduser()
    path = (path if path.is_absolute() else base_dir / path).resolve()
    if not path.is_file():
        where.fail(
            f"{script!r} is not a file (looked for {path})",
            f"the path of a Python script on this machine, relative to {relative_to}",
        )
    return str(path)


def check_batch(
    global_batch: int, nodes: list[Node] | tuple[Node, ...], where: Where, *, what: str = "", fix: str = ""
) -> None:
    """`fix`: what to change where the batch came from elsewhere (--ranks changed the world
    size under the config's global_batch), after "expected … such as A or B"."""
    world = sum(n.ranks for n in nodes)
    if global_batch % world == 0:
        return
    lower = global_batch // world * world
    such_as = f"{lower} or {lower + world}" if lower else str(world)
    per_node = " + ".join(f"{n.ranks} on {n.name}" for n in nodes[:6]) + (" + ..." if len(nodes) > 6 else "")
    where.fail(
        f"{what}{global_batch} is not divisible by the world size {world} ({per_node})",
        f"a multiple of {world} such as {such_as}, so every rank gets the same share{fix}",
    )
