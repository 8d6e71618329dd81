"""YAML with line numbers, read within bounds, and the error that names file:line:key.

YAML is read with `yaml.compose` (the safe loader's node graph) rather than `safe_load`,
because only the nodes still know which line each key and value came from. Containers become
`LineMap`/`LineList`, which keep those lines; `Where` is the place of one value, and its
`fail()` raises the one-line `ConfigError`.

Reading is bounded, because a config may come from anywhere (issue 12): the file is at most
`MAX_FILE_BYTES`, and the values it expands to (aliases included) at most `MAX_VALUES`, which
is checked on the node graph before anything is built, so an alias bomb costs microseconds.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any, NoReturn

import yaml
from yaml.constructor import SafeConstructor

from boltring.cluster.errors import BoltringError

MAX_FILE_BYTES = 1_000_000  # a config for hundreds of nodes is a few tens of kB
MAX_VALUES = 100_000  # values after alias expansion; a 1 MB file without aliases stays below
MAX_SHOWN = 10  # errors shown at once

# libyaml's parser when PyYAML has it: 7x faster on a 1 MB file, same node graph and marks
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# YAML 1.1 reads 3e-4 as text (it wants a dot: 3.0e-4); YAML 1.2 and every user read a number
_EXPONENT_FLOAT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+")
_STR_TAG = "tag:yaml.org,2002:str"


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

    @property
    def errors(self) -> list[ConfigError]:
        """Every error this one stands for (itself; several for ConfigErrors)."""
        return [self]


class ConfigErrors(ConfigError):
    """Several config errors found in one pass: one line each, at most MAX_SHOWN of them.

    A ConfigError itself (the first error's source, line, key and problem), so code that
    catches ConfigError and reads those still works; `errors` holds all of them.
    """

    def __init__(self, errors: Sequence[ConfigError]):
        first = errors[0]
        super().__init__(first.source, first.line, first.key, first.problem, first.hint)
        self._errors = list(errors)
        lines = [e.message for e in self._errors[:MAX_SHOWN]]
        if len(self._errors) > MAX_SHOWN:
            lines.append(
                f"{first.source}: {len(self._errors) - MAX_SHOWN} more errors not shown; fix these first"
            )
        self.message = "\n".join(lines)
        self.args = (self.message,)

    @property
    def errors(self) -> list[ConfigError]:
        return list(self._errors)

    @staticmethod
    def of(errors: Sequence[ConfigError]) -> ConfigError:
        """The one error, or all of them together."""
        return errors[0] if len(errors) == 1 else ConfigErrors(errors)


# --- containers that remember lines -------------------------------------------------------


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


# --- the bounded loader -------------------------------------------------------------------


def check_size(size: int, source: str) -> None:
    """Refuse a file over MAX_FILE_BYTES before reading (or parsing) it."""
    if size > MAX_FILE_BYTES:
        raise ConfigError(
            source,
            None,
            None,
            f"is {size / 1e6:.1f} MB, more than the {MAX_FILE_BYTES // 1_000_000} MB a config may have",
            "expected a config file (a few kB lists hundreds of nodes)",
        )


def parse_yaml(text: str, source: str) -> Any:
    """Parse one YAML document into plain values, with LineMap/LineList for containers."""
    check_size(len(text.encode("utf-8", "surrogatepass")), source)
    try:
        root = yaml.compose(text, Loader=_LOADER)
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
    if root is None:
        return None
    try:
        _check_expansion(root, source)
        return _from_node(root, source, SafeConstructor(), set(), "")
    except RecursionError:
        raise ConfigError(
            source, None, "YAML syntax", "nested too deeply", "expected a config file"
        ) from None


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Refuse a document whose aliases expand past MAX_VALUES, counting on the node graph.

    Each node's expanded size is computed once (aliases share nodes), so "billion laughs"
    costs as many steps as it has lines. A cycle ("&a [*a]") is left to _from_node to report.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active or isinstance(node, yaml.ScalarNode):
            return 1
        active.add(key)
        children = (
            node.value if isinstance(node, yaml.SequenceNode) else [v for pair in node.value for v in pair]
        )
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_VALUES:
                break
        active.discard(key)
        sizes[key] = total
        return total

    total = size(root)
    if total > MAX_VALUES:
        raise ConfigError(
            source,
            None,
            "YAML aliases",
            f"the document expands to more than {MAX_VALUES:,} values (anchors repeated by aliases)",
            "expected a config without aliases that multiply each other",
        )


def _scalar(node: yaml.ScalarNode, cons: SafeConstructor) -> Any:
    if node.tag == _STR_TAG and not node.style and _EXPONENT_FLOAT.fullmatch(node.value):
        return float(
            node.value
        )  # plain 3e-4 (style None, or '' from libyaml): a number, as YAML 1.2 reads it
    return cons.construct_object(node)


def _from_node(node: yaml.Node, source: str, cons: SafeConstructor, active: set[int], path: str) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode):
        try:
            return _scalar(node, cons)
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
        assert isinstance(node, yaml.MappingNode)
        return _mapping(node, source, cons, active, path, line)
    finally:
        active.discard(id(node))


def _mapping(
    node: yaml.MappingNode, source: str, cons: SafeConstructor, active: set[int], path: str, line: int
) -> LineMap:
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
        mapping.put(key, _from_node(value_node, source, cons, active, key_path), key_node.start_mark.line + 1)
    return mapping
