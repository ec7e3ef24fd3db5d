"""Sessions: the async shell around the pure session machine, and the supervisor that owns them.

May import everything below it (acp, runtime, containment, process, eventlog, ...);
never control_link, server or daemon.
"""
