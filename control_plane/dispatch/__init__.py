"""Tasks on nodes: submission (`tasks`, `workspaces`: resolve, place, record in one
transaction), the sessions the control plane made (`sessions`), and the reconcile loops that
carry a task to its outcome. May import provisioning, providers, github, identity, storage,
demand."""
