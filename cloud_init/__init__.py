"""Renders a VM's cloud-config: swap first, then the vm-agent install."""
