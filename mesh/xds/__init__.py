"""xDS clients shared by the node proxies (and the tests that play them): the delta ADS client,
the reconnect loop around it (ads_stream.py), and readers of the Envoy resources both mesh-xds and
the waypoint look into (envoy_routes.py)."""
