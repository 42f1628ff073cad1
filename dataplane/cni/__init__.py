"""The node side of ambient capture: the istio-cni plugin (thin), the node agent, and in-pod redirection."""
