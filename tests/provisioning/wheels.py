"""Small real wheels made on the spot, and pip's own wheel, for offline wheelhouse tests."""

from __future__ import annotations

import base64
import ensurepip
import hashlib
import zipfile
from pathlib import Path

from tests.capabilities import missing


def make_wheel(
    directory: Path,
    name: str,
    version: str,
    *,
    requires: tuple[str, ...] = (),
    scripts: dict[str, str] | None = None,
    modules: dict[str, str] | None = None,
) -> Path:
    """A pure-Python wheel with METADATA, WHEEL, RECORD and optional console scripts."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = dict(modules or {f"{dist}/__init__.py": f"VERSION = {version!r}\n"})
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires)
    )
    files[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if scripts:
        files[f"{info}/entry_points.txt"] = "[console_scripts]\n" + "".join(
            f"{k} = {v}\n" for k, v in scripts.items()
        )
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    wheel = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            # A fixed time: the same wheel every time it is made.
            zf.writestr(zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0)), text)
    return wheel


def pip_wheel() -> Path:
    """The pip wheel the interpreter ships for ensurepip (a real, installable pip)."""
    bundled = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    if not bundled:
        missing("no bundled pip wheel in this Python's ensurepip")
    return bundled[-1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lock_line(wheel: Path) -> str:
    name, version = wheel.name.split("-")[:2]
    return f"{name.replace('_', '-')}=={version} \\\n    --hash=sha256:{sha256(wheel)}\n"
