"""The node data plane: ztunnel, the CNI plugin and node agent, the pod runtime, waypoints."""
