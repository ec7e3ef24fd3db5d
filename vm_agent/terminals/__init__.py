"""People's terminals in a session's workspace (docs/viewer-api.md, *Terminals*).

``budget`` (pure): the byte rates that bound a terminal's input and its output into the
log. ``screen``: a VT emulator's state (``pyte``) that gives a late joiner the current
screen. ``pty``: one shell in a real PTY, started through the session's ``Launcher`` (as
its agent user, in a leaf of its cgroup), its output coalesced into the session's durable
event log. ``registry``: the terminals of the daemon, each ended with its session;
``orphans``: after a restart, the terminals a dead daemon left open are closed in the log.

May import common, core, jsonrpc, eventlog, process, edge, containment.
"""
