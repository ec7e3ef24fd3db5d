"""The control plane as a viewer of its nodes: one websocket per node to the daemon's
`/v1/ws` (TLS checked against the node CA and the node's name, or plain `ws://` on
loopback), authenticated with a `node`-scope token it mints for itself, carrying JSON-RPC
calls (session start, prompt, permission answers, cancel, stop). It implements the
dispatcher's `NodeCalls`; app wires the two. May import identity, storage, demand and the
daemon's JSON-RPC layer (vm_agent.jsonrpc); not dispatch (the same layer)."""
