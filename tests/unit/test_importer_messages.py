"""What the importers and the config loader say: an MLX backend name becomes ring.backend where
boltring runs that backend (and only MPI-like ones are ignored, with a true reason), an empty
list is a hostfile with no hosts, an empty --config path says so, and a --script from the
command line is looked up from the current folder, as its error says."""

from __future__ import annotations

import pytest

from boltring.cluster.config import ConfigError, load_config, load_config_with_report, with_overrides
from boltring.cluster.config.formats.jupiter import read as import_jupiter
from boltring.cluster.config.formats.mlx_hostfile import read as import_mlx_hostfile

HOSTS = [{"ssh": "mini1", "ips": ["10.0.0.1"]}, {"ssh": "mini2", "ips": ["10.0.0.2"]}]
JUPITER_NODES = [{"host": "10.0.0.1", "name": "a"}, {"host": "10.0.0.2", "name": "b"}]


# --- backend: mlx.launch's names (ring, jaccl, mpi, nccl, jaccl-ring) --------------------------


@pytest.mark.parametrize("mlx,boltring", [("ring", "mlx-ring"), ("jaccl", "jaccl")])
def test_an_mlx_hostfile_backend_boltring_runs_is_mapped(mlx, boltring):
    config, report = import_mlx_hostfile({"backend": mlx, "hosts": HOSTS}, "h.json")
    assert config.ring.backend == boltring
    assert any(line.startswith(f"backend → ring.backend {boltring} (MLX's") for line in report.mapped)
    assert not any(line.startswith("backend:") for line in report.ignored)


@pytest.mark.parametrize("mlx,boltring", [("ring", "mlx-ring"), ("jaccl", "jaccl")])
def test_a_jupiter_backend_boltring_runs_is_mapped(mlx, boltring):
    config, report = import_jupiter({"backend": mlx, "nodes": JUPITER_NODES}, "cluster.yaml")
    assert config.ring.backend == boltring
    assert any(line.startswith(f"backend → ring.backend {boltring} (") for line in report.mapped)


@pytest.mark.parametrize(
    "value,why",
    [
        ("mpi", "boltring does not launch through MPI"),
        ("nccl", "NCCL is MLX's CUDA backend"),
        ("jaccl-ring", "not only ring neighbours"),
        ("gloo", "'gloo' is not an MLX backend"),
        ("", "not set"),
    ],
)
def test_a_backend_boltring_does_not_run_is_ignored_with_a_true_reason(value, why):
    for config, report in (
        import_mlx_hostfile({"backend": value, "hosts": HOSTS}, "h.json"),
        import_jupiter({"backend": value, "nodes": JUPITER_NODES}, "cluster.yaml"),
    ):
        assert config.ring.backend == "boltring"
        (line,) = [x for x in report.ignored if x.startswith("backend:")]
        assert why in line and "ring.backend stays boltring" in line, line
        assert "always uses its own" not in line and "not mpi, ring or jaccl" not in line


def test_rdma_lists_point_at_rdma_devices_not_at_a_missing_feature():
    hosts = [
        {**h, "rdma": row} for h, row in zip(HOSTS, [[None, "rdma_en2"], ["rdma_en2", None]], strict=True)
    ]
    _, report = import_mlx_hostfile({"backend": "jaccl", "hosts": hosts}, "h.json")
    lines = [x for x in report.ignored if ".rdma:" in x]
    assert len(lines) == 2 and all("--rdma-devices" in x and "not used" not in x for x in lines), lines


# --- messages of the loader -------------------------------------------------------------------------


def test_an_empty_list_is_a_hostfile_with_no_hosts(tmp_path):
    (tmp_path / "h.json").write_text("[]\n")
    with pytest.raises(ConfigError) as info:
        load_config("h.json", cwd=tmp_path)
    msg = str(info.value)
    assert msg.startswith("h.json:1: the MLX hostfile lists no hosts; expected at least one host"), msg
    assert "not a mapping" not in msg and "'nodes' list" not in msg


def test_any_list_is_read_as_a_host_list(tmp_path):
    (tmp_path / "h.json").write_text('[{"ip": "10.0.0.1"}]\n')
    with pytest.raises(ConfigError) as info:
        load_config("h.json", cwd=tmp_path)
    assert str(info.value).startswith("h.json:1: [0]: there is no 'ssh'"), str(info.value)


@pytest.mark.parametrize("path", ["", "  "])
def test_an_empty_config_path_says_so(tmp_path, path):
    with pytest.raises(ConfigError) as info:
        load_config_with_report(path, cwd=tmp_path)
    msg = str(info.value)
    assert msg.startswith("--config: the config path is empty; give the path of a boltring.yaml"), msg
    assert "is a directory" not in msg


def test_a_command_line_script_is_looked_up_from_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, cwd=tmp_path)
    with pytest.raises(ConfigError) as info:
        with_overrides(config, script="nonexist.py")
    msg = str(info.value)
    assert msg.startswith("command line: --script: 'nonexist.py' is not a file"), msg
    assert msg.endswith("relative to the current folder") and "config file" not in msg


def test_a_config_script_is_still_looked_up_from_the_config_file(tmp_path):
    (tmp_path / "c.yaml").write_text("nodes: [{name: a, local: true}]\njob: {script: nope.py}\n")
    with pytest.raises(ConfigError) as info:
        load_config("c.yaml", cwd=tmp_path)
    assert str(info.value).endswith("relative to the config file"), str(info.value)
