"""Making a node: the user-data a node boots with (`userdata`, rendered by cloud_init) and the
pinned artifacts it installs (`artifacts/`). May import identity, storage, demand, cloud_init."""
