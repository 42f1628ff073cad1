"""mesh-node-agent: pod cache, enrollment, in-pod capture, the plugin socket and the ZDS server."""
