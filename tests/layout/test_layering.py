"""The layering the packages' docstrings promise, checked over the real import graph.

A module may import its own package, any package of a lower layer, and nothing above:
so a pure core cannot grow an I/O dependency and no part reaches up into what wires it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lower numbers are lower layers. Two parts on one layer may not import each other.
LAYERS: dict[str, int] = {
    # the daemon
    "vm_agent.common": 0,
    "vm_agent.core": 0,
    "vm_agent.jsonrpc": 0,
    "vm_agent.eventlog": 1,
    "vm_agent.process": 1,
    "vm_agent.edge": 1,
    "vm_agent.containment": 2,
    "vm_agent.acp": 3,
    "vm_agent.gitwork": 3,
    "vm_agent.runtime": 3,
    "vm_agent.session": 4,
    "vm_agent.workspace": 4,
    "vm_agent.terminals": 4,
    "vm_agent.ports": 4,
    "vm_agent.control_link": 5,
    "vm_agent.server": 5,
    "vm_agent.daemon": 6,
    "vm_agent.fake_agent": 7,
    "vm_agent.gateway": 7,
    "vm_agent.cli": 8,
    "vm_agent.__main__": 9,
    # the VM's cloud-config, rendered by the control plane
    "cloud_init": 10,
    # the control plane
    "control_plane.settings": 11,
    "control_plane.serving": 11,
    "control_plane.demand": 11,
    "control_plane.storage": 12,
    "control_plane.identity": 13,
    "control_plane.provisioning": 14,
    "control_plane.github": 14,
    "control_plane.providers": 14,
    "control_plane.dispatch": 15,
    "control_plane.nodes_link": 15,  # the node as a viewer's peer; dispatch sees a Protocol
    "control_plane.plane": 16,
    "control_plane.api": 17,
    "control_plane.app": 18,
    "control_plane.__main__": 19,
}
# The root packages hold only a docstring (and vm_agent's version): anyone may import them.
ROOTS = {"vm_agent", "control_plane", "cloud_init"}
# Where a higher part may be imported on purpose, and why.
ALLOWED_UP: dict[str, set[str]] = {
    # `vm-agent dev` runs a control plane in the same process as the daemon
    "vm_agent.cli": {
        "control_plane.app",
        "control_plane.settings",
        "control_plane.identity",
        "control_plane.plane",
    },
}


def part_of(module: str) -> str | None:
    best = None
    for part in LAYERS:
        if (module == part or module.startswith(part + ".")) and (
            best is None or len(part) > len(best)
        ):
            best = part
    return best


def modules() -> dict[str, Path]:
    found = {}
    for top in ROOTS:
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.split(".")[0] in ROOTS}


def violations() -> list[str]:
    known = modules()
    bad = []
    for name, path in sorted(known.items()):
        if name in ROOTS:
            continue
        own = part_of(name)
        if own is None:
            bad.append(f"{name}: in no layer (add its package to LAYERS)")
            continue
        for target in sorted(imports_of(name, path)):
            if target in ROOTS or (target not in known and target.rpartition(".")[0] in known):
                # `from pkg import name` names an attribute, not a module: judged by pkg
                continue
            theirs = part_of(target)
            if theirs is None or theirs == own:
                continue
            if LAYERS[theirs] < LAYERS[own]:
                continue
            if any(target == up or target.startswith(up + ".") for up in ALLOWED_UP.get(own, ())):
                continue
            bad.append(f"{name} (layer {LAYERS[own]}) imports {target} (layer {LAYERS[theirs]})")
    return bad


def test_no_part_imports_a_part_above_it() -> None:
    assert violations() == []


def test_the_daemon_never_imports_the_control_plane_outside_its_cli() -> None:
    known = modules()
    for name, path in known.items():
        if name.startswith("vm_agent.") and not name.startswith("vm_agent.cli"):
            assert not any(m.startswith("control_plane") for m in imports_of(name, path)), name


def test_no_module_is_left_loose_at_a_package_root() -> None:
    loose = [
        p.name
        for top in ("vm_agent",)
        for p in (ROOT / top).glob("*.py")
        if p.name not in {"__init__.py", "__main__.py"}
    ]
    assert loose == []


@pytest.mark.parametrize("part", sorted(LAYERS))
def test_each_package_says_what_it_owns(part: str) -> None:
    path = ROOT / Path(*part.split("."))
    if not path.is_dir():
        return  # a module such as control_plane.app: its own docstring is checked by ruff's eye
    init = path / "__init__.py"
    assert init.exists(), f"{part} has no __init__"
    doc = ast.get_docstring(ast.parse(init.read_text()))
    assert doc, f"{part}/__init__.py has no docstring saying what it owns"


def test_the_check_catches_an_import_from_above(tmp_path: Path) -> None:
    # the check must be able to fail: an edge the other way round is a violation
    fake = tmp_path / "m.py"
    fake.write_text("from vm_agent.server import ViewerServer\n")
    assert "vm_agent.server" in imports_of("vm_agent.core.m", fake)
    assert LAYERS[part_of("vm_agent.server") or ""] > LAYERS[part_of("vm_agent.core.m") or ""]


def test_no_product_module_passes_400_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for top in ROOTS
        for p in (ROOT / top).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}


def test_paths_made_from_a_module_file_still_name_the_checkout() -> None:
    # a move changes how many parents up the checkout is (artifacts build once broke so)
    from control_plane.provisioning.artifacts.cli import REPO
    from control_plane.storage.migrate import MIGRATIONS_DIR

    assert (REPO / "locks" / "vm-agent.txt").is_file()
    assert (MIGRATIONS_DIR / "env.py").is_file()
