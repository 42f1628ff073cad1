"""The xDS type URLs mesh-xds serves."""

ADDRESS = "type.googleapis.com/istio.workload.Address"
AUTHORIZATION = "type.googleapis.com/istio.security.Authorization"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"  # SDS, ingress gateways only

ZTUNNEL_TYPES = (ADDRESS, AUTHORIZATION)
ENVOY_TYPES = (LISTENER, ROUTE, CLUSTER, ENDPOINT, SECRET)
SHORT = {
    ADDRESS: "Address",
    AUTHORIZATION: "Authorization",
    LISTENER: "LDS",
    ROUTE: "RDS",
    CLUSTER: "CDS",
    ENDPOINT: "EDS",
    SECRET: "SDS",
}
