"""ztunnel's proxies: outbound (15001), inbound (15008 HBONE, 15006 plaintext), relaying, telemetry records."""
