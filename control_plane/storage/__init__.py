"""What the control plane keeps: the schema (`db`, with the GitHub tables of
`github_schema` and the one `meta`data), the engine (`engine`: SQLite kept
private, or PostgreSQL), Alembic migrations (`migrate`, `migrations/`), what nodes report
(`node_store`), node provisioning rows (`provisioning_store`), the node lifecycle's rows
(`machines`) and stored layer defaults (`layers`). May import demand."""
