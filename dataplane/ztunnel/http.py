"""ztunnel's admin, metrics and readiness HTTP server: the shared one in mesh/admin_http.py
(the waypoint serves its ports with it too)."""

from mesh.admin_http import Handler, Response, Routes, serve, text

__all__ = ["Handler", "Response", "Routes", "serve", "text"]
