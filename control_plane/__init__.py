"""The thin control plane: the record of demand, callback tokens, GitHub installation links.

Modules:
- settings: ControlPlaneSettings (CONTROL_PLANE_* environment variables)
- reservations, resolver, capacity: requirement types, the layered resolver with
  provenance (layer, id, version), provider capacity maps
- layers: stored layer defaults (projects, users, agent profiles, triggers, platform),
  versioned; who may change which (pure)
- placement (pure): which node a task goes to, and the explanation JSON
- workspaces, tasks: task submission (resolve, place, make the session, store the audit
  on tasks and workspaces, in one transaction); candidates; release
- sessions: agent sessions the control plane made; who gets an agent's credentials and
  who may make a session (pure)
- keys, ledger, tokens: Ed25519 keys in the database with rotation and JWKS; every
  callback token recorded by jti, a refresh revokes the old one after a grace;
  callback/viewer/user tokens
- github_links: installation links (storage key vs GitHub id)
- db, migrate, migrations/: schema (SQLite or PostgreSQL) and Alembic migrations (run at
  app start, replicas in turn)
- node_store, secrets: what nodes report (events exactly once); per-agent credentials
- plane: ControlPlane (state of one instance: settings, engine, tokens, secrets)
- app: create_app(settings) and serve_control_plane(settings, host, port)
- api/: the HTTP endpoints. Auth: callback endpoints want the node's callback token;
  tasks, workspaces, defaults, sessions and GitHub links a user token; key rotation and
  GET /api/nodes/{id}[/events] a user token with the "admin" scope.
"""
