"""ztunnel in the pod: the ZDS client, and each pod's listeners inside its network namespace."""
