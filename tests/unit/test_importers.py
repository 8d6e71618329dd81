"""Importers for MLX hostfiles, smolcluster and jupiter files, and the MLX hostfile writer."""

from __future__ import annotations

import json
import shutil
import textwrap
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boltring.cluster.config import (
    ConfigError,
    ImportReport,
    load_config,
    load_config_text,
    load_config_with_report,
    write_mlx_hostfile,
)
from boltring.cluster.config.formats.jupiter import read as import_jupiter
from boltring.cluster.config.formats.mlx_hostfile import read as import_mlx_hostfile
from boltring.cluster.config.formats.smolcluster import read as import_smolcluster
from boltring.cluster.config.ports import DEFAULT_RING_PORT
from boltring.cluster.config.schema import DEFAULT_BATCH_PER_RANK, Config, Node

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "formats"


def load_sample(tmp_path: Path, name: str) -> tuple[Config, ImportReport]:
    """Load a sample from a copy in tmp_path, as a user would load their own file."""
    path = tmp_path / name
    shutil.copy(SAMPLES / name, path)
    config, report = load_config_with_report(path)
    assert report is not None
    return config, report


def import_error(tmp_path: Path, text: str, name: str) -> ConfigError:
    (tmp_path / name).write_text(textwrap.dedent(text).lstrip("\n"))
    with pytest.raises(ConfigError) as info:
        load_config(name, cwd=tmp_path)
    assert "\n" not in str(info.value)
    return info.value


def summary(config: Config) -> list[tuple]:
    return [(n.name, n.ssh, n.local, n.ring_ip, n.ranks) for n in config.nodes]


# --- MLX hostfile ----------------------------------------------------------------------------


def test_mlx_hostfile_list_form(tmp_path):
    config, report = load_sample(tmp_path, "mlx_hostfile_list.json")
    assert report.source_format == "MLX hostfile"
    assert summary(config) == [
        ("mini1", "mini1", False, "10.0.0.1", 1),
        ("mini2", "mini2", False, "10.0.0.2", 1),
        ("mini3", "mini3", False, "10.0.0.3", 1),
    ]
    assert config.name == "mlx_hostfile_list"
    assert config.job.global_batch == 3 * DEFAULT_BATCH_PER_RANK  # the default divides any world size
    assert "[1].ips[0] → nodes[1].ring_ip 10.0.0.2" in report.mapped
    assert "[1].ips[1]: ignored (boltring uses one ring address per node: the first)" in report.ignored


def test_mlx_hostfile_object_form(tmp_path):
    config, report = load_sample(tmp_path, "mlx_hostfile_object.json")
    assert [n.name for n in config.nodes] == ["m3-ultra-1", "m3-ultra-2", "m3-ultra-3", "m3-ultra-4"]
    assert [n.ring_ip for n in config.nodes] == [
        "192.168.0.11",
        "192.168.0.12",
        "192.168.0.13",
        "192.168.0.14",
    ]
    assert config.job.global_batch == 4 * DEFAULT_BATCH_PER_RANK
    assert config.ring.backend == "jaccl"  # the file's "backend": "jaccl" is boltring's jaccl
    assert any(line.startswith("backend → ring.backend jaccl (") for line in report.mapped)
    assert any(line.startswith("envs: ignored") for line in report.ignored)
    assert sum(line.endswith("reads it with --rdma-devices THIS_FILE)") for line in report.ignored) == 4
    assert "hosts[3].ips[0] → nodes[3].ring_ip 192.168.0.14" in report.mapped


def test_mlx_hostfile_repeated_host_becomes_ranks(tmp_path):
    config, report = load_sample(tmp_path, "mlx_hostfile_localhost.json")
    assert summary(config) == [("localhost", None, True, "127.0.0.1", 2)]
    assert any("nodes[0].ranks 2" in line for line in report.mapped)


