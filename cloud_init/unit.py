"""The systemd unit, read from its one source ``systemd/vm-agent.service``.

``cloud_init/vm-agent.service`` is a symlink to that file: a checkout reads through it
and a built wheel carries the file's bytes as package data.
"""

from __future__ import annotations

from importlib import resources

UNIT_RESOURCE = "vm-agent.service"


def unit_text() -> str:
    return resources.files("cloud_init").joinpath(UNIT_RESOURCE).read_bytes().decode("utf-8")
