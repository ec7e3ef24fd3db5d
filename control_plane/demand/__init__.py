"""The record of demand, pure: requirement types (`reservations`), the layered resolver with
provenance (`resolver`), providers' capacity maps (`capacity`), placement with its
explanation (`placement`), and the quotas (`quotas`). No I/O; imports only
control_plane.settings."""
