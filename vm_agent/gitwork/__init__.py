"""A task's repository in its session's workspace (issue 23, docs/viewer-api.md).

``spec``: what a ``session/start``'s ``repository`` may be, and which credential request
matches it (pure). ``clone``: the clone, its base and task branch, made as the session's
agent user in a leaf of its cgroup before the agent starts. ``broker``: the unix socket the
workspace's credential helper asks; the asking process is known by its peer credentials and
cgroup, and gets a read token for its own session's repository only. ``helper``: that
credential helper (standard library only: it runs for every git call of the agent).
``push``: the task branch leaves the workspace as a bundle made by the agent user, is
fetched into a mirror only the daemon owns, and is pushed from there with a write token
that only the daemon's own git ever holds.

May import common, core, jsonrpc, eventlog, process, edge, containment.
"""
