"""The ACP client role: what the daemon says to agents and how it answers them."""
