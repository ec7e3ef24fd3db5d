"""The ACP gateway (`vm-agent acp`, docs/gateway.md): speaks ACP as an agent on stdio and
carries the conversation to a daemon's viewer API, so any ACP client can drive a supervised
remote session as if it were a local agent.

`mapping.py` and `feed.py` are the pure core (what a client's call becomes, what an event of
the durable log becomes for the client); `link.py` (the websocket to the daemon, resumed
from the last seq, its token renewed when one is given), `control_plane.py` (`--task`:
where a task's session is, asked of the control plane), `stdio.py` and `agent.py` are the
I/O shell.

May import: `vm_agent.jsonrpc`, `vm_agent.common` and the `acp` package's models; it is a
client of the daemon (like `vm-agent attach`), never a part of it.
"""
