"""HTTP endpoints of the control plane (Starlette routes).

May import every part of control_plane but app.
"""
