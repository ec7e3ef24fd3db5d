"""The ACP client role: what the daemon says to agents and how it answers them.

May import the layers below: common, core, jsonrpc, eventlog, process, edge, containment.
"""
