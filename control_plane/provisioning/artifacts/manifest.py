"""What an artifacts directory holds: ``manifest.json``, naming each file with its sha256.

The control plane serves the files and puts their URLs and hashes in a node's user-data;
the VM checks each hash before it unpacks anything. Artifacts are not secret: their
integrity comes from the hashes in the user-data, not from the channel.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MANIFEST_NAME = "manifest.json"
FORMAT = 1
# A plain file name: served by name, never a path.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_SHA256 = re.compile(r"[0-9a-f]{64}")

_STRICT = ConfigDict(strict=True, frozen=True, extra="forbid")


class ManifestError(ValueError):
    pass


class ArtifactFile(BaseModel):
    model_config = _STRICT

    file: str
    sha256: str
    size: int = Field(ge=0)

    @field_validator("file")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _FILE_NAME.fullmatch(value) or value == MANIFEST_NAME:
            raise ValueError("must be a plain file name")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _SHA256.fullmatch(value):
            raise ValueError("must be 64 lowercase hex digits")
        return value


class Wheelhouse(ArtifactFile):
    vm_agent_version: str


class AgentBundle(ArtifactFile):
    agents: tuple[str, ...]
    # npm package name -> version, for every package in the bundle.
    packages: dict[str, str]


class Manifest(BaseModel):
    model_config = _STRICT

    format: int = FORMAT
    wheelhouse: Wheelhouse
    agents: AgentBundle | None = None

    def files(self) -> dict[str, ArtifactFile]:
        found: dict[str, ArtifactFile] = {self.wheelhouse.file: self.wheelhouse}
        if self.agents is not None:
            found[self.agents.file] = self.agents
        return found


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"no {MANIFEST_NAME} in {directory}") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from None
    try:
        manifest = Manifest.model_validate_json(json.dumps(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"{path}: {where}: {first['msg']}") from None
    if manifest.format != FORMAT:
        raise ManifestError(f"{path}: format {manifest.format}, this control plane reads {FORMAT}")
    return manifest


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Every file is there with its size and sha256 (slow for big files: at build and on demand)."""
    for name, entry in manifest.files().items():
        path = directory / name
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ManifestError(f"{name}: {exc.strerror}") from None
        if size != entry.size or sha256_of(path) != entry.sha256:
            raise ManifestError(f"{name}: does not match its sha256 in {MANIFEST_NAME}")


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Atomically: a reader sees the old manifest or the new one, never half of one."""
    path = directory / MANIFEST_NAME
    tmp = directory / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    os.replace(tmp, path)
    return path
