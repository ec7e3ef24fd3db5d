"""The pure core: session state machine and disconnect classifier. No I/O, no clocks, no tasks.

Imports nothing of vm_agent.
"""
