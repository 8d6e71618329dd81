"""The boltring YAML loader: defaults, every validation error's file:line:key, overrides."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import textwrap
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boltring.cluster.config import (
    EMBEDDED_SOURCE,
    ConfigError,
    ConfigErrors,
    formats,
    load_config,
    load_config_text,
    load_config_with_report,
    parse_ssh_target,
    values,
    with_overrides,
)
from boltring.cluster.config import load as load_module
from boltring.cluster.config.located import MAX_FILE_BYTES
from boltring.cluster.config.schema import (
    DEFAULT_BATCH_PER_RANK,
    DEFAULT_RING_PORT,
    JobSpec,
    Node,
    RingOptions,
    SetupOptions,
    SshOptions,
    default_global_batch,
    keys_of,
)
from boltring.cluster.config.validate import JOB_KEYS, MAX_NODES, NODE_KEYS, RING_KEYS, SETUP_KEYS, SSH_KEYS
from boltring.tui import cli

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "formats"


def write(tmp_path: Path, text: str, name: str = "boltring.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def error(tmp_path: Path, text: str) -> ConfigError:
    """Load text as ./boltring.yaml (relative, so messages start with "boltring.yaml:")."""
    write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config("boltring.yaml", cwd=tmp_path)
    message = str(info.value)
    assert "\n" not in message and message.startswith("boltring.yaml")
    return info.value


# --- the files we ship ----------------------------------------------------------------------


def test_embedded_default_loads_from_the_package(tmp_path):
    config, report = load_config_with_report(cwd=tmp_path)  # tmp_path has no boltring.yaml
    assert report is None
    assert config.source == EMBEDDED_SOURCE
    assert config.name == "local"
    assert config.world_size == 2
    (node,) = config.nodes
    assert node.local and node.ssh is None and node.ring_ip == "127.0.0.1" and node.ranks == 2
    assert node.python == sys.executable  # the controller's own interpreter
    assert (config.job.example, config.job.steps, config.job.global_batch) == ("charlm", 300, 240)
    assert config.job.learning_rate is None  # each example's own default
    assert [s.ring_addr for s in config.rank_layout()] == [
        f"127.0.0.1:{DEFAULT_RING_PORT}",
        f"127.0.0.1:{DEFAULT_RING_PORT + 1}",
    ]
    packaged = resources.files("boltring.configs").joinpath("local.yaml").read_text(encoding="utf-8")
    assert "sys.executable" in packaged  # the comment explains the python default


def test_boltring_yaml_in_cwd_wins_over_the_default(tmp_path):
    write(
        tmp_path,
        """
        nodes:
          - {name: here, local: true, ranks: 3}
        job: {global_batch: 30}
    """,
    )
    config = load_config(cwd=tmp_path)
    assert config.name == "boltring" and config.world_size == 3
    assert config.source == str((tmp_path / "boltring.yaml").resolve())


def test_minis_example_loads():
    minis = resources.files("boltring.configs").joinpath("minis.yaml")
    config = load_config(Path(str(minis)))
    assert config.name == "minis"
    assert [n.name for n in config.nodes] == ["mini1", "mini2", "mini3"]
    assert [n.ring_ip for n in config.nodes] == ["172.31.0.1", "172.31.0.2", "172.31.0.3"]
    for node in config.nodes:
        assert node.ssh == node.name and not node.local
        assert node.python == "~/boltring/.venv/bin/python" and node.workdir == "~/boltring"
        assert node.ring_iface == "bridge0" and node.chip == "M4" and node.memory_gb == 16
    assert config.job.example == "charlm" and config.world_size == 3
    assert config.job.global_batch % config.world_size == 0
    assert config.ssh.known_hosts == "~/.ssh/known_hosts"


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config("nowhere/cluster.yaml", cwd=tmp_path)
    assert str(info.value).startswith("nowhere/cluster.yaml: no such file; expected a boltring.yaml")


def test_full_format_maps_every_key(tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    path = write(
        tmp_path,
        """
        name: lab
        ssh:
          config_file: null
          known_hosts: ~/kh
          identity_files: [~/.ssh/id_lab]
          connect_timeout: 4
          keepalive_interval: 2.5
          keepalive_count_max: 5
        ring:
          port: 40000
          timeout: 12
          connect_timeout: 7
          bucket_mb: 8
          chunk_mb: 1
        defaults:
          python: /opt/py/bin/python
          workdir: ~/w
          ranks: 2
          role: worker
        nodes:
          - name: ctl
            local: true
            ring_ip: 10.1.0.9      # mixed local and ssh: the controller joins over its bridge
            ranks: 1
          - name: m1
            ssh: me@m1.local:2222
            ring_ip: 10.1.0.1
            ring_iface: bridge0
            chip: M4 Pro
            memory_gb: 24
        job:
          script: train.py
          args: [--width, "64"]
          steps: 10
          seed: 3
          global_batch: 9
          lr: 1
          checkpoint_every: 5
          log_every: 2
          data: corpus.txt
    """,
    )
    c = load_config(path)
    assert c.name == "lab"
    assert (c.ssh.config_file, c.ssh.known_hosts, c.ssh.identity_files) == (None, "~/kh", ("~/.ssh/id_lab",))
    assert (c.ssh.connect_timeout_s, c.ssh.keepalive_interval_s, c.ssh.keepalive_count_max) == (4.0, 2.5, 5)
    assert (c.ring.port, c.ring.timeout_s, c.ring.connect_timeout_s, c.ring.bucket_mb, c.ring.chunk_mb) == (
        40000,
        12.0,
        7.0,
        8.0,
        1.0,
    )
    ctl, m1 = c.nodes
    assert ctl.local and ctl.ranks == 1 and ctl.python == "/opt/py/bin/python" and ctl.ssh is None
    assert m1.ssh == "me@m1.local:2222" and m1.ranks == 2 and m1.workdir == "~/w" and m1.role == "worker"
    assert (m1.chip, m1.memory_gb, m1.ring_iface) == ("M4 Pro", 24.0, "bridge0")
    assert c.world_size == 3
    assert c.job.script == str((tmp_path / "train.py").resolve()) and c.job.example is None
    assert c.job.args == ("--width", "64") and c.job.learning_rate == 1.0
    assert (
        c.job.steps,
        c.job.seed,
        c.job.global_batch,
        c.job.checkpoint_every,
        c.job.log_every,
        c.job.data,
    ) == (10, 3, 9, 5, 2, "corpus.txt")


def test_script_is_resolved_against_the_config_directory(tmp_path, monkeypatch):
    sub = tmp_path / "project"
    sub.mkdir()
    (sub / "train.py").write_text("")
    path = write(
        sub,
        """
        nodes: [{name: a, local: true}]
        job: {script: train.py}
    """,
    )
    monkeypatch.chdir(tmp_path)  # elsewhere: the config's directory counts, not the cwd
    assert load_config(path).job.script == str((sub / "train.py").resolve())


def test_defaults_ssh_does_not_apply_to_a_local_node(tmp_path):
    config = load_config(
        write(
            tmp_path,
            """
        defaults: {ssh: shared}
        nodes:
          - {name: a, local: true, ring_ip: 10.0.0.1}
          - {name: b, ring_ip: 10.0.0.2}
    """,
        )
    )
    assert config.nodes[0].ssh is None and config.nodes[1].ssh == "shared"


def test_merge_keys_and_anchors_work(tmp_path):
    config = load_config(
        write(
            tmp_path,
            """
        nodes:
          - &first {name: a, ssh: m, ring_ip: 10.0.0.1, ranks: 2}
          - <<: *first
            name: b
            ring_ip: 10.0.0.2
    """,
        )
    )
    assert [(n.name, n.ssh, n.ranks) for n in config.nodes] == [("a", "m", 2), ("b", "m", 2)]


def test_empty_sections_are_allowed(tmp_path):
    config = load_config(
        write(
            tmp_path,
            """
        ring:
        ssh:
        nodes: [{name: a, local: true}]
        job:
    """,
        )
    )
    assert config.ring.port == DEFAULT_RING_PORT


# --- every kind of error: exact line and key ------------------------------------------------

ERRORS = [
    # (yaml, line, key, a fragment of the message)
    (
        "nodes:\n  - {name: a, ssh: m1, ring_ip: 172.31.0.1}\n  - name: b\n    ssh: m2\n"
        "    ring_ip: '172.31.0.300'\n",
        5,
        "nodes[1].ring_ip",
        "'172.31.0.300' is not an IPv4/IPv6 address; expected the node's Thunderbolt Bridge address "
        "such as 172.31.0.2",
    ),
    (
        "nodes:\n  - name: a\n    ssh: m\n    rign_ip: 10.0.0.1\n",
        4,
        "nodes[0].rign_ip",
        "unknown key 'rign_ip'; did you mean 'ring_ip'?",
    ),
    ("nodez: []\n", 1, "nodez", "did you mean 'nodes'?"),
    ("port: 5000\nnodes: [{name: a, local: true}]\n", 1, "port", "did you mean ring.port?"),
    (
        "nodes: [{name: a, local: true}]\njob:\n  learning_rate: 0.1\n",
        3,
        "job.learning_rate",
        "did you mean 'lr'?",
    ),
    (
        "nodes: [{name: a, local: true}]\njob:\n  zebra: 1\n",
        3,
        "job.zebra",
        "unknown key 'zebra'; expected one of: example, script, args, steps",
    ),
    ("nodes:\n  - name: a\n    local: true\n    ranks: true\n", 4, "nodes[0].ranks", "true is a boolean"),
    ("nodes:\n  - name: a\n    local: true\n    ranks: 0\n", 4, "nodes[0].ranks", "0 is less than 1"),
    ("nodes:\n  - name: a\n    local: yes-please\n", 3, "nodes[0].local", "'yes-please' is text"),
    ("ring:\n  port: 80\nnodes: [{name: a, local: true}]\n", 2, "ring.port", "80 is outside 1024-65535"),
    (
        "ring:\n  port: 65534\nnodes:\n  - name: a\n    local: true\n    ranks: 4\njob: {global_batch: 4}\n",
        6,
        "nodes[0].ranks",
        "need ports up to 65537",
    ),
    ("ring:\n  timeout: -1\nnodes: [{name: a, local: true}]\n", 2, "ring.timeout", "not a positive number"),
    ("ring:\n  chunk_mb: .nan\nnodes: [{name: a, local: true}]\n", 2, "ring.chunk_mb", "not a positive"),
    # receivers refuse frames over 256 MiB: a larger chunk broke every collective of >4 GiB segments
    ("ring:\n  chunk_mb: 300\nnodes: [{name: a, local: true}]\n", 2, "ring.chunk_mb", "300 is over 256"),
    (
        "ssh:\n  known_hosts: null\nnodes: [{name: a, local: true}]\n",
        2,
        "ssh.known_hosts",
        "boltring always checks host keys",
    ),
    (
        "ssh:\n  identity_files: [~/.ssh/a, 3]\nnodes: [{name: a, local: true}]\n",
        2,
        "ssh.identity_files[1]",
        "3 is a whole number",
    ),
    (
        "ssh:\n  keepalive_count_max: 0\nnodes: [{name: a, local: true}]\n",
        2,
        "ssh.keepalive_count_max",
        "0 is less than 1",
    ),
    (
        "nodes:\n  - {name: a, ssh: m1, ring_ip: 10.0.0.1}\n  - {name: a, ssh: m2, ring_ip: 10.0.0.2}\n",
        3,
        "nodes[1].name",
        "'a' is already the name of nodes[0], line 2",
    ),
    (
        "nodes:\n  - {name: a, ssh: m1, ring_ip: 10.0.0.1}\n  - {name: b, ssh: m2, ring_ip: 10.0.0.1}\n",
        3,
        "nodes[1].ring_ip",
        "both would listen on 10.0.0.1:25250",
    ),
    (
        "nodes:\n  - {name: a, ssh: m1, ring_ip: 'fe80::1'}\n  - {name: b, ssh: m2, ring_ip: 'FE80:0::1'}\n",
        3,
        "nodes[1].ring_ip",
        "is also the ring_ip of node 'a'",
    ),
    ("nodes:\n  - {name: 'my mini', local: true}\n", 2, "nodes[0].name", "has characters other than"),
    ("nodes:\n  - local: true\n", 2, "nodes[0]", "this node has no name"),
    ("nodes:\n  - name: a\n    ring_ip: 10.0.0.1\n", 2, "nodes[0]", "has neither ssh nor local: true"),
    ("nodes:\n  - name: a\n    ssh: m1\n", 2, "nodes[0]", "node 'a' has no ring_ip"),
    (
        "nodes:\n  - name: a\n    local: true\n    ssh: mini1\n",
        4,
        "nodes[0].ssh",
        "either local: true or ssh",
    ),
    (
        "nodes:\n  - {name: a, local: true, ring_ip: 127.0.0.1}\n  - {name: b, ssh: m, ring_ip: 10.0.0.2}\n",
        2,
        "nodes[0].ring_ip",
        "loopback address, which node 'b' on another machine cannot reach",
    ),
    (
        "nodes:\n  - {name: a, ssh: m1, ring_ip: 127.0.0.1}\n  - {name: b, ssh: m2, ring_ip: 127.0.0.2}\n",
        2,
        "nodes[0].ring_ip",
        "loopback",
    ),
    ("nodes:\n  - {name: a, ssh: m1, ring_ip: 0.0.0.0}\n", 2, "nodes[0].ring_ip", "the unspecified address"),
    (
        "nodes:\n  - {name: a, ssh: '-oProxyCommand=x', ring_ip: 10.0.0.1}\n",
        2,
        "nodes[0].ssh",
        "neither an ssh alias nor user@host[:port]",
    ),
    (
        "nodes:\n  - {name: a, ssh: 'me@host:99999', ring_ip: 10.0.0.1}\n",
        2,
        "nodes[0].ssh",
        "port 99999, outside 1-65535",
    ),
    (
        "nodes:\n  - {name: a, ssh: m, ring_ip: 10.0.0.1, ring_iface: 'bridge 0'}\n",
        2,
        "nodes[0].ring_iface",
        "not an interface name",
    ),
    ("nodes:\n  - {name: a, local: true, memory_gb: 0}\n", 2, "nodes[0].memory_gb", "not a positive number"),
    ("defaults:\n  ranks: 0\nnodes: [{name: a, local: true}]\n", 2, "defaults.ranks", "0 is less than 1"),
    (
        "defaults:\n  ring_ip: 10.0.0.1\nnodes: [{name: a, local: true}]\n",
        2,
        "defaults.ring_ip",
        "ring_ip cannot have a default",
    ),
    (
        "defaults:\n  ranks: 9\nring: {port: 65530}\nnodes:\n  - {name: a, local: true}\n",
        2,
        "defaults.ranks",
        "need ports up to 65538",
    ),
    (
        "nodes: [{name: a, local: true}]\njob: {example: gpt}\n",
        2,
        "job.example",
        "'gpt' is not a built-in example; expected one of mlp, charlm",
    ),
    (
        "nodes: [{name: a, local: true}]\njob:\n  example: mlp\n  script: x.py\n",
        4,
        "job.script",
        "set together with example 'mlp' (job.example, line 3)",
    ),
    ("nodes: [{name: a, local: true}]\njob:\n  script: missing.py\n", 3, "job.script", "is not a file"),
    ("nodes: [{name: a, local: true}]\njob: {steps: 0}\n", 2, "job.steps", "0 is less than 1"),
    ("nodes: [{name: a, local: true}]\njob: {steps: 2.5}\n", 2, "job.steps", "2.5 is a decimal number"),
    (
        "nodes: [{name: a, local: true}]\njob: {checkpoint_every: -1}\n",
        2,
        "job.checkpoint_every",
        "-1 is less than 0",
    ),
    (
        "nodes: [{name: a, local: true}]\njob:\n  args:\n    - --lr\n    - 0.1\n",
        5,
        "job.args[1]",
        "0.1 is a decimal number (quote it to pass it as text)",
    ),
    ("nodes: [{name: a, local: true}]\njob: {lr: '0.1'}\n", 2, "job.lr", "'0.1' is text"),
    ("nodes: [{name: a, local: true}]\njob: {data: 2024-01-01}\n", 2, "job.data", "is a date"),
    (
        "nodes:\n  - {name: a, ssh: m1, ring_ip: 10.0.0.1}\n  - {name: b, ssh: m2, ring_ip: 10.0.0.2}\n"
        "  - {name: c, ssh: m3, ring_ip: 10.0.0.3}\njob:\n  global_batch: 100\n",
        6,
        "job.global_batch",
        "100 is not divisible by the world size 3",
    ),
    ("name: my cluster\nnodes: [{name: a, local: true}]\n", 1, "name", "has characters other than"),
    ("nodes: {name: a}\n", 1, "nodes", "got a mapping"),
    ("nodes: []\n", 1, "nodes", "the list is empty"),
    ("nodes:\n  - just-a-name\n", 2, "nodes[0]", "'just-a-name' is text"),
    ("ring: 5\nnodes: [{name: a, local: true}]\n", 1, "ring", "5 is a whole number"),
    ("nodes:\n  - name: a\n    local: true\n    local: false\n", 4, "nodes[0].local", "appears twice"),
    ("nodes:\n  - name: a\n   local: true\n", 3, "YAML syntax", "expected valid YAML"),
    ("nodes: [{name: a, local: true}]\nx: &a [*a]\n", 2, "x[0]", "an alias refers to its own anchor"),
]


@pytest.mark.parametrize("text,line,key,fragment", ERRORS, ids=[e[2] + ":" + e[3][:24] for e in ERRORS])
def test_error_names_file_line_and_key(tmp_path, text, line, key, fragment):
    e = error(tmp_path, text)
    assert (e.source, e.line, e.key) == ("boltring.yaml", line, key), str(e)
    assert str(e).startswith(f"boltring.yaml:{line}: {key}: ")
    assert fragment in str(e)


def test_error_message_matches_the_documented_example(tmp_path):
    e = error(
        tmp_path,
        "# a comment\n" * 9 + "nodes:\n  - {name: a, ssh: m1, ring_ip: 172.31.0.1}\n  - name: b\n"
        "    ring_ip: '172.31.0.300'\n    ssh: m2\n",
    )
    assert str(e) == (
        "boltring.yaml:13: nodes[1].ring_ip: '172.31.0.300' is not an IPv4/IPv6 address; "
        "expected the node's Thunderbolt Bridge address such as 172.31.0.2"
    )


def test_errors_without_a_file_have_no_line():
    with pytest.raises(ConfigError) as info:
        load_config_text("", "<text>")
    assert str(info.value) == (
        "<text>: the file is empty; expected a boltring config with a 'nodes' list (see configs/minis.yaml)"
    )


def test_global_batch_error_names_both_numbers(tmp_path):
    e = error(tmp_path, "nodes:\n  - {name: a, local: true, ranks: 3}\njob: {global_batch: 256}\n")
    assert "256 is not divisible by the world size 3" in str(e) and "such as 255 or 258" in str(e)


# --- overrides --------------------------------------------------------------------------------


def local_default(tmp_path):
    return load_config(cwd=tmp_path)


def test_ranks_override_sets_the_local_node(tmp_path):
    config = with_overrides(local_default(tmp_path), ranks=4)
    assert config.world_size == 4 and config.nodes[0].ranks == 4


def test_ranks_override_is_refused_for_a_cluster():
    minis = load_config(Path(str(resources.files("boltring.configs").joinpath("minis.yaml"))))
    with pytest.raises(ConfigError) as info:
        with_overrides(minis, ranks=2)
    assert "--ranks applies to the local default; set ranks per node in the config" in str(info.value)


def test_ranks_override_must_divide_the_batch(tmp_path):
    with pytest.raises(ConfigError) as info:
        with_overrides(local_default(tmp_path), ranks=7)
    assert str(info.value).startswith(
        "command line: --ranks: job.global_batch 240 is not divisible by the world size 7"
    )
    assert str(info.value).endswith(
        "such as 238 or 245, so every rank gets the same share (pass it as --global-batch)"
    )
    assert with_overrides(local_default(tmp_path), ranks=7, global_batch=280).world_size == 7


def test_job_overrides(tmp_path, monkeypatch):
    base = local_default(tmp_path)
    config = with_overrides(base, example="charlm", args=["--hidden", "32"], steps=5, seed=9, global_batch=8)
    assert (
        config.job.example,
        config.job.args,
        config.job.steps,
        config.job.seed,
        config.job.global_batch,
    ) == ("charlm", ("--hidden", "32"), 5, 9, 8)
    assert base.job.steps == 300  # the original is untouched
    (tmp_path / "mine.py").write_text("")
    monkeypatch.chdir(tmp_path)
    config = with_overrides(base, script="mine.py")
    assert config.job.script == str((tmp_path / "mine.py").resolve()) and config.job.example is None


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"example": "mlp", "script": "x.py"}, "--script: given together with --example"),
        ({"example": "gpt"}, "--example: 'gpt' is not a built-in example"),
        ({"script": "does-not-exist.py"}, "--script: 'does-not-exist.py' is not a file"),
        ({"steps": 0}, "--steps: 0 is less than 1"),
        ({"seed": -1}, "--seed: -1 is less than 0"),
        ({"global_batch": 255}, "--global-batch: 255 is not divisible by the world size 2"),
        ({"ranks": 0}, "--ranks: 0 is less than 1"),
        ({"args": ["--x", 3]}, "--args[1]: 3 is a whole number"),
    ],
)
def test_bad_overrides(tmp_path, kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        with_overrides(local_default(tmp_path), **kwargs)
    assert str(info.value).startswith("command line: " + fragment)


# --- ssh targets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target,parsed",
    [
        ("mini1", (None, "mini1", None)),
        ("mini1.local", (None, "mini1.local", None)),
        ("me@mini1", ("me", "mini1", None)),
        ("me@10.0.0.1:2222", ("me", "10.0.0.1", 2222)),
        ("me@[fe80::1%bridge0]:22", ("me", "fe80::1%bridge0", 22)),
        ("host:2200", (None, "host", 2200)),
        # a bare IPv6 address is a host without a port, as ssh(1) and the transport read it
        ("fe80::1", (None, "fe80::1", None)),
        ("me@fe80::1", ("me", "fe80::1", None)),
    ],
)
def test_parse_ssh_target(target, parsed):
    assert parse_ssh_target(target) == parsed


@pytest.mark.parametrize(
    "target",
    ["", "a b", "-oX", "me@-host", "me@host:0", "me@[nothex]", "a@b@c", "me@", "host:x", "[fe80::1]x"],
)
def test_parse_ssh_target_rejects(target):
    with pytest.raises(ValueError):
        parse_ssh_target(target)


# --- properties -----------------------------------------------------------------------------------


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ranks=st.lists(st.integers(1, 4), min_size=1, max_size=4), batch=st.integers(1, 600))
def test_batch_is_accepted_exactly_when_the_world_size_divides_it(ranks, batch):
    nodes = "".join(
        f"  - {{name: n{i}, ssh: m{i}, ring_ip: 10.0.0.{i + 1}, ranks: {r}}}\n" for i, r in enumerate(ranks)
    )
    text = f"nodes:\n{nodes}job:\n  global_batch: {batch}\n"
    world = sum(ranks)
    if batch % world == 0:
        assert load_config_text(text, "b.yaml").world_size == world
    else:
        with pytest.raises(ConfigError) as info:
            load_config_text(text, "b.yaml")
        assert info.value.line == len(ranks) + 3 and info.value.key == "job.global_batch"
        assert f"{batch} is not divisible by the world size {world}" in str(info.value)


def _mutations() -> st.SearchStrategy[str]:
    texts = [p.read_text() for p in sorted(SAMPLES.iterdir())]
    texts.append(resources.files("boltring.configs").joinpath("minis.yaml").read_text())

    @st.composite
    def mutate(draw):
        lines = draw(st.sampled_from(texts)).splitlines(keepends=True)
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(lines) - 1))
            action = draw(st.sampled_from(["drop", "replace", "insert"]))
            if action == "drop":
                del lines[i]
            else:
                junk = draw(
                    st.sampled_from(
                        [
                            "",
                            "  x: 1\n",
                            "- 3\n",
                            "  ranks: -2\n",
                            "    ip: 999\n",
                            "nodes: 7\n",
                            "  - {}\n",
                            ': "\n',
                            "hosts: []\n",
                        ]
                    )
                )
                lines[i : i + (action == "replace")] = [junk]
            if not lines:
                break
        return "".join(lines)

    return mutate()


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(_mutations(), st.text(max_size=200)))
def test_any_text_gives_a_config_or_a_config_error(text):
    try:
        load_config_text(text, "fuzz.yaml", base_dir=SAMPLES)
    except ConfigError as e:  # every problem, one line each, each naming the file
        lines = str(e).splitlines()
        assert 1 <= len(lines) <= 11 and all(line.startswith("fuzz.yaml") for line in lines)


# --- the package's layout (issue 8) -------------------------------------------------------------

CONFIG_MODULES = [
    "located",
    "values",
    "ssh_target",
    "schema",
    "validate",
    "load",
    "formats",
    "formats.draft",
    "formats.mlx_hostfile",
    "formats.smolcluster",
    "formats.jupiter",
]


@pytest.mark.parametrize("module", CONFIG_MODULES)
def test_each_config_module_imports_first_in_a_fresh_interpreter(module):
    """An import circle fails when one of its modules is imported first; try every one."""
    done = subprocess.run(
        [sys.executable, "-c", f"import boltring.cluster.config.{module}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_load_knows_no_foreign_keys():
    """The foreign formats' keys live with their readers (each with sniff()), not in load.py."""
    text = (Path(load_module.__file__)).read_text()
    for key in ("host_ip", "use_thunderbolt_bridge", "allToAllTopology", "can_train"):
        assert key not in text
    assert [f.NAME for f in formats.FORMATS] == ["mlx-hostfile", "smolcluster", "jupiter"]
    assert all(callable(f.sniff) and callable(f.read) for f in formats.FORMATS)


