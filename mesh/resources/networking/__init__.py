"""networking.istio.io/v1 kinds: VirtualService, DestinationRule, ServiceEntry, WorkloadEntry.

Each module holds one kind's schema, its cross-field rules (those of Istio's validation webhook)
and its `ResourceKind`; `common.py` and `checks.py` hold what the kinds share.
"""

from ..kind import ResourceKind
from .destination_rule import DESTINATION_RULE
from .service_entry import SERVICE_ENTRY, WORKLOAD_ENTRY
from .virtual_service import VIRTUAL_SERVICE

NETWORKING_KINDS: tuple[ResourceKind, ...] = (
    VIRTUAL_SERVICE,
    DESTINATION_RULE,
    SERVICE_ENTRY,
    WORKLOAD_ENTRY,
)

__all__ = ["DESTINATION_RULE", "NETWORKING_KINDS", "SERVICE_ENTRY", "VIRTUAL_SERVICE", "WORKLOAD_ENTRY"]