def test_mlx_hostfile_errors_have_lines(tmp_path):
    e = import_error(
        tmp_path,
        """
        [
          {"ssh": "mini1", "ips": ["10.0.0.1"]},
          {"ssh": "mini2", "ips": ["10.0.0.300"]}
        ]
    """,
        "hosts.json",
    )
    assert str(e).startswith("hosts.json:3: [1].ips[0]: '10.0.0.300' is not an IPv4/IPv6 address")
    e = import_error(
        tmp_path,
        """
        {"backend": "ring",
         "hosts": [
           {"ssh": "mini1"}
         ]}
    """,
        "hosts.json",
    )
    assert (e.line, e.key) == (3, "hosts[0]") and "host 'mini1' has no ips" in str(e)
    e = import_error(tmp_path, '[{"ssh": "mini1", "ips": ["10.0.0.1"]}, {"ips": ["10.0.0.2"]}]', "h.json")
    assert (e.line, e.key) == (1, "[1]") and "there is no 'ssh'" in str(e)


def test_mlx_host_given_by_address_needs_no_ips():
    config, _ = import_mlx_hostfile([{"ssh": "10.0.0.1"}, {"ssh": "10.0.0.2"}], "plain")
    assert [n.ring_ip for n in config.nodes] == ["10.0.0.1", "10.0.0.2"]


def test_importer_on_plain_data_reports_without_a_line():
    with pytest.raises(ConfigError) as info:
        import_mlx_hostfile({"hosts": []}, "hosts.json")
    assert str(info.value).startswith("hosts.json: hosts: the list is empty; expected an MLX hostfile")


# --- write_mlx_hostfile -------------------------------------------------------------------------


def test_write_mlx_hostfile_lists_ranks_in_order(tmp_path):
    minis = load_config(Path(str(resources.files("boltring.configs").joinpath("minis.yaml"))))
    assert json.loads(write_mlx_hostfile(minis)) == [
        {"ssh": "mini1", "ips": ["172.31.0.1"]},
        {"ssh": "mini2", "ips": ["172.31.0.2"]},
        {"ssh": "mini3", "ips": ["172.31.0.3"]},
    ]
    local = load_config(cwd=tmp_path)  # the embedded default: one local node with 2 ranks
    assert json.loads(write_mlx_hostfile(local)) == [{"ssh": "localhost", "ips": ["127.0.0.1"]}] * 2


def test_write_mlx_hostfile_keeps_a_port_as_an_ssh_uri():
    config = load_config_text("nodes:\n  - {name: h, ssh: 'me@h:2222', ring_ip: 10.0.0.1}\n", "c.yaml")
    text = write_mlx_hostfile(config)
    assert json.loads(text) == [{"ssh": "ssh://me@h:2222", "ips": ["10.0.0.1"]}]
    assert import_mlx_hostfile(json.loads(text), "h.json")[0].nodes[0].ssh == "me@h:2222"


@st.composite
def clusters(draw) -> list[Node]:
    count = draw(st.integers(1, 5))
    hosts = draw(
        st.lists(
            st.from_regex(r"[a-z][a-z0-9-]{0,6}", fullmatch=True), min_size=count, max_size=count, unique=True
        ).filter(lambda hs: "localhost" not in hs)
    )
    local_at = draw(st.one_of(st.none(), st.integers(0, count - 1)))
    nodes = []
    for i, host in enumerate(hosts):
        ranks = draw(st.integers(1, 3))
        ip = f"10.{i}.{draw(st.integers(0, 255))}.{draw(st.integers(1, 254))}"
        if i == local_at:
            nodes.append(Node(name="localhost", ring_ip=ip, local=True, ranks=ranks))
        else:
            user = draw(st.sampled_from(["", "me@"]))
            port = draw(st.sampled_from(["", ":2222"]))
            nodes.append(Node(name=host, ring_ip=ip, ssh=f"{user}{host}{port}", ranks=ranks))
    return nodes


@settings(max_examples=80, deadline=None)
@given(nodes=clusters())
def test_write_mlx_hostfile_round_trips(nodes):
    config = Config(name="c", nodes=tuple(nodes))
    again, _ = import_mlx_hostfile(json.loads(write_mlx_hostfile(config)), "h.json")
    assert summary(again) == summary(config)


# --- smolcluster ---------------------------------------------------------------------------------


