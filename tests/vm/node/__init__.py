"""The product's own path in a real VM: one node, booted once, for many checks."""
