"""smolcluster files whose keys sit under a wrapper (host_ip nested, e.g. under syncPS:), and
files that list the server among the workers too."""

from __future__ import annotations

import pytest

from boltring.cluster.config.load import ConfigError, load_config_with_report

WRAPPED = """\
syncPS:
  host_ip:
    mini1: 10.10.0.1
    mini2: 10.10.0.2
  port: 65432
  server: mini1
  workers: [mini2]
seed: 7
"""


def _load(tmp_path, text):
    path = tmp_path / "cluster_config.yaml"
    path.write_text(text)
    return load_config_with_report(path)


def test_wrapped_server_workers_and_port_are_read(tmp_path):
    config, report = _load(tmp_path, WRAPPED)
    assert [(n.name, n.ssh, n.ring_ip) for n in config.nodes] == [
        ("mini1", "mini1", "10.10.0.1"),
        ("mini2", "mini2", "10.10.0.2"),
    ]
    assert config.ring.port == 65432
    assert config.job.seed == 7
    assert not any(line.startswith("syncPS.") for line in report.ignored), report.ignored
    assert "syncPS.port → ring.port 65432" in report.mapped


def test_wrapped_error_names_the_wrapped_key_and_its_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, WRAPPED.replace("workers: [mini2]", "workers: [mini3]"))
    assert e.value.line == 7
    assert e.value.key == "syncPS.workers[0]"
    assert "'mini3' has no entry in syncPS.host_ip" in str(e.value)


def test_server_also_listed_as_worker_is_one_node(tmp_path):
    text = "host_ip: {mini1: 10.10.0.1, mini2: 10.10.0.2}\nnum_workers: 2\nserver: mini1\nworkers: [mini1, mini2]\n"
    config, report = _load(tmp_path, text)
    assert [(n.name, n.ring_ip) for n in config.nodes] == [("mini1", "10.10.0.1"), ("mini2", "10.10.0.2")]
    assert any(line.startswith("workers[0] (mini1): ignored") for line in report.ignored), report.ignored
    assert not any("workers are listed" in line for line in report.ignored), report.ignored


def test_topology_with_ranks_on_some_workers_only_is_refused(tmp_path):
    text = """\
allToAllTopology:
  workers:
    regular:
      - {hostname: mini2, rank: 1, ip: 10.10.0.2}
      - {hostname: mini1, ip: 10.10.0.1}
"""
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, text)
    assert e.value.line == 5
    assert e.value.key == "allToAllTopology.workers.regular[1]"
    assert "has no rank" in str(e.value)
