"""The VM harness: a cached Debian 12 image, qemu under TCG with a NoCloud seed, commands
in the guest through qemu-guest-agent (see machine.py, fixtures.py)."""
