"""A tiny MCP server over stdio for the real-agent tests: newline-delimited JSON-RPC
(``initialize``, ``tools/list``, ``tools/call``), one tool ``note`` that echoes its text.
Every request it gets is appended to the file named by its one argument (JSON lines), so a
test can see that the agent started it and called the tool.

Run as ``python mcp_server.py RECORD_FILE`` (the agent starts it, from agentSettings)."""

from __future__ import annotations

import json
import sys
from typing import Any

TOOL = {
    "name": "note",
    "description": "Notes a text and answers it back.",
    "inputSchema": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
}


def answer(method: str, params: dict[str, Any]) -> dict[str, Any]:
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "recorder", "version": "1.0"},
        }
    if method == "tools/list":
        return {"tools": [TOOL]}
    if method == "tools/call":
        text = str(params.get("arguments", {}).get("text", ""))
        return {"content": [{"type": "text", "text": f"noted: {text}"}], "isError": False}
    if method == "ping":
        return {}
    raise KeyError(method)


def main(record: str) -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        with open(record, "a", encoding="utf-8") as out:
            out.write(json.dumps(message) + "\n")
        if "id" not in message:
            continue  # a notification (notifications/initialized)
        try:
            reply: dict[str, Any] = {
                "result": answer(message["method"], message.get("params") or {})
            }
        except KeyError:
            reply = {"error": {"code": -32601, "message": f"no method {message.get('method')}"}}
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": message["id"], **reply}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
