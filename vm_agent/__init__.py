"""vm-agent: supervisor for ACP coding agents on cloud VMs."""

__version__ = "0.1.0"
