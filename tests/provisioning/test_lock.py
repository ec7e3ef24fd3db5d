"""The VM's lock file: what `make lock` wrote still matches pyproject's runtime dependencies,
pins everything exactly with hashes, and keeps the control plane's packages off the VM."""

from __future__ import annotations

import tomllib

import pytest
from packaging.requirements import Requirement

from control_plane.provisioning.artifacts.lockfile import LockError, normalize, parse_lock
from tests.cloud_init.helpers import REPO

LOCK = REPO / "locks" / "vm-agent.txt"
CONTROL_PLANE_ONLY = {
    "starlette", "uvicorn", "sqlalchemy", "alembic", "pyyaml", "psycopg", "hcloud",
}  # fmt: skip
VIA_PYPROJECT = "vm-agent (pyproject.toml)"


def pyproject() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def runtime_requirements() -> list[Requirement]:
    return [Requirement(text) for text in pyproject()["dependencies"]]  # type: ignore[attr-defined]


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    pins = {pin.name: pin for pin in parse_lock(LOCK.read_text())}
    for req in runtime_requirements():
        pin = pins.get(normalize(req.name))
        assert pin is not None, f"{req.name} is not in {LOCK.name}: run `make lock`"
        assert req.specifier.contains(pin.version, prereleases=True), (
            f"{req.name}=={pin.version} is outside {req.specifier}: run `make lock`"
        )


def test_the_direct_dependencies_are_exactly_pyprojects() -> None:
    pins = parse_lock(LOCK.read_text())
    direct = {pin.name for pin in pins if VIA_PYPROJECT in pin.via}
    assert direct == {normalize(r.name) for r in runtime_requirements()}, "run `make lock`"


def test_nothing_of_the_control_plane_goes_to_the_vm() -> None:
    names = {pin.name for pin in parse_lock(LOCK.read_text())}
    assert not names & CONTROL_PLANE_ONLY
    extra = pyproject()["optional-dependencies"]["control-plane"]  # type: ignore[index]
    assert {normalize(Requirement(r).name) for r in extra} <= CONTROL_PLANE_ONLY


def test_pip_is_pinned_for_the_bootstrap_and_everything_has_sha256() -> None:
    pins = parse_lock(LOCK.read_text())
    assert [p.via for p in pins if p.name == "pip"] == [("-r locks/vm-bootstrap.in",)]
    assert all(p.hashes and all(h.startswith("sha256:") for h in p.hashes) for p in pins)
    assert "make lock" in LOCK.read_text().splitlines()[1]


def test_parse_keeps_via_comments_and_joins_continuations() -> None:
    text = (
        "# header\n"
        "anyio==4.4.0 \\\n    --hash=sha256:"
        + "a" * 64
        + " \\\n    --hash=sha256:"
        + "b" * 64
        + "\n"
        "    # via\n    #   vm-agent (pyproject.toml)\n    #   httpx\n"
        "Typing_Extensions==4.1 --hash=sha256:" + "c" * 64 + "\n    # via anyio\n"
    )
    first, second = parse_lock(text)
    assert (first.name, first.version, len(first.hashes)) == ("anyio", "4.4.0", 2)
    assert first.via == ("vm-agent (pyproject.toml)", "httpx")
    assert (second.name, second.via) == ("typing-extensions", ("anyio",))
    assert second.requirement_line() == f"typing-extensions==4.1 --hash=sha256:{'c' * 64}"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("anyio>=4\n", "exact"),
        ("anyio==4.4\n", "no hash"),
        ("anyio==4.4 --hash=md5:abc\n", "only --hash"),
        ("-e .\n", "only pins"),
        ("--index-url https://x/simple\n", "only pins"),
        (f"a==1 --hash=sha256:{'a' * 64}\nA==2 --hash=sha256:{'b' * 64}\n", "twice"),
        ("a==1 \\\n", "continuation"),
    ],
)
def test_what_a_locked_install_would_refuse_is_refused(text: str, says: str) -> None:
    with pytest.raises(LockError, match=says):
        parse_lock(text)
