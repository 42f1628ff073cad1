"""The waypoint: an L7 proxy for a namespace, service or workload (docs/waypoint.md)."""