def test_every_yaml_key_is_declared_on_its_field():
    """Adding a key is one edit: the validator's spec is read from the dataclass fields."""
    assert keys_of(JobSpec)["lr"].field == "learning_rate"
    assert keys_of(RingOptions)["timeout"].field == "timeout_s"
    for cls, spec in [
        (JobSpec, JOB_KEYS),
        (RingOptions, RING_KEYS),
        (SshOptions, SSH_KEYS),
        (SetupOptions, SETUP_KEYS),
    ]:
        fields = {f.name for f in dataclasses.fields(cls) if "check" in f.metadata}
        assert {k.field for k in spec.values()} == fields
    assert set(NODE_KEYS) == {f.name for f in dataclasses.fields(Node)}
    # the field's own "expected" text is what the error says
    e = error(Path(tempfile.mkdtemp()), "nodes: [{name: a, local: true}]\nring: {wire_dtype: fp8}\n")
    assert str(e).endswith("expected " + keys_of(RingOptions)["wire_dtype"].expected)


def test_ring_overlap_is_a_boolean_that_reaches_every_rank():
    from boltring.cluster.jobs.plan import plan_job

    config = load_config_text("nodes: [{name: a, local: true, ranks: 2}]\nring: {overlap: true}\n", "o.yaml")
    assert config.ring.overlap is True
    assert all(p.env["BOLTRING_OVERLAP"] == "1" for p in plan_job(config, "j1"))
    e = error(Path(tempfile.mkdtemp()), "nodes: [{name: a, local: true}]\nring: {overlap: 'yes'}\n")
    assert "ring.overlap" in str(e) and str(e).endswith(
        "expected " + keys_of(RingOptions)["overlap"].expected
    )


