"""The pure core: session state machine, disconnect classifier, and the arithmetic of the
token usage agents report. No I/O, no clocks, no tasks.

Imports nothing of vm_agent.
"""
