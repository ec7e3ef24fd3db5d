"""What a VM runs imports nothing that only the control-plane extra installs."""

from __future__ import annotations

import subprocess
import sys

CONTROL_PLANE_MODULES = ("starlette", "uvicorn", "sqlalchemy", "alembic", "yaml", "psycopg")
VM_ENTRY_POINTS = (
    "import vm_agent.daemon.run, vm_agent.cli.serve, vm_agent.cli.main, vm_agent.cli.prompt\n"
    "import vm_agent.fake_agent\n"
    "vm_agent.cli.main._parser()\n"
)


def test_the_daemon_and_its_commands_need_no_control_plane_package() -> None:
    probe = f"import sys\n{VM_ENTRY_POINTS}print('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    loaded = {name.split(".")[0] for name in out.split()}
    assert not loaded & set(CONTROL_PLANE_MODULES)