def test_ring_directions_are_auto_1_or_2_and_reach_every_rank():
    from boltring.cluster.jobs.plan import plan_job

    nodes = "nodes: [{name: a, local: true, ranks: 3}]\n"
    assert load_config_text(nodes, "d.yaml").ring.directions == 0  # auto
    for value, stored, env in (("auto", 0, "auto"), ("1", 1, "1"), ("2", 2, "2"), ("'2'", 2, "2")):
        config = load_config_text(nodes + f"ring: {{directions: {value}}}\n", "d.yaml")
        assert config.ring.directions == stored
        assert all(p.env["BOLTRING_RING_DIRECTIONS"] == env for p in plan_job(config, "j1"))
    for bad in ("3", "0", "true", "both"):
        e = error(Path(tempfile.mkdtemp()), nodes + f"ring: {{directions: {bad}}}\n")
        assert "ring.directions" in str(e) and str(e).endswith(
            "expected " + keys_of(RingOptions)["directions"].expected
        ), str(e)


def test_ring_same_host_is_unix_or_tcp_and_reaches_every_rank():
    from boltring.cluster.jobs.plan import plan_job

    nodes = "nodes: [{name: a, local: true, ranks: 2}]\n"
    assert load_config_text(nodes, "s.yaml").ring.same_host == "unix"
    assert all(
        p.env["BOLTRING_RING_SAME_HOST"] == "unix" for p in plan_job(load_config_text(nodes, "s.yaml"), "j")
    )
    config = load_config_text(nodes + "ring: {same_host: tcp}\n", "s.yaml")
    assert all(p.env["BOLTRING_RING_SAME_HOST"] == "tcp" for p in plan_job(config, "j"))
    e = error(Path(tempfile.mkdtemp()), nodes + "ring:\n  same_host: shm\n")
    assert str(e).startswith("boltring.yaml:3: ring.same_host: 'shm' is not"), str(e)
    assert str(e).endswith("expected " + keys_of(RingOptions)["same_host"].expected), str(e)


