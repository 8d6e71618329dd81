"""jupiter's `host` is a hostname or address; a user written into it is named, not doubled."""

from __future__ import annotations

import pytest

from boltring.cluster.config.load import ConfigError, load_config_text

TEXT = """\
backend: ring
nodes:
  - host: alice@192.168.1.10
    name: studio
    ssh_user: alice
  - {host: 192.168.1.11, name: mini}
"""


@pytest.mark.parametrize("text", [TEXT, TEXT.replace("    ssh_user: alice\n", "")])
def test_user_in_host_is_one_clear_error(text):
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "cluster.yaml")
    assert e.value.line == 3
    assert e.value.key == "nodes[0].host"
    message = str(e.value)
    assert "includes a user name" in message and "ssh_user" in message
    assert "alice@alice" not in message
