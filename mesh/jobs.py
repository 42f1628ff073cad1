"""The contract between the services that queue background jobs and mesh-worker, which runs them.

Jobs travel through Celery with a Redis broker; producers send them by name, so they do not
import the worker's code.
"""

QUEUE = "mesh"
WRITE_CONDITIONS = "mesh.write_conditions"  # args: [items]; item = {kind, namespace, name, conditions}
RECONCILE_WAYPOINT = "mesh.waypoint.reconcile"  # args: [namespace, name] of a Gateway (docs/waypoint.md)
GATEWAY_RECONCILE = "mesh.gateway.reconcile"  # args: [namespace, name] of an ingress Gateway (docs/ingress.md)
