"""Find and load a config (a boltring.yaml, or a file from a tool our users come from), and
apply command-line overrides.

Everything is checked before anything starts: `validate.py` reports every problem it finds
(ConfigError, or ConfigErrors for several), each one line naming the file, the line, the key
and what a valid value looks like. Foreign formats are recognised by `formats/` (each
format's `sniff()`) and translated into the same key/value shape, then validated by the same
code. Reading is bounded (`located.MAX_FILE_BYTES`, `located.MAX_VALUES`,
`validate.MAX_NODES`).
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path
from typing import Any

from boltring.cluster.config import formats
from boltring.cluster.config import values as v
from boltring.cluster.config.formats import ImportReport, detect_format
from boltring.cluster.config.located import MAX_FILE_BYTES, ConfigError, Where, check_size, parse_yaml
from boltring.cluster.config.schema import Config
from boltring.cluster.config.validate import (
    JOB_KEYS,
    base_dir_of,
    check_batch,
    checked,
    config_from_data,
    resolve_script,
)

CONFIG_FILENAME = "boltring.yaml"
EMBEDDED_SOURCE = "<embedded local.yaml>"
_FORMATS_TEXT = (
    "a boltring.yaml, an MLX hostfile, a smolcluster cluster_config.yaml or a jupiter cluster.yaml"
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
        ranks = checked(v.int_min(1), ranks, flag("--ranks"), "a whole number of ranks, at least 1")
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
        key = JOB_KEYS["example"]
        changes.update(example=checked(key.check, example, flag("--example"), key.expected), script=None)
    if script is not None:
        text = checked(v.text, script, flag("--script"), "the path of a Python script")
        script = resolve_script(text, Path.cwd(), flag("--script"), relative_to="the current folder")
        changes.update(script=script, example=None)
    if args is not None:
        changes["args"] = checked(v.text_list, list(args), flag("--args"), JOB_KEYS["args"].expected)
    for name, value in (("steps", steps), ("seed", seed), ("global_batch", global_batch)):
        if value is not None:
            key = JOB_KEYS[name]
            changes[name] = checked(key.check, value, flag("--" + name.replace("_", "-")), key.expected)
    # a value given here is the user's, even when it equals a default: an lm job's own
    # -- --iters / --batch-size then no longer replace it (lm_flags.with_lm_flags)
    if steps is not None:
        changes["steps_default"] = None
    if global_batch is not None:
        changes.update(global_batch_is_default=False, global_batch_default=None)
    elif ranks is not None and config.job.global_batch_is_default:
        changes.update(global_batch=None, global_batch_is_default=False)  # Config re-resolves it for --ranks
    job = dataclasses.replace(config.job, **changes)
    if global_batch is not None:
        check_batch(global_batch, nodes, flag("--global-batch"))
    elif ranks is not None and job.global_batch is not None:
        check_batch(
            job.global_batch,
            nodes,
            flag("--ranks"),
            what="job.global_batch ",
            fix=" (pass it as --global-batch)",
        )
    return dataclasses.replace(config, nodes=nodes, job=job)


# --- reading files ------------------------------------------------------------------------


def _parse(text: str, source: str) -> Any:
    """JSON (an MLX hostfile) or YAML; JSON is re-read as YAML, its superset, to learn lines."""
    check_size(len(text.encode("utf-8", "surrogatepass")), source)
    if text.lstrip()[:1] in ("[", "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return parse_yaml(text, source)  # a YAML flow mapping, or broken JSON: YAML says where
        except RecursionError:
            return parse_yaml(text, source)  # which says "nested too deeply"
        try:
            located = parse_yaml(text, source)
        except ConfigError:
            return data
        return located if located == data else data
    return parse_yaml(text, source)


def _load_text(text: str, source: str, base_dir: Path | None) -> tuple[Config, ImportReport | None]:
    data = _parse(text, source)
    fmt = detect_format(data)
    if fmt == formats.BOLTRING:
        return config_from_data(data, source, base_dir=base_dir), None
    return formats.READERS[fmt](data, source)


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
    elif not str(path).strip():  # Path("") is ".", which would be read as "is a directory"
        raise ConfigError(
            "--config", None, None, "the config path is empty", f"give the path of {_FORMATS_TEXT}"
        )
    else:
        file, shown = Path(path).expanduser(), str(path)
        file = file if file.is_absolute() else base / file
    config, report = _load_text(_read_file(file, shown), shown, file.resolve().parent)
    return dataclasses.replace(config, source=str(file.resolve())), report


def _read_file(file: Path, shown: str) -> str:
    try:
        with file.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # never more: a 50 MB file is refused unread
            if len(data) > MAX_FILE_BYTES:
                check_size(max(len(data), _size(file)), shown)
        return data.decode("utf-8-sig")  # -sig: editors on macOS may add a BOM
    except FileNotFoundError:
        raise ConfigError(shown, None, None, "no such file", f"expected {_FORMATS_TEXT}") from None
    except IsADirectoryError:
        raise ConfigError(shown, None, None, "is a directory", f"expected {_FORMATS_TEXT}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            shown,
            None,
            None,
            f"is not UTF-8 text ({e.reason} at byte {e.start})",
            f"expected {_FORMATS_TEXT}",
        ) from None
    except OSError as e:
        raise ConfigError(
            shown, None, None, f"cannot be read ({e.strerror})", f"expected {_FORMATS_TEXT}"
        ) from None


def _size(file: Path) -> int:
    try:
        return file.stat().st_size
    except OSError:
        return 0


__all__ = [
    "CONFIG_FILENAME",
    "EMBEDDED_SOURCE",
    "ConfigError",
    "ImportReport",
    "base_dir_of",
    "detect_format",
    "load_config",
    "load_config_text",
    "load_config_with_report",
    "with_overrides",
]
