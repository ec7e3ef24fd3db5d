"""The thin control plane: reservations, GitHub installation links, callback tokens."""
