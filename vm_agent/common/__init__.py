"""Small helpers every part of the daemon may use: redaction of secrets (`redact`), files
only the daemon may read (`private_files`), the daemon's own exceptions (`exc`).

Imports nothing of vm_agent.
"""
