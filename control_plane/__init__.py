"""The thin control plane: reservations, GitHub installation links, callback tokens.

Modules:
- settings: ControlPlaneSettings (CONTROL_PLANE_* environment variables)
- reservations, resolver, capacity: requirement types, the layered resolver with
  provenance, provider capacity maps; tasks: task submission (audit columns)
- github_links: installation links (storage key vs GitHub id)
- keys, tokens: Ed25519 keys with rotation and JWKS; callback/viewer/user tokens
- db, migrate, migrations/: schema and Alembic migrations (run at app start)
- node_store, secrets: what nodes report; per-agent credentials
- plane: ControlPlane (state of one instance, incl. FAULT INJECTION knobs for tests)
- app: create_app(settings) and serve_control_plane(settings, host, port)
- api/: the HTTP endpoints. Auth: callback endpoints want the node's callback token;
  tasks and GitHub links a user token; GET /api/nodes/{id}[/events] a user token
  with the "admin" scope.
"""
