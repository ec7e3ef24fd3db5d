"""A session's workspace for the people who watch it (docs/viewer-api.md, *Workspace*).

``files``: list, stat, read (with byte ranges) and write beneath the session's directory,
opened from a handle on it with ``containment.beneath`` (no link at any component) and
with the agent user's file credentials (``containment.fsuid``), the same rules as the
agents' ``fs/*``. ``git``: status, diff and log of the workspace, git run as the agent
user in the session's cgroup, bounded in time and output, with every repository setting
that could run a program overridden. ``paths``: what a viewer's relative path may be
(pure).

May import common, core, jsonrpc, eventlog, process, edge, containment, acp.
"""
