"""The HttpConnectionManager network filter of a waypoint's or an ingress gateway's filter chain
(docs/waypoint.md and docs/ingress.md): routes by RDS over ADS, then the chain's own HTTP filters
(jwt_authn, RBAC) followed by fault and router, the order Envoy runs them in."""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from .resources import FAULT_FILTER, ROUTER_FILTER, pack

HCM_FILTER = "envoy.filters.network.http_connection_manager"


def manager_filter(
    stat_prefix: str,
    route_name: str,
    filters: list[hcm.HttpFilter],
    codec: int = hcm.HttpConnectionManager.AUTO,
) -> lc.Filter:
    """The network filter carrying an HttpConnectionManager that takes `route_name` from RDS and
    runs `filters`, then fault and router."""
    manager = hcm.HttpConnectionManager(
        codec_type=codec,
        stat_prefix=stat_prefix,
        rds=hcm.Rds(
            config_source=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
            ),
            route_config_name=route_name,
        ),
        http_filters=[
            *filters,
            hcm.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault())),
            hcm.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router())),
        ],
    )
    return lc.Filter(name=HCM_FILTER, typed_config=pack(manager))
