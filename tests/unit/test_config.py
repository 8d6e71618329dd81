"""The boltring YAML loader: defaults, every validation error's file:line:key, overrides."""

from __future__ import annotations

import sys
import textwrap
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boltring.cluster.config import (
    EMBEDDED_SOURCE,
    ConfigError,
    load_config,
    load_config_text,
    load_config_with_report,
    parse_ssh_target,
    with_overrides,
)
from boltring.cluster.config.schema import DEFAULT_RING_PORT

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
        "both would listen on 10.0.0.1:52520",
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
