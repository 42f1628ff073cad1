"""The waypoint's L7 decisions as pure code over Envoy v3 messages: JWT authentication, RBAC,
route selection, faults, retries, load balancing, circuit breaking and outlier detection. No I/O
here; the proxy (dataplane/waypoint/proxy/) drives them."""