# --- one ssh-target parser, one name regex, one default batch (issue 8 §3) -------------------


def test_the_ssh_transport_parses_targets_with_the_config_parser():
    from boltring.cluster.nodes import ssh

    assert ssh.parse_target is parse_ssh_target


@pytest.mark.parametrize("target", ["fe80::1", "me@fe80::1", "me@[fe80::1%bridge0]:22"])
def test_config_accepts_the_ipv6_targets_the_transport_accepts(target):
    config = load_config_text(f"nodes:\n  - {{name: a, ssh: '{target}', ring_ip: 10.0.0.1}}\n", "v6.yaml")
    assert config.nodes[0].ssh == target


def test_one_name_rule():
    from boltring.cluster.config.formats import draft
    from boltring.cluster.config.validate import default_name

    assert draft.to_name is values.to_name
    assert default_name("my cluster (2).yaml") == values.to_name("my cluster (2)") == "my-cluster-2"


def test_the_rank_program_defaults_to_the_config_default_batch():
    from boltring.cluster.train.loop import TrainConfig
    from boltring.cluster.train.runner import build_parser

    assert TrainConfig().global_batch is None  # resolved in train() from the world size
    assert build_parser().parse_args(["--example", "mlp"]).global_batch is None
    assert [default_global_batch(n) for n in (1, 3, 7)] == [
        DEFAULT_BATCH_PER_RANK,
        3 * DEFAULT_BATCH_PER_RANK,
        7 * DEFAULT_BATCH_PER_RANK,
    ]


