"""The steps that turn a recipe into a bootable disk: mmdebstrap, the recipe's files,
the kernel and initrd copied out, `mke2fs -d` (no loop device, no mount).

The image cache is keyed on this file's source as well as on the recipe, so a change
here builds a new image.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.vm.recipe import Recipe

ROOTFS = "rootfs.img"
KERNEL = "vmlinuz"
INITRD = "initrd.img"


@dataclass(frozen=True)
class BuildTimes:
    mmdebstrap: float
    mke2fs: float


def mmdebstrap_argv(recipe: Recipe, tree: Path, sources_file: Path | None) -> list[str]:
    argv = [
        "mmdebstrap",
        f"--variant={recipe.variant}",
        f"--include={','.join(recipe.packages)}",
        # the image's list is the recipe's, not whatever Recommends pull in
        '--aptopt=Apt::Install-Recommends "false"',
        '--aptopt=Acquire::Languages "none"',
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        recipe.suite,
        str(tree),
    ]
    if sources_file is not None:
        argv.append(str(sources_file))
    return argv


def customize(recipe: Recipe, tree: Path) -> None:
    for relative, text in recipe.files.items():
        path = tree / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    units = tree / "etc/systemd/system"
    for unit in recipe.masked_units:
        link = units / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    for command in recipe.chroot_commands:
        subprocess.run(["chroot", str(tree), *command], check=True)


def copy_boot_files(tree: Path, out: Path) -> None:
    for pattern, name in (("vmlinuz-*", KERNEL), ("initrd.img-*", INITRD)):
        found = sorted((tree / "boot").glob(pattern))
        if len(found) != 1:
            raise RuntimeError(f"expected one /boot/{pattern} in the tree, found {found}")
        (out / name).write_bytes(found[0].read_bytes())


def package_versions(tree: Path) -> dict[str, str]:
    listing = subprocess.run(
        ["dpkg-query", f"--admindir={tree}/var/lib/dpkg", "-W", "-f=${Package}\t${Version}\n"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split("\t", 1) for line in listing.splitlines() if line)


def build(recipe: Recipe, work: Path, out: Path, sources_file: Path | None) -> BuildTimes:
    """Build the image's files into `out`, using `work` for the tree (left for the caller
    to remove)."""
    tree = work / "tree"
    started = time.monotonic()
    subprocess.run(mmdebstrap_argv(recipe, tree, sources_file), check=True)
    debootstrapped = time.monotonic()
    customize(recipe, tree)
    copy_boot_files(tree, out)
    rootfs = out / ROOTFS
    subprocess.run(
        [
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-L",
            "rootfs",
            "-d",
            str(tree),
            str(rootfs),
            recipe.disk_size,
        ],
        check=True,
    )
    return BuildTimes(mmdebstrap=debootstrapped - started, mke2fs=time.monotonic() - debootstrapped)
