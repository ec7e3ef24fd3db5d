"""The thin control plane: the record of demand, nodes and their tokens, tasks to their outcome.

Entry points here: ``settings`` (CONTROL_PLANE_* variables), ``plane`` (one instance's
state: settings, engine, tokens, secrets), ``app`` (create_app, serve_control_plane),
``serving`` (uvicorn inside a task group), ``__main__`` (serve, mint, artifacts). The parts,
lowest layer first (docs/architecture.md; tests/layout keeps the order):

- demand/: requirement types, the resolver with provenance, capacity maps, placement (pure)
- storage/: schema, migrations, what nodes report, provisioning rows, stored layer defaults
- identity/: keys and JWKS, the callback-token ledger, tokens, the node CA, the secret store
- provisioning/, github/, providers/: making nodes, GitHub, cloud providers
- dispatch/: tasks and workspaces, the sessions the control plane made, reconcile loops
- api/: the HTTP endpoints
"""
