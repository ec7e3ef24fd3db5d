"""Agents are contained (docs/containment.md): their own user, their own cgroup, their own paths.

Pure decisions: ``users`` (the pool, who gets which user), ``accounts`` (what creating the
pool takes), ``limits`` (reservation to cgroup values), ``paths`` (where a session may
work), ``plan`` (all of it for one session). Thin shells: ``ensure`` (groupadd/useradd),
``cgroups``/``cgroupfs`` (the hierarchy), ``spawn`` (start inside a cgroup), ``workdir``,
``beneath`` and ``fsuid`` (file access beneath a root, as the agent's user), ``host`` and
``session`` (what the daemon and a session hold).

May import common, core, jsonrpc, eventlog, process, edge.
"""
