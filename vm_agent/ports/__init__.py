"""The ports a session's processes listen on (the agent's dev server, a person's server).

``procnet`` (pure): the listening TCP sockets from ``/proc/net/tcp`` and ``tcp6``.
``scan``: which of them belong to a session: by its cgroup (the sockets its processes hold
open), else by its agent user's uid; never any other process of the node, so never the
daemon's own port. ``watch``: each session's set, compared on a cadence, reported as a
``ports.changed`` event when it changes.

May import common, core, jsonrpc, eventlog, process, edge, containment.
"""
