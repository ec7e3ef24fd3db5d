"""The node image: the VM test's Debian image with vm-agent and the agents installed from the
built artifacts, so a node booted from it skips both install steps (docs/provisioning.md).

`python -m tests.vm.node_image` (`make node-image`) builds it or finds it cached. The install
is the very steps a node runs (`cloud_init.install`'s `vm-agent` and `agents` scripts), run
by chroot in a loop-mounted copy of the base image's disk and fetching from a loopback HTTP
server, so the image's markers are written by the same code as a boot's. Cached beside the
base images, keyed on the base image's key, both artifacts' sha256 and this file; its
manifest records them. A build removes the node images it makes stale (each is a copy of
the base disk, about 1.4 GB, and rebuilt in seconds). Needs root (mount, chroot) and
nothing beyond loopback.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cloud_init.install import agents_script, wheelhouse_script
from cloud_init.params import AgentsInstall, Artifact
from control_plane.provisioning.artifacts.manifest import Manifest, load_manifest, verify_files
from tests.vm import image_build
from tests.vm.image import MANIFEST, VMImage, _locked, default_cache_root, ensure_image

REPO = Path(__file__).resolve().parents[2]
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def node_image_key(base: VMImage, manifest: Manifest) -> str:
    agents = manifest.agents.sha256 if manifest.agents else "-"
    parts = [base.key, manifest.wheelhouse.sha256, agents, Path(__file__).read_text()]
    return "node-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _served(directory: Path) -> Iterator[str]:
    """The artifacts over HTTP on loopback (the scripts' curl allows http and https only)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(directory)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextmanager
def _mounted(rootfs: Path, mountpoint: Path) -> Iterator[Path]:
    """The disk's file system, with the host's /dev and a /proc for the installs."""
    with ExitStack() as stack:
        mountpoint.mkdir()
        subprocess.run(["mount", "-o", "loop", str(rootfs), str(mountpoint)], check=True)
        stack.callback(subprocess.run, ["umount", str(mountpoint)], check=True)
        for source, target, options in (
            ("/dev", "dev", ["--bind"]),
            ("proc", "proc", ["-t", "proc"]),
        ):
            subprocess.run(["mount", *options, source, str(mountpoint / target)], check=True)
            stack.callback(subprocess.run, ["umount", str(mountpoint / target)], check=True)
        yield mountpoint


def step_scripts(manifest: Manifest, base_url: str) -> dict[str, str]:
    """The two install steps as a node renders them, fetching from `base_url`."""
    wheelhouse = manifest.wheelhouse
    scripts = {
        "vm-agent": wheelhouse_script(
            Artifact(url=f"{base_url}/{wheelhouse.file}", sha256=wheelhouse.sha256)
        )
    }
    if manifest.agents is not None:
        bundle = Artifact(url=f"{base_url}/{manifest.agents.file}", sha256=manifest.agents.sha256)
        scripts["agents"] = agents_script(
            AgentsInstall(bundle=bundle, names=manifest.agents.agents)
        )
    return scripts


def install_into(root: Path, scripts: dict[str, str]) -> dict[str, float]:
    """Runs each step by chroot in `root`; its seconds by name."""
    seconds = {}
    for name, script in scripts.items():
        started = time.monotonic()
        result = subprocess.run(
            ["chroot", str(root), "/bin/bash", "-c", script, name],
            env={"PATH": CHROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8"},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"step {name} failed in the image:\n{result.stdout}{result.stderr}")
        seconds[name] = round(time.monotonic() - started, 1)
    return seconds


def ensure_node_image(
    base: VMImage, artifacts: Path, cache_root: Path | None = None
) -> tuple[VMImage, bool]:
    """The node image for `base` and the artifacts in `artifacts`, and whether built now."""
    manifest = load_manifest(artifacts)
    root = cache_root or default_cache_root()
    key = node_image_key(base, manifest)
    directory = root / key
    with _locked(root / f"{key}.lock"):
        if (directory / MANIFEST).is_file():
            return _load(directory, key), False
        verify_files(artifacts, manifest)
        started = time.monotonic()
        partial_dir = root / f"{key}.partial"
        shutil.rmtree(partial_dir, ignore_errors=True)
        partial_dir.mkdir()
        for name in (image_build.KERNEL, image_build.INITRD):
            shutil.copyfile(base.directory / name, partial_dir / name)
        rootfs = partial_dir / image_build.ROOTFS
        subprocess.run(["cp", "--sparse=always", str(base.rootfs), str(rootfs)], check=True)
        with _served(artifacts) as url, _mounted(rootfs, partial_dir / "mnt") as mounted:
            steps = install_into(mounted, step_scripts(manifest, url))
        (partial_dir / "mnt").rmdir()
        record = {
            "key": key,
            "base_key": base.key,
            "wheelhouse": {"file": manifest.wheelhouse.file, "sha256": manifest.wheelhouse.sha256},
            "agents": None
            if manifest.agents is None
            else {
                "file": manifest.agents.file,
                "sha256": manifest.agents.sha256,
                "agents": list(manifest.agents.agents),
            },
            "build_seconds": {**steps, "total": round(time.monotonic() - started, 1)},
        }
        (partial_dir / MANIFEST).write_text(json.dumps(record, indent=2, sort_keys=True))
        partial_dir.rename(directory)
    for gone in prune_node_images(root, key):
        print(f"node image {gone.name} removed: {key} replaces it", flush=True)
    return _load(directory, key), True


def prune_node_images(root: Path, keep: str) -> list[Path]:
    """Removes every node image in `root` but `keep` (each under its own lock, so one a
    build or a boot holds is waited for); what it removed. Base images are left alone."""
    removed = []
    for directory in sorted(root.glob("node-*")):
        key = directory.name
        if key == keep or not directory.is_dir() or key.endswith(".partial"):
            continue
        with _locked(root / f"{key}.lock"):
            shutil.rmtree(directory, ignore_errors=True)
        (root / f"{key}.lock").unlink(missing_ok=True)
        removed.append(directory)
    return removed


def _load(directory: Path, key: str) -> VMImage:
    manifest = json.loads((directory / MANIFEST).read_text())
    return VMImage(directory=directory, key=key, manifest=manifest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.vm.node_image", description=__doc__)
    parser.add_argument("--artifacts", type=Path, default=REPO / "build" / "artifacts")
    parser.add_argument("--cache", type=Path, help="cache directory (default: the VM images')")
    args = parser.parse_args(argv)
    base = ensure_image(cache_root=args.cache).image
    started = time.monotonic()
    image, built = ensure_node_image(base, args.artifacts, args.cache)
    how = "built" if built else "cached, found"
    print(
        f"node image {image.key} (base {base.key}, wheelhouse "
        f"{image.manifest['wheelhouse']['sha256'][:12]}): {how} in "
        f"{time.monotonic() - started:.1f} s at {image.directory}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