# --- defaults work for every world size (issue 11, defect 9) ----------------------------------


@pytest.mark.parametrize("n", range(1, 9))
def test_no_job_section_loads_for_1_to_8_nodes(n):
    nodes = "".join(f"  - {{name: mini{i}, ssh: mini{i}, ring_ip: 172.31.0.{i}}}\n" for i in range(1, n + 1))
    config = load_config_text(f"nodes:\n{nodes}", "minis.yaml")
    assert config.world_size == n
    assert config.job.global_batch == n * DEFAULT_BATCH_PER_RANK
    assert config.job.global_batch % n == 0 and config.job.global_batch_is_default


def test_default_batch_follows_ranks_override(tmp_path):
    write(tmp_path, "nodes:\n  - {name: here, local: true, ranks: 2}\n")
    config = load_config(cwd=tmp_path)
    assert config.job.global_batch == 2 * DEFAULT_BATCH_PER_RANK
    for ranks in (3, 5, 7):
        changed = with_overrides(config, ranks=ranks)
        assert changed.job.global_batch == ranks * DEFAULT_BATCH_PER_RANK
    fixed = with_overrides(config, ranks=3, global_batch=30)
    assert fixed.job.global_batch == 30 and not fixed.job.global_batch_is_default
    assert (
        with_overrides(fixed, ranks=5).world_size == 5
        and with_overrides(fixed, ranks=5).job.global_batch == 30
    )


