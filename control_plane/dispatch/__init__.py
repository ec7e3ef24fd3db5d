"""Tasks on nodes: submission (`tasks`, `workspaces`: resolve, place, record in one
transaction), the sessions the control plane made (`sessions`), and carrying a task to its
outcome: its status (`status`, pure), the run's rows (`runs`), what users read and ask
(`views`, `asks`), where nodes are (`addresses`), the agents a task may name (`catalog`),
a task's work brought back from its repository (`deliver`: the node's push answer
checked, the pull request), and the reconcile loop (`reconcile`, pure; `observe`,
`leases`, `loop`: the shell, which reaches nodes through the `NodeCalls` protocol that
control_plane.nodes_link implements), and token usage summed per task and per user
(`usage`, from the `prompt.finished` events nodes send); the node lifecycle loop
(`nodes`: placement's asks become VMs, idle ones are reaped; what they boot from,
`node_boot`).
May import provisioning, providers, github, identity, storage, demand, cloud_init and the
daemon's JSON-RPC errors (vm_agent.jsonrpc), catalog (vm_agent.process.catalog) and
usage arithmetic (vm_agent.core.usage)."""
