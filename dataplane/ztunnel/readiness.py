"""ztunnel's readiness tokens: the shared primitive in mesh/readiness.py."""

from mesh.readiness import Readiness

__all__ = ["Readiness"]