def test_imported_hostfile_of_three_hosts_gets_a_dividing_default(tmp_path):
    hosts = [{"ssh": f"mini{i}", "ips": [f"10.0.0.{i}"]} for i in (1, 2, 3)]
    config = load_config_text(json.dumps(hosts), "hostfile.json")
    assert config.job.global_batch == 3 * DEFAULT_BATCH_PER_RANK


# --- every error at once (issue 11, defect 8) ---------------------------------------------------


def test_all_errors_are_shown_one_line_each(tmp_path):
    write(
        tmp_path,
        """
        ring:
          port: 80
          timeout: -1
        nodes:
          - {name: a, ssh: m1, ring_ip: 10.0.0.300}
          - {name: b, ssh: m2, rign_ip: 10.0.0.2}
        job:
          steps: 0
    """,
    )
    with pytest.raises(ConfigErrors) as info:
        load_config("boltring.yaml", cwd=tmp_path)
    lines = str(info.value).splitlines()
    assert lines == [e.message for e in info.value.errors]
    assert [(e.line, e.key) for e in info.value.errors] == [
        (2, "ring.port"),
        (3, "ring.timeout"),
        (5, "nodes[0].ring_ip"),
        (6, "nodes[1].rign_ip"),
        (8, "job.steps"),
    ]
    assert all(
        line.startswith(f"boltring.yaml:{e.line}: {e.key}: ")
        for line, e in zip(lines, info.value.errors, strict=True)
    )
    # still a ConfigError, reading as its first error
    assert isinstance(info.value, ConfigError)
    assert (info.value.line, info.value.key) == (2, "ring.port")


