"""The viewer API server (DESIGN.md section 4): websocket JSON-RPC, health and metrics."""

from vm_agent.server.protocols import Identity, ServerMetrics, TokenVerifier
from vm_agent.server.server import ViewerServer

__all__ = ["Identity", "ServerMetrics", "TokenVerifier", "ViewerServer"]
