"""The idle daemon leaves the ACP models unimported (they cost ~9 MB; see vm_agent/acp/lazy.py)."""

from __future__ import annotations

import subprocess
import sys


def _imported_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_the_daemon_modules_do_not_import_the_acp_models() -> None:
    assert "acp.schema" not in _imported_after("import vm_agent.daemon.run, vm_agent.cli.serve")


def test_the_first_use_imports_them() -> None:
    code = "from vm_agent.acp.permissions import cancelled\ncancelled()"
    assert "acp.schema" in _imported_after(code)
