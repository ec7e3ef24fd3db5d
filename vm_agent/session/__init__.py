"""Sessions: the async shell around the pure session machine, and the supervisor that owns them."""
