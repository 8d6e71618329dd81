"""cluster/agent/ runs on nodes whose environment may be half set up: the standard library only."""

import json
import subprocess
import sys

import pytest

AGENT_MODULES = [
    "spawn",
    "proc_groups",
    "nodeprobe",
    "probes_linux",
    "probes_macos",
    "facts",
    "manifest",
    "pyenv",
]


@pytest.mark.parametrize("name", AGENT_MODULES)
def test_agent_module_imports_only_the_standard_library(name):
    code = (
        "import sys, json; before = set(sys.modules); "
        f"import boltring.cluster.agent.{name}; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    loaded = json.loads(out)
    foreign = [
        m
        for m in loaded
        if m.split(".")[0] not in sys.stdlib_module_names
        and not (
            m in ("boltring", "boltring.cluster", "boltring.cluster.agent")
            or m.startswith("boltring.cluster.agent.")
        )
    ]
    assert foreign == [], f"boltring.cluster.agent.{name} pulls in {foreign}"
