"""What the control plane keeps: the schema (`db`), Alembic migrations (`migrate`,
`migrations/`), what nodes report (`node_store`), node provisioning rows
(`provisioning_store`) and stored layer defaults (`layers`). May import demand."""
