"""ztunnel: the node proxy of the ambient mesh (DESIGN §7, §8; modelled on istio/ztunnel)."""
