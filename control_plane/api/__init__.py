"""HTTP endpoints of the control plane (Starlette routes)."""
