"""Workload certificates: CSRs, the CA client (ztunnel and waypoint both use it)."""
