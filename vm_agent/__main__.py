"""``python -m vm_agent``: the same command line as ``vm-agent``."""

import sys

from vm_agent.cli.main import main

sys.exit(main())
