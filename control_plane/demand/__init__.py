"""The record of demand, pure: requirement types (`reservations`), the layered resolver with
provenance (`resolver`), providers' capacity maps (`capacity`), and placement with its
explanation (`placement`). No I/O; imports only control_plane.settings."""