def test_smolcluster_early_form(tmp_path):
    config, report = load_sample(tmp_path, "smolcluster_cluster_config.yaml")
    assert report.source_format == "smolcluster"
    assert summary(config) == [
        ("mini1", "mini1", False, "10.10.0.1", 1),
        ("mini2", "mini2", False, "10.10.0.2", 1),
        ("mini3", "mini3", False, "10.10.0.3", 1),
    ]
    assert config.ring.port == 65432
    assert "host_ip.mini2 → nodes[1].ring_ip 10.10.0.2" in report.mapped
    assert "workers[0] → nodes[1].ssh mini2 (an alias from ~/.ssh/config)" in report.mapped
    assert "port → ring.port 65432" in report.mapped
    assert (
        "timeout: ignored (smolcluster's wait for gradients; boltring's is ring.timeout, default 60 s)"
        in report.ignored
    )
    assert "host_ip.pi5: ignored (not the server or a worker)" in report.ignored
    assert "num_workers: ignored (boltring counts the nodes it is given)" in report.ignored


def test_smolcluster_all_to_all_form(tmp_path):
    config, report = load_sample(tmp_path, "smolcluster_alltoall.yaml")
    assert [n.name for n in config.nodes] == ["mini1", "mini2", "mini3"]  # by rank, not by listing
    assert [n.ring_ip for n in config.nodes] == ["10.10.0.1", "10.10.0.2", "10.10.0.3"]
    assert config.ring.port == 65432 and config.job.seed == 42
    assert "port.default → ring.port 65432" in report.mapped
    assert (
        "allToAllTopology.workers.regular[0].port: ignored (boltring uses one ring.port for every node)"
        in report.ignored
    )
    assert any(line.startswith("buffer_size: ignored") for line in report.ignored)
    assert any(line.startswith("model_name: ignored") for line in report.ignored)


def test_smolcluster_shared_server_address_is_explained(tmp_path):
    e = import_error(
        tmp_path,
        """
        host_ip:
          mini1: "10.10.0.1"
          mini2: "10.10.0.1"
        port: 65432
        server: mini1
        workers: [mini2]
    """,
        "cluster_config.yaml",
    )
    assert (e.line, e.key) == (3, "host_ip.mini2")
    assert "10.10.0.1 is also the address of host_ip.mini1" in str(e) and "server's address" in str(e)


def test_smolcluster_errors_point_at_the_users_keys(tmp_path):
    e = import_error(
        tmp_path,
        """
        host_ip:
          mini1: "10.10.0.1"
          mini2: "10.10.0.300"
        server: mini1
        workers: [mini2]
    """,
        "cluster_config.yaml",
    )
    assert str(e).startswith(
        "cluster_config.yaml:3: host_ip.mini2: '10.10.0.300' is not an IPv4/IPv6 address"
    )
    e = import_error(
        tmp_path,
        """
        host_ip:
          mini1: "10.10.0.1"
        server: mini1
        workers:
          - mini2
    """,
        "cluster_config.yaml",
    )
    assert (e.line, e.key) == (5, "workers[0]") and "'mini2' has no entry in host_ip" in str(e)
    e = import_error(
        tmp_path,
        """
        host_ip: {mini1: "10.10.0.1"}
        port: 80
        server: mini1
        workers: []
    """,
        "cluster_config.yaml",
    )
    assert (e.line, e.key) == (2, "port") and "80 is outside 1024-65535" in str(e)


def test_smolcluster_duplicate_rank(tmp_path):
    e = import_error(
        tmp_path,
        """
        allToAllTopology:
          workers:
            regular:
              - {hostname: a, rank: 0, ip: 10.0.0.1}
              - {hostname: b, rank: 0, ip: 10.0.0.2}
    """,
        "c.yaml",
    )
    assert (e.line, e.key) == (5, "allToAllTopology.workers.regular[1].rank")
    assert "rank 0 is given to more than one worker" in str(e)


def test_smolcluster_plain_mapping():
    config, report = import_smolcluster(
        {"host_ip": {"a": "10.0.0.1", "b": "10.0.0.2"}, "server": "a", "workers": ["b"]}, "x.yaml"
    )
    assert summary(config) == [("a", "a", False, "10.0.0.1", 1), ("b", "b", False, "10.0.0.2", 1)]
    assert config.ring.port == DEFAULT_RING_PORT and report.ignored == []


# --- jupiter ---------------------------------------------------------------------------------------


