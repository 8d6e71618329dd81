"""setuptools lists boltring's packages one by one (the top-level folders install under the one
`boltring` namespace), so a new subpackage that is not listed would be missing from a wheel
while every test run from the source tree still passed. This test is what notices."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_source_package_is_listed_in_pyproject():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    found = set()
    for top in ("netio", "cluster", "tui", "configs"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            found.add("boltring." + ".".join(rel.parts))
    assert found - listed == set(), "add these to [tool.setuptools] packages and package-dir"
    for pkg in listed:
        assert conf["package-dir"][pkg] == pkg.removeprefix("boltring.").replace(".", "/")
