"""The VM image, built once per recipe and kept in a cache directory.

`python -m tests.vm.image` (`make vm-image`) builds it or finds it cached and prints how
long that took. The cache is `$VM_TEST_CACHE`, else `~/.cache/vm-agent/vm-images`; each
image is a directory named by its cache key, made under a lock (two test runs on one
machine build it once) and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.vm import image_build
from tests.vm.recipe import Recipe, cache_key, sources_for

MANIFEST = "manifest.json"

# tool, Debian package: what building and booting need on the host
HOST_TOOLS: tuple[tuple[str, str], ...] = (
    ("mmdebstrap", "mmdebstrap"),
    ("mke2fs", "e2fsprogs"),
    ("dpkg-query", "dpkg"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-img", "qemu-utils"),  # the qemu provider's overlays (tests/vm/test_qemu_provider.py)
    ("cloud-localds", "cloud-image-utils"),
    ("socat", "socat"),
)


@dataclass(frozen=True)
class VMImage:
    directory: Path
    key: str
    manifest: dict[str, Any]

    @property
    def rootfs(self) -> Path:
        return self.directory / image_build.ROOTFS

    @property
    def kernel(self) -> Path:
        return self.directory / image_build.KERNEL

    @property
    def initrd(self) -> Path:
        return self.directory / image_build.INITRD


@dataclass(frozen=True)
class Obtained:
    image: VMImage
    built: bool
    seconds: float


def missing_tools() -> list[str]:
    """'tool (Debian package p)' for each host tool not on PATH."""
    return [f"{tool} (Debian package {pkg})" for tool, pkg in HOST_TOOLS if not shutil.which(tool)]


def default_cache_root() -> Path:
    configured = os.environ.get("VM_TEST_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vm-agent" / "vm-images"


def host_sources(suite: str) -> str:
    """The host's apt sources for Debian's `suite`: the image comes from the registry the
    host is set up to use."""
    texts = [p.read_text() for p in sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    return sources_for(texts, suite)


def builder_source() -> bytes:
    return Path(image_build.__file__).read_bytes()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load(directory: Path, key: str) -> VMImage | None:
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return None
    return VMImage(directory=directory, key=key, manifest=json.loads(manifest.read_text()))


def ensure_image(recipe: Recipe | None = None, cache_root: Path | None = None) -> Obtained:
    """The image for `recipe`, from the cache or built now."""
    recipe = recipe or Recipe()
    root = cache_root or default_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    sources = host_sources(recipe.suite)
    key = cache_key(recipe, builder_source(), sources)
    directory = root / key
    started = time.monotonic()
    with _locked(root / f"{key}.lock"):
        found = _load(directory, key)
        if found is not None:
            return Obtained(found, built=False, seconds=time.monotonic() - started)
        partial = root / f"{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        with tempfile.TemporaryDirectory(prefix="vm-image-", dir=root) as work_name:
            work = Path(work_name)
            sources_file = None
            if sources:
                sources_file = work / "debian.sources"
                sources_file.write_text(sources)
            times = image_build.build(recipe, work, partial, sources_file)
            packages = image_build.package_versions(work / "tree")
        manifest = {
            "key": key,
            "recipe": recipe.describe(),
            "sources": sources,
            "packages": packages,
            "build_seconds": {
                "mmdebstrap": round(times.mmdebstrap, 1),
                "mke2fs": round(times.mke2fs, 1),
                "total": round(time.monotonic() - started, 1),
            },
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        partial.rename(directory)
    image = _load(directory, key)
    assert image is not None
    return Obtained(image, built=True, seconds=time.monotonic() - started)


def describe(obtained: Obtained) -> str:
    image = obtained.image
    size_mb = image.rootfs.stat().st_blocks * 512 / 2**20
    if obtained.built:
        stages = image.manifest["build_seconds"]
        how = (
            f"built in {obtained.seconds:.1f} s (mmdebstrap {stages['mmdebstrap']} s, "
            f"mke2fs {stages['mke2fs']} s)"
        )
    else:
        how = f"cached, found in {obtained.seconds:.2f} s"
    return (
        f"VM image {image.key}: {how}; {len(image.manifest['packages'])} packages, "
        f"rootfs {size_mb:.0f} MB used at {image.directory}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.vm.image", description=__doc__)
    parser.add_argument("--cache", type=Path, help="cache directory (default: %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="drop the cached image first")
    parser.add_argument(
        "--prune", action="store_true", help="remove the cache's other images (other keys)"
    )
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        print("missing host tools: " + ", ".join(missing), file=sys.stderr)
        return 2
    root = args.cache or default_cache_root()
    if args.rebuild:
        key = cache_key(Recipe(), builder_source(), host_sources(Recipe().suite))
        shutil.rmtree(root / key, ignore_errors=True)
    obtained = ensure_image(cache_root=root)
    print(describe(obtained), flush=True)
    if args.prune:
        for other in root.iterdir():
            if (other / MANIFEST).is_file() and other.name != obtained.image.key:
                shutil.rmtree(other)
                print(f"removed {other}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