def test_jupiter_cluster_yaml(tmp_path):
    config, report = load_sample(tmp_path, "jupiter_cluster.yaml")
    assert report.source_format == "jupiter"
    assert summary(config) == [
        ("Mac-Mini-1", "admin@mac-mini-1.local", False, "172.31.0.1", 1),
        ("Mac-Mini-2", "admin@172.31.0.2:2222", False, "172.31.0.2", 1),
        ("Mac-Mini-3", "172.31.0.3", False, "172.31.0.3", 1),
    ]
    assert [(n.chip, n.memory_gb, n.role) for n in config.nodes] == [
        ("M4", 16, "trainer"),
        ("M4", 16, "trainer"),
        ("M4 Pro", 32, "trainer"),
    ]
    assert "nodes[0] (Main MacBook): ignored (skipped: can_train is false)" in report.ignored
    assert any(
        line.startswith("nodes[2].host → nodes[1].ring_ip 172.31.0.2 (jupiter has one address per node")
        and "Thunderbolt Bridge address" in line
        for line in report.mapped
    )
    for key in (
        "backend",
        "use_thunderbolt_bridge",
        "sync_every_n_steps",
        "gradient_compression",
        "checkpoint_on_failure",
        "auto_restart_failed_nodes",
    ):
        assert any(line.startswith(f"{key}: ignored (") for line in report.ignored), key


def test_jupiter_hostname_without_ring_ip_says_what_to_add(tmp_path):
    e = import_error(
        tmp_path,
        """
        backend: "mpi"
        nodes:
          - host: "mac-mini-1.local"
            name: "Mac Mini 1"
    """,
        "cluster.yaml",
    )
    assert (e.line, e.key) == (3, "nodes[0].host")
    assert "'mac-mini-1.local' is a hostname" in str(e) and "add ring_ip:" in str(e)


def test_jupiter_errors_point_at_the_users_keys(tmp_path):
    e = import_error(
        tmp_path,
        """
        use_thunderbolt_bridge: true
        nodes:
          - host: 10.0.0.1
            ssh_port: "twenty-two"
    """,
        "cluster.yaml",
    )
    assert (e.line, e.key) == (4, "nodes[0].ssh_port") and "'twenty-two' is text" in str(e)
    e = import_error(
        tmp_path,
        """
        use_thunderbolt_bridge: true
        nodes:
          - host: 10.0.0.1
            memory_gb: -16
    """,
        "cluster.yaml",
    )
    assert (e.line, e.key) == (4, "nodes[0].memory_gb") and "-16 is not a positive number" in str(e)
    e = import_error(
        tmp_path,
        """
        use_thunderbolt_bridge: true
        nodes:
          - {host: 10.0.0.1, can_train: false}
    """,
        "cluster.yaml",
    )
    assert (e.line, e.key) == (2, "nodes") and "every node has can_train: false" in str(e)


def test_jupiter_localhost_and_network_interface():
    config, report = import_jupiter(
        {"network_interface": "bridge0", "nodes": [{"host": "localhost", "ssh_user": "me"}]}, "cluster.yaml"
    )
    (node,) = config.nodes
    assert node.local and node.ring_ip == "127.0.0.1" and node.ring_iface == "bridge0"
    assert "network_interface → defaults.ring_iface bridge0" in report.mapped
    assert "nodes[0].ssh_user: ignored (a local node needs no SSH)" in report.ignored


# --- detection -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,fmt",
    [
        ("mlx_hostfile_list.json", "MLX hostfile"),
        ("mlx_hostfile_object.json", "MLX hostfile"),
        ("smolcluster_cluster_config.yaml", "smolcluster"),
        ("smolcluster_alltoall.yaml", "smolcluster"),
        ("jupiter_cluster.yaml", "jupiter"),
    ],
)
def test_format_is_detected_by_content(tmp_path, name, fmt):
    (tmp_path / "renamed.conf").write_text((SAMPLES / name).read_text())
    _, report = load_config_with_report(tmp_path / "renamed.conf")
    assert report is not None and report.source_format == fmt


def test_boltring_yaml_has_no_report(tmp_path):
    _, report = load_config_with_report(cwd=tmp_path)
    assert report is None
