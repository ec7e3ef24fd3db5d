"""JSON-RPC 2.0: one implementation for the agents stdio and the viewers websocket.

Imports nothing of vm_agent but common.
"""