def test_at_most_ten_errors_are_shown(tmp_path):
    text = "nodes: [{name: a, local: true}]\njob:\n" + "".join(f"  bad{i}: 1\n" for i in range(15))
    with pytest.raises(ConfigErrors) as info:
        load_config_text(text, "many.yaml")
    lines = str(info.value).splitlines()
    assert len(info.value.errors) == 15 and len(lines) == 11
    assert lines[-1] == "many.yaml: 5 more errors not shown; fix these first"


def test_a_single_error_is_a_plain_config_error():
    with pytest.raises(ConfigError) as info:
        load_config_text("nodes: [{name: a, local: true}]\njob: {steps: 0}\n", "one.yaml")
    assert type(info.value) is ConfigError and "\n" not in str(info.value)
    assert info.value.errors == [info.value]


def test_cli_prints_every_config_error_on_its_own_line(tmp_path, capsys):
    """Exit 2, as for a mistyped option: nothing started (1 is a job that ran and failed)."""
    path = write(tmp_path, "nodes: [{name: a, local: true}]\njob: {steps: 0, seed: -1}\n")
    assert cli.main(["--config", str(path), "--dry-run"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"boltring: {path}:2: job.steps: 0 is less than 1; expected a whole number of training steps, at least 1",
        f"boltring: {path}:2: job.seed: -1 is less than 0; expected a whole number, 0 or more",
    ]


# --- bounded loading (issue 12, defect 3) -----------------------------------------------------

BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
nodes: [{name: a, local: true}]
"""  # "billion laughs": 9 levels of 9 aliases, 9^9 = 387 million strings once expanded

_MEASURE = """
import resource, sys, time
from boltring.cluster.config import ConfigError, load_config
start = time.perf_counter()
try:
    load_config(sys.argv[1])
    print("ACCEPTED")
except ConfigError as e:
    print(str(e))
print(time.perf_counter() - start)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kB on Linux
"""


# Linux carries a process's peak RSS across fork and exec, so a child of this (large) test
# process would report pytest's own peak: measure in a grandchild of a small interpreter.
_VIA_SMALL_PARENT = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def _load_measured(path: Path) -> tuple[str, float, float]:
    """(message, seconds, peak MB) of load_config(path) in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _VIA_SMALL_PARENT, sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    message, seconds, rss_kb = done.stdout.strip().splitlines()
    return message, float(seconds), int(rss_kb) / 1024


def test_alias_bomb_is_refused_quickly_in_little_memory(tmp_path):
    assert len(BOMB) < 400
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    message, seconds, rss_mb = _load_measured(path)
    assert message.startswith(f"{path}: YAML aliases: the document expands to more than")
    assert seconds < 1.0 and rss_mb < 100, (seconds, rss_mb)


def test_huge_node_list_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    chunk = b"  - {name: n, ssh: n, ring_ip: 10.0.0.1}\n" * 25_000  # 1 MB
    with path.open("wb") as f:
        f.write(b"nodes:\n")
        for _ in range(50):
            f.write(chunk)
    message, seconds, rss_mb = _load_measured(path)
    assert path.stat().st_size > 50_000_000
    assert message.startswith(f"{path}: is 5") and message.endswith(
        " MB, more than the 1 MB a config may have; expected a config file (a few kB lists hundreds of nodes)"
    )
    assert seconds < 1.0 and rss_mb < 100, (seconds, rss_mb)


def test_text_over_the_size_cap_is_refused():
    with pytest.raises(ConfigError, match="more than the 1 MB"):
        load_config_text("#" * (MAX_FILE_BYTES + 1), "big.yaml")


def test_node_count_is_capped():
    nodes = "".join(
        f"  - {{name: n{i}, ssh: n{i}, ring_ip: 10.0.{i // 250}.{i % 250 + 1}}}\n" for i in range(1500)
    )
    with pytest.raises(ConfigError) as info:
        load_config_text("nodes:\n" + nodes, "many.yaml")
    assert (
        str(info.value)
        == f"many.yaml:1: nodes: lists 1,500 nodes, more than {MAX_NODES}; expected at most {MAX_NODES} nodes"
    )


def test_small_aliases_still_work():
    text = (
        "nodes:\n  - &one {name: a, ssh: m1, ring_ip: 10.0.0.1, chip: M4}\n"
        "  - {<<: *one, name: b, ssh: m2, ring_ip: 10.0.0.2}\n"
    )
    config = load_config_text(text, "alias.yaml")
    assert [n.chip for n in config.nodes] == ["M4", "M4"]


# --- smaller defects (issue 12 §8) ---------------------------------------------------------------


@pytest.mark.parametrize("written,value", [("3e-4", 3e-4), ("1E-3", 1e-3), ("5e+2", 500.0), ("0.003", 0.003)])
def test_lr_in_exponent_notation_is_a_number(written, value):
    config = load_config_text(f"nodes: [{{name: a, local: true}}]\njob: {{lr: {written}}}\n", "lr.yaml")
    assert config.job.learning_rate == value


def test_quoted_exponent_is_still_text():
    with pytest.raises(ConfigError, match="'3e-4' is text"):
        load_config_text("nodes: [{name: a, local: true}]\njob: {lr: '3e-4'}\n", "lr.yaml")


def test_json_without_run_is_refused_with_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--json"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "boltring: --json prints the events of a headless run or a dry run: add --run or --dry-run "
        "(`boltring --help` explains every option)\n"
    )


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--example", "nope"], "boltring: argument --example: invalid choice: 'nope' (choose from 'mlp', "),
        (
            ["bench", "--backend", "x"],
            "boltring bench: argument --backend: invalid choice: 'x' (choose from ",
        ),
        (["--bogus"], "boltring: unrecognized arguments: --bogus (`boltring --help` explains every option)"),
    ],
)
def test_a_mistyped_option_is_one_line_without_the_usage_block(capsys, argv, line):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(line) and "usage:" not in err, err


def test_hostfile_into_a_missing_directory_is_one_line(tmp_path):
    target = tmp_path / "missing" / "dir" / "x"
    with pytest.raises(SystemExit) as info:
        cli.main(["hostfile", "-o", str(target)])
    assert str(info.value) == (
        f"boltring: cannot write {target}: No such file or directory; "
        "give -o a file in an existing, writable directory"
    )


def test_errors_do_not_echo_each_other():
    """A wrong default or a misspelt key is reported once, not again as its consequences."""
    with pytest.raises(ConfigError) as info:
        load_config_text(
            "defaults: {ranks: 0}\nnodes:\n  - {name: a, ssh: m1, ring_ip: 10.0.0.1}\n"
            "  - {name: b, ssh: m2, ring_ip: 10.0.0.2}\njob: {global_batch: 3}\n",
            "d.yaml",
        )
    assert [e.key for e in info.value.errors] == ["defaults.ranks"]
    with pytest.raises(ConfigError) as info:
        load_config_text("ring: {port: 1}\n", "n.yaml")
    assert [e.key for e in info.value.errors] == ["ring.port", None]  # and: there is no 'nodes' list
