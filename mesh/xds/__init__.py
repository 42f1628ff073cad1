"""xDS clients shared by the node proxies (and the tests that play them)."""
