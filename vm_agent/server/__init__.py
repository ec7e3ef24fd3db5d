"""The viewer API server (docs/viewer-api.md): websocket JSON-RPC, health and metrics.

May import the session and what is below it; never control_link or daemon.
"""

from vm_agent.server.protocols import Identity, ServerMetrics, TokenVerifier
from vm_agent.server.server import ViewerServer

__all__ = ["Identity", "ServerMetrics", "TokenVerifier", "ViewerServer"]
