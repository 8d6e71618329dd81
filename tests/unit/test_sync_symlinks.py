"""A symlinked folder inside the script folder is sent like any other folder (`ln -s
~/datasets/foo proj/dataset` was silently left out: "nothing changed", then FileNotFoundError in
the rank); a link that loops back to a folder on its own path is one clear error naming it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from boltring.cluster.nodes import sync


def script_root(tmp_path: Path) -> tuple[Path, list[sync.SyncRoot]]:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "train.py").write_text("print(1)\n")
    return proj, [sync.SyncRoot(local=proj.resolve(), name="proj", why="script folder")]


def test_symlinked_folder_is_followed(tmp_path):
    data = tmp_path / "datasets" / "foo"
    (data / "shards").mkdir(parents=True)
    (data / "a.txt").write_text("a")
    (data / "shards" / "s0.bin").write_bytes(b"\0" * 10)
    proj, roots = script_root(tmp_path)
    os.symlink(data, proj / "dataset")
    os.symlink(data, proj / "same_again")  # the same folder twice is no loop: both are sent
    os.symlink(tmp_path / "missing", proj / "broken")  # a dangling link is skipped, as before
    (tmp_path / "elsewhere.txt").write_text("e")
    os.symlink(tmp_path / "elsewhere.txt", proj / "file_link.txt")  # file links: copied, as before
    files = sync.local_manifest(roots)
    assert sorted(files) == [
        "proj/dataset/a.txt",
        "proj/dataset/shards/s0.bin",
        "proj/file_link.txt",
        "proj/same_again/a.txt",
        "proj/same_again/shards/s0.bin",
        "proj/train.py",
    ]
    assert files["proj/dataset/a.txt"].size == 1


def test_ignore_rules_apply_to_the_link_name(tmp_path):
    data = tmp_path / "big"
    data.mkdir()
    (data / "x.bin").write_bytes(b"x")
    proj, roots = script_root(tmp_path)
    os.symlink(data, proj / "dataset")
    (proj / ".boltringignore").write_text("dataset/\n")
    assert sorted(sync.local_manifest(roots)) == ["proj/train.py"]


@pytest.mark.parametrize(
    "link, target",
    [
        ("loop", "."),  # to the script folder itself
        ("sub/up", ".."),  # to an ancestor inside the root
        ("outside", "../.."),  # to a folder that holds the script folder
    ],
)
def test_a_link_back_to_its_own_path_is_one_clear_error(tmp_path, link, target):
    proj, roots = script_root(tmp_path)
    (proj / "sub").mkdir()
    os.symlink(target, proj / link)
    with pytest.raises(sync.SyncError) as e:
        sync.local_manifest(roots)
    msg = str(e.value)
    assert f"{proj.resolve() / link} links to " in msg and "holds it" in msg, msg
    assert "\n" not in msg
    assert ".boltringignore" in (e.value.hint or "") and f"/{link}" in (e.value.hint or "")


def test_a_cycle_of_two_links_is_one_clear_error(tmp_path):
    proj, roots = script_root(tmp_path)
    (proj / "a").mkdir()
    (proj / "c").mkdir()
    os.symlink("../c", proj / "a" / "to_c")
    os.symlink("../a", proj / "c" / "to_a")
    with pytest.raises(sync.SyncError, match=r"(to_a|to_c) links to .*, a folder that holds it"):
        sync.local_manifest(roots)
